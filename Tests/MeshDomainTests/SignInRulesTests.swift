import Foundation
import MeshDomain
import MeshProto
import Testing

/// The rules of signing in, sessions, API tokens, invitations and user administration, case by case.
@Suite("Sign-in rules", .timeLimit(.minutes(1)))
struct SignInRulesTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let issuer = "https://idp.example.com"

    func token(iss: String? = nil, aud: [String] = ["mesh"], azp: String? = nil, exp: TimeInterval = 300, iat: TimeInterval? = 0,
               nonce: String? = "n-1", sub: String = "alice") -> IDTokenFacts {
        IDTokenFacts(issuer: iss ?? issuer, audience: aud, authorizedParty: azp, subject: sub, expires: now.addingTimeInterval(exp),
                     issuedAt: iat.map { now.addingTimeInterval($0) }, nonce: nonce)
    }

    func check(_ t: IDTokenFacts) throws(SignInError) {
        try IDTokenRules.check(t, issuer: issuer, clientID: "mesh", nonce: "n-1", now: now)
    }

    @Test func anIDTokenForThisSignInPasses() throws {
        try check(token())
        try check(token(aud: ["mesh", "other"], azp: "mesh"))
        // Within the clock skew tolerated either way.
        try check(token(exp: -30))
        try check(token(iat: 30))
    }

    @Test("each claim that is wrong refuses the token", arguments: [
        ("issuer", SignInError.wrongIssuer), ("audience", .wrongAudience), ("azp", .wrongAudience), ("two audiences", .wrongAudience),
        ("expired", .expired), ("future", .issuedInFuture), ("nonce", .wrongNonce), ("no nonce", .wrongNonce), ("subject", .missingSubject),
    ])
    func wrongClaims(what: String, expected: SignInError) {
        let t: IDTokenFacts = switch what {
        case "issuer": token(iss: issuer + "/other")
        case "audience": token(aud: ["someone-else"])
        case "azp": token(azp: "someone-else")
        case "two audiences": token(aud: ["mesh", "other"])
        case "expired": token(exp: -61)
        case "future": token(iat: 61)
        case "nonce": token(nonce: "n-2")
        case "no nonce": token(nonce: nil)
        default: token(sub: "")
        }
        #expect(throws: expected) { try check(t) }
    }

    @Test func onlyAnnouncedAsymmetricAlgorithmsAreAccepted() throws {
        try IDTokenRules.checkAlgorithm("RS256", announced: ["RS256"])
        try IDTokenRules.checkAlgorithm("ES256", announced: [])
        #expect(throws: SignInError.unsigned) { try IDTokenRules.checkAlgorithm("none", announced: []) }
        #expect(throws: SignInError.unsigned) { try IDTokenRules.checkAlgorithm(nil, announced: []) }
        #expect(throws: SignInError.algorithmNotAllowed("HS256")) { try IDTokenRules.checkAlgorithm("HS256", announced: ["HS256"]) }
        #expect(throws: SignInError.algorithmNotAllowed("RS256")) { try IDTokenRules.checkAlgorithm("RS256", announced: ["ES256"]) }
    }

    @Test func claimMatchesAndTheProviderMapping() throws {
        let groups = try ClaimMatch(parsing: "groups=mesh-admins", field: "f")
        let flag = try ClaimMatch(parsing: "mesh_admin", field: "f")
        #expect(groups.matches(["groups": .strings(["staff", "mesh-admins"])]))
        #expect(!groups.matches(["groups": .strings(["staff"])]))
        #expect(groups.matches(["groups": .string("mesh-admins")]))
        #expect(flag.matches(["mesh_admin": .bool(true)]) && !flag.matches(["mesh_admin": .bool(false)]))
        #expect(throws: MeshError.self) { try ClaimMatch(parsing: "=x", field: "f") }
        #expect(throws: MeshError.self) { try ClaimMatch(parsing: "a=", field: "f") }

        let tenant = UUID().uuidString
        let byClaim = ProviderClaimMapping(tenantClaim: "mesh_tenant", admin: groups)
        #expect(byClaim.tenant(in: ["mesh_tenant": .string(tenant)]) == tenant.lowercased())
        #expect(byClaim.tenant(in: ["mesh_tenant": .string("not-a-uuid")]) == nil)
        #expect(byClaim.role(in: ["groups": .strings(["mesh-admins"])]) == .admin)
        #expect(byClaim.role(in: [:]) == .owner)
        #expect(ProviderClaimMapping().role(in: ["groups": .strings(["mesh-admins"])]) == .unspecified)
        let fixed = ProviderClaimMapping(tenantClaim: "mesh_tenant", tenant: tenant)
        #expect(fixed.tenant(in: ["mesh_tenant": .string(UUID().uuidString)]) == tenant.lowercased())

        // The SAML rule: amr as the provider says it, or another claim the broker sets.
        #expect(ProviderClaimMapping().amr(in: ["amr": .strings(["SAML", "mfa"])]) == ["saml", "mfa"])
        #expect(ProviderClaimMapping().amr(in: ["amr": .strings(["pwd"])]) == ["pwd"])
        let broker = ProviderClaimMapping(saml: try ClaimMatch(parsing: "identity_provider=corp-saml", field: "f"))
        #expect(broker.amr(in: ["identity_provider": .string("corp-saml"), "amr": .strings(["pwd"])]) == ["pwd", "saml"])
        #expect(broker.amr(in: ["identity_provider": .string("github")]) == [])
    }

    @Test func keysAreReadAgainAtMostOncePerInterval() {
        let p = JWKSRefreshPolicy(interval: .seconds(30))
        #expect(p.mayRefresh(lastForced: nil, now: now))
        #expect(!p.mayRefresh(lastForced: now.addingTimeInterval(-29), now: now))
        #expect(p.mayRefresh(lastForced: now.addingTimeInterval(-30), now: now))
    }

    @Test func sessionsAreRenewedWhileActiveAndEndIdleOrAtTheirMaximum() {
        let p = SessionPolicy(idle: .seconds(600), maximum: .seconds(3600))
        let max = now.addingTimeInterval(3000)
        #expect(p.state(idleExpires: now.addingTimeInterval(500), absoluteExpires: max, now: now) == .active)
        #expect(p.state(idleExpires: now.addingTimeInterval(200), absoluteExpires: max, now: now) == .renew(idleExpires: now.addingTimeInterval(600)))
        #expect(p.state(idleExpires: now, absoluteExpires: max, now: now) == .expired)
        #expect(p.state(idleExpires: now.addingTimeInterval(100), absoluteExpires: now, now: now) == .expired)
        // Renewal never goes past the maximum, and stops once there is nothing to add.
        #expect(p.state(idleExpires: now.addingTimeInterval(200), absoluteExpires: now.addingTimeInterval(400), now: now)
                == .renew(idleExpires: now.addingTimeInterval(400)))
        #expect(p.state(idleExpires: now.addingTimeInterval(200), absoluteExpires: now.addingTimeInterval(200), now: now) == .active)
        #expect(p.firstIdleExpiry(now: now, absoluteExpires: now.addingTimeInterval(60)) == now.addingTimeInterval(60))
    }

    @Test func apiTokensCarryAChecksum() throws {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        var rng = SystemRandomNumberGenerator()
        var seen: Set<String> = []
        for _ in 0..<200 {
            let t = APITokenFormat.make(using: &rng)
            #expect(t.count == APITokenFormat.length && t.hasPrefix("qmp_") && APITokenFormat.isWellFormed(t))
            seen.insert(t)
            // Any one character changed is caught.
            var chars = Array(t)
            let i = Int.random(in: 4..<chars.count, using: &rng)
            chars[i] = chars[i] == "a" ? "b" : "a"
            #expect(!APITokenFormat.isWellFormed(String(chars)))
        }
        #expect(seen.count == 200)
        #expect(!APITokenFormat.isWellFormed("qmp_short"))
        #expect(!APITokenFormat.isWellFormed("xyz_" + String(APITokenFormat.make(using: &rng).dropFirst(4))))
        #expect(APITokenFormat.displayPrefix("qmp_AbCdEfGh") == "qmp_AbCd")
        #expect(throws: MeshError.self) { try APITokenRules.validate(name: " ", ttlSeconds: 0) }
        #expect(try APITokenRules.validate(name: String(repeating: "t", count: 64), ttlSeconds: 0).0.count == 64)
        #expect(throws: MeshError.self) { try APITokenRules.validate(name: String(repeating: "t", count: 64) + " ", ttlSeconds: 0) }
        #expect(throws: MeshError.self) { try APITokenRules.validate(name: "ci", ttlSeconds: 60) }
        #expect(throws: Never.self) { try APITokenRules.checkCount(live: APITokenRules.perUser - 1) }
        #expect(throws: MeshError.self) { try APITokenRules.checkCount(live: APITokenRules.perUser) }
    }

    @Test func credentialsStandUntilEndedRevokedOrExpired() {
        #expect(throws: Never.self) { try CredentialRules.checkSession(.init(exists: true, expires: now.addingTimeInterval(1)), now: now) }
        #expect(throws: MeshError.unauthenticated("your session has ended: sign in again")) {
            try CredentialRules.checkSession(.init(exists: true, revoked: true, expires: now.addingTimeInterval(1)), now: now)
        }
        #expect(throws: MeshError.unauthenticated("your session has ended: sign in again")) { try CredentialRules.checkSession(.init(exists: false), now: now) }
        #expect(throws: MeshError.self) { try CredentialRules.checkSession(.init(exists: true, expires: now), now: now) }
        #expect(throws: MeshError.unauthenticated("this API token was revoked")) {
            try CredentialRules.checkAPIToken(.init(exists: true, revoked: true), now: now)
        }
        #expect(throws: MeshError.unauthenticated("this API token has expired")) {
            try CredentialRules.checkAPIToken(.init(exists: true, expires: now.addingTimeInterval(-1)), now: now)
        }
        #expect(throws: MeshError.unauthenticated("this user no longer exists")) { try CredentialRules.checkUser(exists: false, status: .active) }
        #expect(throws: MeshError.self) { try CredentialRules.checkUser(exists: true, status: .invited) }
    }

    @Test func invitations() throws {
        let byEmail = try InvitationRules.validate(email: " Zoe@Example.COM ", subject: "", issuer: "", role: .admin, name: "", ttlSeconds: 0)
        #expect(byEmail.email == "zoe@example.com" && byEmail.subject == nil && byEmail.name == "zoe@example.com" && byEmail.ttl == InvitationRules.defaultTTL)
        let bySubject = try InvitationRules.validate(email: "", subject: "248289761001", issuer: issuer, role: .owner, name: "Zoë", ttlSeconds: 3600)
        #expect(bySubject.subject == "248289761001" && bySubject.issuer == issuer && bySubject.name == "Zoë")
        let longest = "https://" + String(repeating: "a", count: 504)
        #expect(try InvitationRules.validate(email: "", subject: "s", issuer: longest, role: .owner, name: "", ttlSeconds: 0).issuer == longest)
        for (email, subject, issuer, role) in [("", "", "", Mesh_V1_Role.owner), ("a@b.c", "s", "", .owner), ("nope", "", "", .owner),
                                               ("a@b.c", "", "https://x", .owner), ("", "s", "ftp://x", .owner), ("a@b.c", "", "", .unspecified),
                                               ("", "s", "https://" + String(repeating: "a", count: 505), .owner), ("", "s", "https://", .owner),
                                               ("", "s", "https:///path", .owner), ("", "s", "https://id p.example", .owner), ("", "s", "https://é.example", .owner)] {
            #expect(throws: MeshError.self) { try InvitationRules.validate(email: email, subject: subject, issuer: issuer, role: role, name: "", ttlSeconds: 0) }
        }
        // Lengths count the value as sent, spaces included (the API's schema bounds the raw value):
        // at the bound it passes, one space past it is refused even though trimming would fit.
        let subject255 = "?" + String(repeating: "*", count: 254)
        #expect(try InvitationRules.validate(email: "", subject: subject255, issuer: "", role: .owner, name: "", ttlSeconds: 0).subject == subject255)
        #expect(throws: MeshError.invalidArgument(field: "subject", message: "subject is at most 255 bytes")) {
            try InvitationRules.validate(email: "", subject: " " + subject255, issuer: "", role: .owner, name: "", ttlSeconds: 0)
        }
        let email254 = String(repeating: "a", count: 242) + "@example.com"
        #expect(try InvitationRules.validate(email: email254, subject: "", issuer: "", role: .owner, name: "", ttlSeconds: 0).email == email254)
        #expect(throws: MeshError.invalidArgument(field: "email", message: "email is at most 254 bytes")) {
            try InvitationRules.validate(email: email254 + " ", subject: "", issuer: "", role: .owner, name: "", ttlSeconds: 0)
        }
        #expect(throws: MeshError.invalidArgument(field: "issuer", message: "issuer is at most 512 bytes")) {
            try InvitationRules.validate(email: "", subject: "s", issuer: longest + " ", role: .owner, name: "", ttlSeconds: 0)
        }
    }

    func facts(email: String = "zoe@example.com", verified: Bool = true, tenant: UUID? = nil, role: Mesh_V1_Role = .unspecified) -> SignInBinding.Facts {
        SignInBinding.Facts(issuer: issuer, subject: "zoe-sub", email: email, emailVerified: verified, name: "Zoë", tenant: tenant, providerRole: role)
    }

    func invitation(email: String? = nil, subject: String? = nil, issuer: String? = nil, role: Mesh_V1_Role = .owner, age: TimeInterval = 100,
                    expiresIn: TimeInterval = 3600) -> SignInBinding.Invitation {
        SignInBinding.Invitation(user: UUID(), tenant: UUID(), email: email, subject: subject, issuer: issuer, role: role,
                                 created: now.addingTimeInterval(-age), expires: now.addingTimeInterval(expiresIn))
    }

    @Test func aSignInLandsOnTheIdentitysUserFirst() throws {
        let bound = SignInBinding.Bound(user: UUID(), tenant: UUID(), role: .owner)
        #expect(try SignInBinding.decide(facts(), bound: bound, invitations: [invitation(email: "zoe@example.com")], tenantExists: true, now: now)
                == .existing(user: bound.user, tenant: bound.tenant, newRole: nil))
        // A provider that decides roles changes the stored one.
        #expect(try SignInBinding.decide(facts(role: .admin), bound: bound, invitations: [], tenantExists: false, now: now)
                == .existing(user: bound.user, tenant: bound.tenant, newRole: .admin))
        #expect(try SignInBinding.decide(facts(role: .owner), bound: bound, invitations: [], tenantExists: false, now: now)
                == .existing(user: bound.user, tenant: bound.tenant, newRole: nil))
    }

    @Test func invitationsBindBySubjectThenByVerifiedEmailOldestFirst() throws {
        let bySubject = invitation(subject: "zoe-sub", issuer: issuer, role: .admin)
        let byEmail = invitation(email: "zoe@example.com", age: 500)
        #expect(try SignInBinding.decide(facts(), bound: nil, invitations: [byEmail, bySubject], tenantExists: false, now: now)
                == .bind(user: bySubject.user, tenant: bySubject.tenant, role: .admin))
        // Another issuer's subject is another person.
        let elsewhere = invitation(subject: "zoe-sub", issuer: "https://other.example.com")
        #expect(throws: SignInError.notInvited) {
            try SignInBinding.decide(facts(email: ""), bound: nil, invitations: [elsewhere], tenantExists: false, now: now)
        }
        let anyIssuer = invitation(subject: "zoe-sub")
        #expect(try SignInBinding.decide(facts(), bound: nil, invitations: [anyIssuer], tenantExists: false, now: now)
                == .bind(user: anyIssuer.user, tenant: anyIssuer.tenant, role: .owner))
        // Email: only when the provider verified it; the oldest invitation wins; the provider's role wins.
        let newer = invitation(email: "zoe@example.com", age: 10)
        #expect(try SignInBinding.decide(facts(role: .admin), bound: nil, invitations: [newer, byEmail], tenantExists: false, now: now)
                == .bind(user: byEmail.user, tenant: byEmail.tenant, role: .admin))
        #expect(throws: SignInError.notInvited) {
            try SignInBinding.decide(facts(verified: false), bound: nil, invitations: [byEmail], tenantExists: false, now: now)
        }
        #expect(throws: SignInError.invitationExpired) {
            try SignInBinding.decide(facts(), bound: nil, invitations: [invitation(email: "zoe@example.com", expiresIn: -1)], tenantExists: false, now: now)
        }
    }

    @Test func theProvidersTenantAdmitsNewUsers() throws {
        let t = UUID()
        #expect(try SignInBinding.decide(facts(tenant: t), bound: nil, invitations: [], tenantExists: true, now: now) == .create(tenant: t, role: .owner))
        #expect(try SignInBinding.decide(facts(tenant: t, role: .admin), bound: nil, invitations: [], tenantExists: true, now: now)
                == .create(tenant: t, role: .admin))
        #expect(throws: SignInError.unknownTenant) { try SignInBinding.decide(facts(tenant: t), bound: nil, invitations: [], tenantExists: false, now: now) }
        #expect(throws: SignInError.notInvited) { try SignInBinding.decide(facts(), bound: nil, invitations: [], tenantExists: false, now: now) }
        #expect(facts(email: "").displayName == "Zoë")
        #expect(SignInBinding.Facts(issuer: issuer, subject: "s-1", email: "", emailVerified: false, name: " ", tenant: nil, providerRole: .unspecified)
                .displayName == "s-1")
    }

    @Test func adminsManageUsersButNeverLeaveATenantWithoutAnAdmin() {
        let me = UUID()
        let admin = UserAdminRules.Member(id: UUID(), role: .admin, status: .active)
        let owner = UserAdminRules.Member(id: UUID(), role: .owner, status: .active)
        let invited = UserAdminRules.Member(id: UUID(), role: .owner, status: .invited)
        #expect(throws: Never.self) { try UserAdminRules.checkRoleChange(callerIsAdmin: true, target: owner, to: .admin, activeAdmins: 1) }
        #expect(throws: Never.self) { try UserAdminRules.checkRoleChange(callerIsAdmin: true, target: admin, to: .owner, activeAdmins: 2) }
        #expect(throws: MeshError.failedPrecondition("a tenant keeps at least one admin: make another user admin first")) {
            try UserAdminRules.checkRoleChange(callerIsAdmin: true, target: admin, to: .owner, activeAdmins: 1)
        }
        #expect(throws: MeshError.self) { try UserAdminRules.checkRoleChange(callerIsAdmin: false, target: owner, to: .admin, activeAdmins: 1) }
        #expect(throws: MeshError.self) { try UserAdminRules.checkRoleChange(callerIsAdmin: true, target: owner, to: .unspecified, activeAdmins: 1) }

        #expect(throws: Never.self) {
            try UserAdminRules.checkRemoval(callerIsAdmin: true, caller: me, target: owner, devices: 0, disposition: .unspecified, reassignTo: nil)
        }
        #expect(throws: MeshError.failedPrecondition("you cannot remove yourself: ask another admin")) {
            try UserAdminRules.checkRemoval(callerIsAdmin: true, caller: admin.id, target: admin, devices: 0, disposition: .delete, reassignTo: nil)
        }
        #expect(throws: MeshError.self) {
            try UserAdminRules.checkRemoval(callerIsAdmin: true, caller: me, target: owner, devices: 2, disposition: .unspecified, reassignTo: nil)
        }
        #expect(throws: Never.self) {
            try UserAdminRules.checkRemoval(callerIsAdmin: true, caller: me, target: owner, devices: 2, disposition: .reassign, reassignTo: admin)
        }
        for to in [nil, owner, invited] {
            #expect(throws: MeshError.self) {
                try UserAdminRules.checkRemoval(callerIsAdmin: true, caller: me, target: owner, devices: 2, disposition: .reassign, reassignTo: to)
            }
        }
        #expect(throws: MeshError.self) {
            try UserAdminRules.checkRemoval(callerIsAdmin: false, caller: me, target: owner, devices: 0, disposition: .delete, reassignTo: nil)
        }
    }
}

import Foundation
import MeshDomain
import MeshProto
import ProvisionCore
import Testing

extension Harness {
    /// A verified sign-in of `subject` at the test issuer.
    func signIn(_ subject: String, email: String = "", verified: Bool = true, tenant: String = "", role: Mesh_V1_Role = .unspecified,
                amr: [String] = [], ttl: UInt32 = 3600) async throws(MeshError) -> Mesh_V1_CreateSessionResponse {
        var r = Mesh_V1_CreateSessionRequest()
        r.provider = "corp"
        r.issuer = "https://idp.example.com"
        r.subject = subject
        r.email = email
        r.emailVerified = verified
        r.name = subject.capitalized
        r.tenantID = tenant
        r.providerRole = role
        r.amr = amr
        r.ttlSeconds = ttl
        return try await accounts.createSession(r, requestID: "r-\(subject)")
    }

    /// The caller of a session.
    func caller(_ s: Mesh_V1_CreateSessionResponse) -> Mesh_V1_Caller {
        var c = Mesh_V1_Caller()
        c.tenantID = s.user.tenantID
        c.userID = s.user.id
        c.role = s.user.role
        c.sessionID = s.sessionID
        c.requestID = "r"
        return c
    }

    func invite(_ admin: Mesh_V1_Caller, email: String = "", subject: String = "", role: Mesh_V1_Role = .owner) async throws(MeshError) -> Mesh_V1_User {
        var r = Mesh_V1_InviteUserRequest()
        r.caller = admin
        r.email = email
        r.subject = subject
        r.role = role
        return try await accounts.invite(r).user
    }

    /// A token for `caller`: (its secret, its id).
    func token(_ caller: Mesh_V1_Caller, _ name: String = "ci") async throws(MeshError) -> (String, String) {
        var rng = SystemRandomNumberGenerator()
        let secret = APITokenFormat.make(using: &rng)
        var r = Mesh_V1_CreateApiTokenRequest()
        r.caller = caller
        r.name = name
        r.tokenHash = Data(Array(secret.utf8).sha256Stand())
        r.prefix = APITokenFormat.displayPrefix(secret)
        return (secret, try await accounts.createAPIToken(r).token.id)
    }

    func authenticate(_ secret: String) async throws(MeshError) -> Mesh_V1_Caller {
        var r = Mesh_V1_AuthenticateTokenRequest()
        r.tokenHash = Data(Array(secret.utf8).sha256Stand())
        return try await accounts.authenticateAPIToken(r).caller
    }

    func remove(_ admin: Mesh_V1_Caller, _ user: String, _ d: Mesh_V1_DeviceDisposition = .unspecified, to: String = "") async throws(MeshError) -> Mesh_V1_DeleteUserResponse {
        var r = Mesh_V1_DeleteUserRequest()
        r.caller = admin
        r.userID = user
        r.devices = d
        r.reassignTo = to
        return try await accounts.deleteUser(r)
    }
}

extension Array where Element == UInt8 {
    /// The in-memory store compares hashes as bytes; any 32-byte digest stands in for SHA-256 here.
    func sha256Stand() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        for (i, b) in enumerated() { out[i % 32] = out[i % 32] &* 31 &+ b &+ UInt8(truncatingIfNeeded: i) }
        return out
    }
}

func refusal(_ body: () async throws -> Void) async -> MeshError? {
    do {
        try await body()
        return nil
    } catch let e as MeshError {
        return e
    } catch {
        return .internal("\(error)")
    }
}

@Suite("Accounts: sign-in, sessions, tokens, users, in memory", .timeLimit(.minutes(1)))
struct AccountRulesTests {
    @Test func anInvitationByEmailBindsAtTheFirstVerifiedSignInAndTheSessionStandsUntilLogout() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.team)
        let invited = try await h.invite(admin, email: "Zoe@Example.com", role: .admin)
        #expect(invited.status == .invited && invited.email == "zoe@example.com")
        // An unverified address binds nothing.
        #expect(await refusal { _ = try await h.signIn("zoe", email: "zoe@example.com", verified: false) }
                == SignInError.notInvited.meshError)
        let s = try await h.signIn("zoe", email: "zoe@example.com", amr: ["pwd"])
        #expect(s.firstSignIn && s.user.id == invited.id && s.user.status == .active && s.user.role == .admin && s.user.tenantID == t.id)
        let who = try await h.users.identify(h.caller(s))
        #expect(who.isAdmin && who.amr == ["pwd"])
        // Signing in again lands on the same user.
        let again = try await h.signIn("zoe", email: "zoe@example.com")
        #expect(!again.firstSignIn && again.user.id == invited.id && again.sessionID != s.sessionID)

        var end = Mesh_V1_EndSessionRequest()
        end.caller = h.caller(s)
        _ = try await h.accounts.endSession(end)
        #expect(await refusal { _ = try await h.users.identify(h.caller(s)) } == .unauthenticated("your session has ended: sign in again"))
        #expect(await refusal { _ = try await h.devices.list({ var r = Mesh_V1_ListDevicesRequest(); r.caller = h.caller(s); return r }()) }
                == .unauthenticated("your session has ended: sign in again"))
        // The other session is untouched.
        _ = try await h.users.identify(h.caller(again))
        let actions = try await h.audit.list({ var r = Mesh_V1_ListAuditRequest(); r.caller = admin; return r }()).entries.map(\.action)
        #expect(Set(actions).isSuperset(of: ["user.invite", "user.join", "session.create", "session.end"]))
    }

    @Test func sessionsExpireOnTheStorageClock() async throws {
        let h = Harness()
        let (t, _) = try await h.tenant(.pro)
        let s = try await h.signIn("max", tenant: t.id, ttl: 120)
        _ = try await h.users.identify(h.caller(s))
        h.clock.advance(121)
        #expect(await refusal { _ = try await h.users.identify(h.caller(s)) } == .unauthenticated("your session has expired: sign in again"))
    }

    @Test func theProvidersTenantAndRoleAndWhoIsRefused() async throws {
        let h = Harness()
        let (t, _) = try await h.tenant(.pro)
        let first = try await h.signIn("jo", tenant: t.id, role: .admin)
        #expect(first.firstSignIn && first.user.role == .admin && first.user.identitySubject == "jo")
        // The provider decides the role at every sign-in.
        let demoted = try await h.signIn("jo", tenant: t.id, role: .owner)
        #expect(!demoted.firstSignIn && demoted.user.role == .owner)
        #expect(await refusal { _ = try await h.signIn("stranger") } == SignInError.notInvited.meshError)
        #expect(await refusal { _ = try await h.signIn("lost", tenant: UUID().uuidString) } == SignInError.unknownTenant.meshError)
        let bySubject = try await h.invite(try await h.user(t, .admin), subject: "sam")
        let sam = try await h.signIn("sam")
        #expect(sam.user.id == bySubject.id)
        h.clock.advance(8 * 86400)
        let (_, admin2) = try await h.tenant(.pro)
        _ = try await h.invite(admin2, email: "late@example.com")
        h.clock.advance(8 * 86400)
        #expect(await refusal { _ = try await h.signIn("late", email: "late@example.com") } == SignInError.invitationExpired.meshError)
    }

    @Test func aSignInAttemptFinishesOnceBeforeItExpires() async throws {
        let h = Harness()
        func start(_ id: [UInt8], ttl: UInt32 = 600) async throws {
            var r = Mesh_V1_StartSignInRequest()
            r.attemptID = Data(id)
            r.provider = "corp"
            r.ttlSeconds = ttl
            _ = try await h.accounts.startSignIn(r)
        }
        func finish(_ id: [UInt8], provider: String = "corp") async -> MeshError? {
            await refusal {
                var r = Mesh_V1_FinishSignInRequest()
                r.attemptID = Data(id)
                r.provider = provider
                _ = try await h.accounts.finishSignIn(r)
            }
        }
        let a = [UInt8](repeating: 1, count: 32), b = [UInt8](repeating: 2, count: 32), c = [UInt8](repeating: 3, count: 32)
        try await start(a)
        #expect(await finish(a, provider: "other") == SignInError.replayed.meshError)
        #expect(await finish(a) == nil)
        #expect(await finish(a) == SignInError.replayed.meshError)
        try await start(b, ttl: 60)
        h.clock.advance(61)
        #expect(await finish(b) == SignInError.replayed.meshError)
        #expect(await finish(c) == SignInError.replayed.meshError)
        #expect(await refusal { try await start([1, 2, 3]) } != nil)
    }

    @Test func apiTokensAuthenticateUntilRevokedAndAreCapped() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.team)
        let owner = try await h.user(t)
        let (secret, id) = try await h.token(owner)
        var c = try await h.authenticate(secret)
        #expect(c.userID == owner.userID && c.apiTokenID == id && c.role == .owner)
        c.requestID = "r"
        let who = try await h.users.identify(c)
        #expect(who.amr.isEmpty)
        let listed = try await h.accounts.listAPITokens({ var r = Mesh_V1_ListApiTokensRequest(); r.caller = owner; return r }()).tokens
        #expect(listed.map(\.id) == [id] && listed[0].lastUsedAtMs > 0 && listed[0].prefix == APITokenFormat.displayPrefix(secret))

        // Another owner cannot revoke it (it is not there for them); its owner can.
        let other = try await h.user(t)
        func revoke(_ by: Mesh_V1_Caller, _ id: String) async -> MeshError? {
            await refusal { _ = try await h.accounts.revokeAPIToken({ var r = Mesh_V1_RevokeApiTokenRequest(); r.caller = by; r.tokenID = id; return r }()) }
        }
        #expect(await revoke(other, id) == .notFound("no such API token"))
        #expect(await revoke(owner, id) == nil)
        #expect(await refusal { _ = try await h.authenticate(secret) } == .unauthenticated("this API token was revoked"))
        #expect(await refusal { _ = try await h.users.identify(c) } == .unauthenticated("this API token was revoked"))
        #expect(await refusal { _ = try await h.authenticate("qmp_" + String(repeating: "x", count: 36)) } == .unauthenticated("unknown API token"))
        // Admins may revoke any token of the tenant.
        let (_, second) = try await h.token(owner, "second")
        #expect(await revoke(admin, second) == nil)
        // At most 50 live tokens per user.
        for i in 0..<APITokenRules.perUser { _ = try await h.token(other, "t\(i)") }
        #expect(await refusal { _ = try await h.token(other, "one too many") } == .failedPrecondition("a user holds at most 50 API tokens: revoke one first"))
    }

    @Test func removingAUserEndsTheirSessionsAndTokensAndDeletesOrReassignsTheirDevices() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.team)
        let a = try await h.signIn("ann", tenant: t.id)
        let b = try await h.signIn("bob", tenant: t.id)
        let ann = h.caller(a), bob = h.caller(b)
        let kept = try await h.create(ann, "ann phone").device
        let gone = try await h.create(bob, "bob phone").device
        let (annToken, _) = try await h.token(ann)

        // Devices need a decision; nobody removes themselves.
        #expect(await refusal { _ = try await h.remove(admin, a.user.id) }?.code == .invalidArgument)
        #expect(await refusal { _ = try await h.remove(admin, admin.userID, .delete) } == .failedPrecondition("you cannot remove yourself: ask another admin"))
        #expect(await refusal { _ = try await h.remove(bob, a.user.id, .delete) } == .permissionDenied("only admins manage users"))
        let invited = try await h.invite(admin, email: "x@example.com")
        #expect(await refusal { _ = try await h.remove(admin, a.user.id, .reassign, to: invited.id) }?.code == .invalidArgument)

        let before = await h.store.outbox[UUID(text: t.id)!]?.count ?? 0
        let r = try await h.remove(admin, a.user.id, .reassign, to: b.user.id)
        #expect(r.devicesReassigned == 1 && r.devicesDeleted == 0)
        let moved = await h.store.outbox[UUID(text: t.id)!]!.dropFirst(before).compactMap(\.upserted)
        #expect(moved.map(\.id) == [kept.id] && moved[0].ownerUserID == b.user.id)
        #expect(await refusal { _ = try await h.users.identify(ann) } == .unauthenticated("this user no longer exists"))
        #expect(await refusal { _ = try await h.authenticate(annToken) } == .unauthenticated("unknown API token"))
        let bobs = try await h.devices.list({ var q = Mesh_V1_ListDevicesRequest(); q.caller = bob; return q }())
        #expect(Set(bobs.map(\.id)) == [kept.id, gone.id])

        let r2 = try await h.remove(admin, b.user.id, .delete)
        #expect(r2.devicesDeleted == 2)
        let removed = await h.store.outbox[UUID(text: t.id)!]!.suffix(2).compactMap(\.removed).map(\.id)
        #expect(Set(removed) == [kept.id, gone.id])
        let released = await h.allocator.released.map { $0.0.lowercased }
        #expect(Set(released).isSuperset(of: [kept.id, gone.id]))
        // Cancelling an invitation is removing the invited user.
        _ = try await h.remove(admin, invited.id)
        let users = try await h.users.list(tenant: t.id)
        #expect(users.map(\.id) == [admin.userID])
    }

    @Test func rolesChangeButATenantKeepsAnAdmin() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.pro)
        let owner = try await h.user(t)
        func set(_ by: Mesh_V1_Caller, _ id: String, _ role: Mesh_V1_Role) async throws(MeshError) -> Mesh_V1_User {
            var r = Mesh_V1_SetUserRoleRequest()
            r.caller = by
            r.userID = id
            r.role = role
            return try await h.accounts.setRole(r).user
        }
        #expect(await refusal { _ = try await set(admin, admin.userID, .owner) }?.code == .failedPrecondition)
        #expect(await refusal { _ = try await set(owner, owner.userID, .admin) } == .permissionDenied("only admins manage users"))
        #expect(try await set(admin, owner.userID, .admin).role == .admin)
        #expect(try await set(admin, admin.userID, .owner).role == .owner)
        // The stored role decides at once: the former admin's calls are an owner's.
        #expect(await refusal { _ = try await h.audit.list({ var r = Mesh_V1_ListAuditRequest(); r.caller = admin; return r }()) }
                == .permissionDenied("the audit log is for admins"))
        #expect(await refusal { _ = try await set(admin, UUID().uuidString, .admin) } == .permissionDenied("only admins manage users"))
    }

    @Test func theSAMLGateReadsTheSessionsAuthentication() async throws {
        let h = Harness()
        let (t, _) = try await h.tenant(.enterprise, saml: true)
        let saml = try await h.signIn("sue", tenant: t.id, amr: ["saml"])
        let pwd = try await h.signIn("pat", tenant: t.id, amr: ["pwd"])
        _ = try await h.create(h.caller(saml), "sue laptop")
        #expect(await h.code(h.caller(pwd), "pat laptop") == .permissionDenied)
        // A session's amr is what the provider said at sign-in, whatever the caller claims now.
        var forged = h.caller(pwd)
        forged.amr = ["saml"]
        #expect(await h.code(forged, "pat laptop") == .permissionDenied)
        // API tokens are not SAML sessions.
        let (secret, _) = try await h.token(h.caller(saml))
        var c = try await h.authenticate(secret)
        c.requestID = "r"
        #expect(await h.code(c, "script laptop") == .permissionDenied)
    }
}

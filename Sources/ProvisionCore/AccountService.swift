import Foundation
import Logging
import MeshDomain
import MeshProto

/// People's accounts: sign-in attempts (single use), sessions, personal API tokens, invitations,
/// roles and removal. The rules are MeshDomain's (``SignInBinding``, ``CredentialRules``,
/// ``APITokenRules``, ``InvitationRules``, ``UserAdminRules``); this service checks the input, asks
/// storage to apply them atomically, and keeps secrets out of everything: tokens arrive hashed.
public struct AccountService: Sendable {
    let accounts: any AccountRepository
    let users: UserService
    let leases: any LeaseTaskRepository
    let allocator: any AddressAllocator
    let notifier: any ChangeNotifier
    let logger: Logger

    public init(accounts: any AccountRepository, users: UserService, leases: any LeaseTaskRepository, allocator: any AddressAllocator,
                notifier: any ChangeNotifier, logger: Logger) {
        self.accounts = accounts
        self.users = users
        self.leases = leases
        self.allocator = allocator
        self.notifier = notifier
        self.logger = logger
    }

    static func requestID(_ c: Mesh_V1_Caller) -> String { c.requestID.isEmpty ? UUID().lowercased : c.requestID }

    // MARK: Sign-in

    /// The longest a sign-in may take between the redirect to the provider and the callback.
    public static let maximumAttemptTTL = 3600

    static func checkAttempt(_ id: Data, provider: String) throws(MeshError) {
        guard id.count == 32 else { throw .invalidArgument(field: "attempt_id", message: "attempt_id must be 32 bytes") }
        guard !provider.isEmpty, provider.utf8.count <= 64 else { throw .invalidArgument(field: "provider", message: "provider must be 1 to 64 bytes") }
    }

    /// Records a sign-in attempt (10 minutes unless asked otherwise, at most an hour).
    public func startSignIn(_ req: Mesh_V1_StartSignInRequest) async throws(MeshError) -> Mesh_V1_StartSignInResponse {
        try Self.checkAttempt(req.attemptID, provider: req.provider)
        let ttl = req.ttlSeconds == 0 ? 600 : Int(req.ttlSeconds)
        guard (10...Self.maximumAttemptTTL).contains(ttl) else {
            throw .invalidArgument(field: "ttl_seconds", message: "ttl_seconds must be between 10 and \(Self.maximumAttemptTTL)")
        }
        let expires = try await accounts.startSignIn(attempt: Array(req.attemptID), provider: req.provider, ttl: .seconds(ttl))
        var resp = Mesh_V1_StartSignInResponse()
        resp.expiresAtMs = expires.unixMilliseconds
        return resp
    }

    /// Consumes an attempt; a second finish (a replayed callback) is refused.
    public func finishSignIn(_ req: Mesh_V1_FinishSignInRequest) async throws(MeshError) -> Mesh_V1_FinishSignInResponse {
        try Self.checkAttempt(req.attemptID, provider: req.provider)
        guard try await accounts.finishSignIn(attempt: Array(req.attemptID), provider: req.provider) else {
            throw SignInError.replayed.meshError
        }
        return Mesh_V1_FinishSignInResponse()
    }

    /// The longest a session may last.
    public static let maximumSessionTTL = 7 * 86400

    /// Opens a session for a verified identity: its user, a bound invitation, or a new user of the
    /// tenant the provider names (``SignInBinding``).
    public func createSession(_ req: Mesh_V1_CreateSessionRequest, requestID: String) async throws(MeshError) -> Mesh_V1_CreateSessionResponse {
        guard !req.provider.isEmpty, req.provider.utf8.count <= 64 else { throw .invalidArgument(field: "provider", message: "provider must be 1 to 64 bytes") }
        guard !req.issuer.isEmpty, req.issuer.utf8.count <= 512 else { throw .invalidArgument(field: "issuer", message: "issuer must be 1 to 512 bytes") }
        guard !req.subject.isEmpty, req.subject.utf8.count <= 255 else { throw SignInError.missingSubject.meshError }
        guard req.email.utf8.count <= 254, req.name.utf8.count <= 1024, req.acr.utf8.count <= 256, req.amr.count <= 16 else {
            throw .invalidArgument(field: "", message: "a claim is too long")
        }
        var tenant: UUID?
        if !req.tenantID.isEmpty { tenant = try ProvisionValidate.uuid(req.tenantID, field: "tenant_id") }
        guard [.unspecified, .owner, .admin].contains(req.providerRole) else {
            throw .invalidArgument(field: "provider_role", message: "provider_role must be owner, admin or unspecified")
        }
        let ttl = req.ttlSeconds == 0 ? 12 * 3600 : Int(req.ttlSeconds)
        guard (60...Self.maximumSessionTTL).contains(ttl) else {
            throw .invalidArgument(field: "ttl_seconds", message: "a session lasts between 60 s and 7 days")
        }
        let amr = req.amr.map { $0.lowercased() }.filter { !$0.isEmpty && $0.utf8.count <= 64 && !$0.contains(" ") }
        let facts = SignInBinding.Facts(issuer: req.issuer, subject: req.subject, email: InvitationRules.normalizeEmail(req.email),
                                        emailVerified: req.emailVerified, name: req.name, tenant: tenant, providerRole: req.providerRole)
        let draft = SignInDraft(facts: facts, provider: req.provider, amr: amr, acr: req.acr, sessionID: UUID(), ttl: .seconds(ttl), requestID: requestID)
        let (user, expires, decision) = try await accounts.signIn(draft) { bound, invitations, tenantExists, now throws(SignInError) in
            try SignInBinding.decide(facts, bound: bound, invitations: invitations, tenantExists: tenantExists, now: now)
        }
        var first = false
        if case .existing = decision {} else { first = true }
        logger.info("signed in", metadata: ["tenant.id": "\(user.tenantID)", "user.id": "\(user.id)", "provider": "\(req.provider)",
                                            "first_sign_in": "\(first)", "request.id": "\(requestID)"])
        var resp = Mesh_V1_CreateSessionResponse()
        resp.sessionID = draft.sessionID.lowercased
        resp.user = user
        resp.expiresAtMs = expires.unixMilliseconds
        resp.firstSignIn = first
        return resp
    }

    /// "Log out": the caller's session ends; idempotent.
    public func endSession(_ req: Mesh_V1_EndSessionRequest) async throws(MeshError) -> Mesh_V1_EndSessionResponse {
        let tenant = try ProvisionValidate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let user = try ProvisionValidate.uuid(req.caller.userID, field: "caller.user_id")
        guard let session = UUID(text: req.caller.sessionID) else { throw .invalidArgument(field: "caller.session_id", message: "no session to end") }
        try await accounts.endSession(session, user: user, tenant: tenant, requestID: Self.requestID(req.caller))
        return Mesh_V1_EndSessionResponse()
    }

    // MARK: API tokens

    /// Stores a new token of the caller (the gateway made it and sends its SHA-256 only).
    public func createAPIToken(_ req: Mesh_V1_CreateApiTokenRequest) async throws(MeshError) -> Mesh_V1_CreateApiTokenResponse {
        let who = try await users.identify(req.caller)
        let (name, ttl) = try APITokenRules.validate(name: req.name, ttlSeconds: req.ttlSeconds)
        guard req.tokenHash.count == 32 else { throw .invalidArgument(field: "token_hash", message: "token_hash must be a SHA-256") }
        guard req.prefix.hasPrefix(APITokenFormat.prefix), req.prefix.utf8.count == 8 else {
            throw .invalidArgument(field: "prefix", message: "prefix must be the token's first 8 characters")
        }
        let now = Date()
        let record = APITokenRecord(id: UUID(), user: who.user, tenant: who.tenant, name: name, prefix: req.prefix, hash: Array(req.tokenHash),
                                    created: now, expires: now.addingTimeInterval(ttl.seconds))
        let stored = try await accounts.createAPIToken(record, requestID: Self.requestID(req.caller)) { live throws(MeshError) in
            try APITokenRules.checkCount(live: live)
        }
        var resp = Mesh_V1_CreateApiTokenResponse()
        resp.token = stored.proto
        return resp
    }

    /// The caller's tokens (not revoked), newest first.
    public func listAPITokens(_ req: Mesh_V1_ListApiTokensRequest) async throws(MeshError) -> Mesh_V1_ListApiTokensResponse {
        let who = try await users.identify(req.caller)
        var resp = Mesh_V1_ListApiTokensResponse()
        resp.tokens = try await accounts.apiTokens(user: who.user).map(\.proto)
        return resp
    }

    /// Revokes one of the caller's tokens (an admin: any token of the tenant). Others are `notFound`.
    public func revokeAPIToken(_ req: Mesh_V1_RevokeApiTokenRequest) async throws(MeshError) -> Mesh_V1_RevokeApiTokenResponse {
        let who = try await users.identify(req.caller)
        guard let id = UUID(text: req.tokenID) else { throw .notFound("no such API token") }
        try await accounts.revokeAPIToken(id, tenant: who.tenant, actor: who.actor, requestID: Self.requestID(req.caller)) { t throws(MeshError) in
            guard t.user == who.user || who.isAdmin else { throw .notFound("no such API token") }
        }
        return Mesh_V1_RevokeApiTokenResponse()
    }

    /// The caller an API token stands for; every refusal is `unauthenticated` with the reason.
    public func authenticateAPIToken(_ req: Mesh_V1_AuthenticateTokenRequest) async throws(MeshError) -> Mesh_V1_AuthenticateTokenResponse {
        guard req.tokenHash.count == 32 else { throw .unauthenticated("unknown API token") }
        let (token, user, now) = try await accounts.authenticateAPIToken(hash: Array(req.tokenHash))
        guard let token else { throw .unauthenticated("unknown API token") }
        try CredentialRules.checkAPIToken(.init(exists: true, revoked: token.revoked != nil, expires: token.expires), now: now)
        try CredentialRules.checkUser(exists: user != nil, status: user?.status ?? .active)
        var resp = Mesh_V1_AuthenticateTokenResponse()
        resp.caller.tenantID = token.tenant.lowercased
        resp.caller.userID = token.user.lowercased
        resp.caller.role = user?.role ?? .owner
        resp.caller.apiTokenID = token.id.lowercased
        return resp
    }

    // MARK: Users

    /// An admin invites a person by email or by subject; the user exists as "invited" until the
    /// first matching sign-in.
    public func invite(_ req: Mesh_V1_InviteUserRequest) async throws(MeshError) -> Mesh_V1_InviteUserResponse {
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("only admins invite users") }
        let inv = try InvitationRules.validate(email: req.email, subject: req.subject, issuer: req.issuer, role: req.role, name: req.name,
                                               ttlSeconds: req.ttlSeconds)
        var u = Mesh_V1_User()
        u.id = UUID().lowercased
        u.tenantID = who.tenant.lowercased
        u.name = inv.name
        u.role = inv.role
        u.email = inv.email ?? ""
        u.identitySubject = inv.subject ?? ""
        u.identityIssuer = inv.issuer ?? ""
        u.status = .invited
        let whom = inv.email.map { "email \($0)" } ?? "subject \(inv.subject ?? "")" + (inv.issuer.map { " at \($0)" } ?? "")
        let stored = try await accounts.inviteUser(u, ttl: inv.ttl, audit: AuditEvent(
            tenant: who.tenant, actor: who.actor, action: "user.invite", target: u.id, requestID: Self.requestID(req.caller),
            detail: "\(whom) as \(inv.role.key)"))
        var resp = Mesh_V1_InviteUserResponse()
        resp.user = stored
        return resp
    }

    /// An admin changes a user's role; the last admin stays one.
    public func setRole(_ req: Mesh_V1_SetUserRoleRequest) async throws(MeshError) -> Mesh_V1_SetUserRoleResponse {
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("only admins manage users") }
        guard let target = UUID(text: req.userID) else { throw .notFound("no such user") }
        let role = req.role
        let u = try await accounts.setRole(target, tenant: who.tenant, role: role, actor: who.actor, requestID: Self.requestID(req.caller)) {
            t, admins throws(MeshError) in
            guard let m = t.member else { throw .notFound("no such user") }
            try UserAdminRules.checkRoleChange(callerIsAdmin: who.isAdmin, target: m, to: role, activeAdmins: admins)
        }
        var resp = Mesh_V1_SetUserRoleResponse()
        resp.user = u
        return resp
    }

    /// An admin removes a user (or cancels an invitation): the user's sessions and tokens end at
    /// once, the devices are deleted or reassigned (every node is told), addresses go back.
    public func deleteUser(_ req: Mesh_V1_DeleteUserRequest) async throws(MeshError) -> Mesh_V1_DeleteUserResponse {
        let requestID = Self.requestID(req.caller)
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("only admins manage users") }
        guard let target = UUID(text: req.userID) else { throw .notFound("no such user") }
        var reassign: UUID?
        if req.devices == .reassign {
            guard let to = UUID(text: req.reassignTo) else {
                throw .invalidArgument(field: "reassign_to", message: "reassign_to must be another user of the tenant")
            }
            reassign = to
        }
        let disposition = req.devices
        let caller = who.user
        let r = try await accounts.deleteUser(target, tenant: who.tenant, disposition: disposition, reassignTo: reassign, actor: who.actor,
                                              requestID: requestID) { t, devices, to throws(MeshError) in
            guard let m = t.member else { throw .notFound("no such user") }
            try UserAdminRules.checkRemoval(callerIsAdmin: true, caller: caller, target: m, devices: devices, disposition: disposition,
                                            reassignTo: to?.member)
        }
        if r.revision != nil { notifier.changed(tenant: who.tenant) }
        for d in r.deleted {
            do {
                try await allocator.release(tenant: who.tenant, owner: d.id, neverPublished: false, requestID: requestID)
                try await leases.finishLeaseTask(owner: d.id)
            } catch {
                logger.warning("address release failed; the lease keeper will retry", metadata: ["owner.id": "\(d.id.lowercased)", "error": "\(error)"])
            }
        }
        logger.info("user removed", metadata: ["tenant.id": "\(who.tenant.lowercased)", "user.id": "\(target.lowercased)",
                                               "devices.deleted": "\(r.deleted.count)", "devices.reassigned": "\(r.reassigned)",
                                               "request.id": "\(requestID)"])
        var resp = Mesh_V1_DeleteUserResponse()
        resp.devicesDeleted = UInt32(r.deleted.count)
        resp.devicesReassigned = UInt32(r.reassigned)
        resp.revision = r.revision ?? 0
        return resp
    }

    /// The per-request check, answered with the user as stored and the session's facts.
    public func identify(_ req: Mesh_V1_IdentifyRequest) async throws(MeshError) -> Mesh_V1_IdentifyResponse {
        let (who, l) = try await users.lookup(req.caller)
        var resp = Mesh_V1_IdentifyResponse()
        if let u = try await users.users.user(tenant: who.tenant, id: who.user) { resp.user = u }
        resp.plan = who.plan
        if case .session = try CallerCredential(req.caller) {
            resp.sessionExpiresAtMs = l.sessionExpires?.unixMilliseconds ?? 0
            resp.sessionAmr = l.sessionAMR
            resp.sessionProvider = l.sessionProvider
        }
        return resp
    }
}

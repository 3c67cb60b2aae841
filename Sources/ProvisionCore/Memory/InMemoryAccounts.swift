import Foundation
import MeshDomain
import MeshProto

/// Sign-in, sessions, tokens and user administration in memory: each method is one actor turn,
/// atomic exactly where the PostgreSQL transaction is.
extension InMemoryProvisionStore: AccountRepository {
    public func startSignIn(attempt: [UInt8], provider: String, ttl: Duration) async throws(MeshError) -> Date {
        guard attempts[attempt] == nil else { throw .invalidArgument(field: "attempt_id", message: "this sign-in attempt already exists") }
        let expires = now().addingTimeInterval(ttl.seconds)
        attempts[attempt] = (provider, expires, false)
        return expires
    }

    public func finishSignIn(attempt: [UInt8], provider: String) async throws(MeshError) -> Bool {
        guard let a = attempts[attempt], a.provider == provider, !a.used, a.expires > now() else { return false }
        attempts[attempt]?.used = true
        return true
    }

    public func signIn(_ draft: SignInDraft,
                       decide: @escaping @Sendable (SignInBinding.Bound?, [SignInBinding.Invitation], Bool, Date) throws(SignInError) -> SignInBinding.Decision)
        async throws(MeshError) -> (user: Mesh_V1_User, expires: Date, decision: SignInBinding.Decision) {
        let f = draft.facts
        let bound = userRows.values.first { $0.status == .active && $0.identityIssuer == f.issuer && $0.identitySubject == f.subject }
            .flatMap { u in UUID(text: u.id).flatMap { id in UUID(text: u.tenantID).map { SignInBinding.Bound(user: id, tenant: $0, role: u.role) } } }
        let email = f.emailVerified ? f.email : ""
        let invitations: [SignInBinding.Invitation] = userRows.values
            .filter { $0.status == .invited && ($0.identitySubject == f.subject || (!email.isEmpty && $0.email == email)) }
            .compactMap { u in
                guard let id = UUID(text: u.id), let t = UUID(text: u.tenantID) else { return nil }
                return SignInBinding.Invitation(user: id, tenant: t, email: u.email.nilIfEmpty, subject: u.identitySubject.nilIfEmpty,
                                                issuer: u.identityIssuer.nilIfEmpty, role: u.role, created: Date(unixMilliseconds: u.createdAtMs),
                                                expires: Date(unixMilliseconds: u.inviteExpiresAtMs))
            }
        let exists = f.tenant.map { tenantRows[$0] != nil } ?? false
        let decision: SignInBinding.Decision
        do {
            decision = try decide(bound, invitations, exists, now())
        } catch {
            throw error.meshError
        }
        let user: UUID, tenant: UUID
        switch decision {
        case .existing(let u, let t, let role):
            (user, tenant) = (u, t)
            if let role {
                let old = userRows[u]?.role ?? .owner
                userRows[u]?.role = role
                write(AuditEvent(tenant: t, actor: "system", action: "user.role", target: u.lowercased, requestID: draft.requestID,
                                 detail: "\(old.key) → \(role.key) by \(draft.provider)"))
            }
            if !email.isEmpty { userRows[u]?.email = email }
        case .bind(let u, let t, let role):
            (user, tenant) = (u, t)
            guard userRows[u]?.status == .invited else { throw .conflict("the invitation was taken by another sign-in; try again") }
            userRows[u]?.status = .active
            userRows[u]?.identityIssuer = f.issuer
            userRows[u]?.identitySubject = f.subject
            userRows[u]?.role = role
            userRows[u]?.inviteExpiresAtMs = 0
            if !email.isEmpty { userRows[u]?.email = email }
            write(AuditEvent(tenant: t, actor: "user:\(u.lowercased)", action: "user.join", target: u.lowercased, requestID: draft.requestID,
                             detail: "accepted the invitation with \(draft.provider) as \(f.subject) (\(role.key))"))
        case .create(let t, let role):
            let u = UUID()
            (user, tenant) = (u, t)
            var row = Mesh_V1_User()
            row.id = u.lowercased
            row.tenantID = t.lowercased
            row.name = f.displayName
            row.role = role
            row.email = email
            row.identityIssuer = f.issuer
            row.identitySubject = f.subject
            row.status = .active
            row.createdAtMs = now().unixMilliseconds
            userRows[u] = row
            write(AuditEvent(tenant: t, actor: "system", action: "user.create", target: u.lowercased, requestID: draft.requestID,
                             detail: "\(f.displayName) (\(role.key)) on first sign-in with \(draft.provider) as \(f.subject)"))
        }
        userRows[user]?.lastSignInAtMs = now().unixMilliseconds
        let expires = now().addingTimeInterval(draft.ttl.seconds)
        sessionRows[draft.sessionID] = (user, tenant, draft.provider, draft.amr, expires, false)
        write(AuditEvent(tenant: tenant, actor: "user:\(user.lowercased)", action: "session.create", target: draft.sessionID.lowercased,
                         requestID: draft.requestID, detail: "signed in with \(draft.provider) as \(f.subject)"))
        return (userRows[user]!, expires, decision)
    }

    public func endSession(_ id: UUID, user: UUID, tenant: UUID, requestID: String) async throws(MeshError) {
        guard let s = sessionRows[id], s.user == user, s.tenant == tenant, !s.ended else { return }
        sessionRows[id]?.ended = true
        write(AuditEvent(tenant: tenant, actor: "user:\(user.lowercased)", action: "session.end", target: id.lowercased, requestID: requestID,
                         detail: "logged out"))
    }

    public func createAPIToken(_ t: APITokenRecord, requestID: String, check: @escaping @Sendable (Int) throws(MeshError) -> Void)
        async throws(MeshError) -> APITokenRecord {
        guard userRows[t.user]?.tenantID == t.tenant.lowercased else { throw .unauthenticated("this user no longer exists") }
        try check(tokenRows.values.filter { $0.user == t.user && $0.revoked == nil && $0.expires > now() }.count)
        var stored = t
        let ttl = t.expires.timeIntervalSince(t.created)
        stored.created = now()
        stored.expires = now().addingTimeInterval(ttl)
        tokenRows[t.id] = stored
        write(AuditEvent(tenant: t.tenant, actor: "user:\(t.user.lowercased)", action: "token.create", target: t.id.lowercased, requestID: requestID,
                         detail: "\"\(t.name)\" (\(t.prefix)…)"))
        return stored
    }

    public func apiTokens(user: UUID) async throws(MeshError) -> [APITokenRecord] {
        tokenRows.values.filter { $0.user == user && $0.revoked == nil }.sorted { ($0.created, $0.id.lowercased) > ($1.created, $1.id.lowercased) }
    }

    public func revokeAPIToken(_ id: UUID, tenant: UUID, actor: String, requestID: String,
                               authorize: @escaping @Sendable (APITokenRecord) throws(MeshError) -> Void) async throws(MeshError) {
        guard let t = tokenRows[id], t.tenant == tenant else { throw .notFound("no such API token") }
        try authorize(t)
        guard t.revoked == nil else { return }
        tokenRows[id]?.revoked = now()
        write(AuditEvent(tenant: tenant, actor: actor, action: "token.revoke", target: id.lowercased, requestID: requestID,
                         detail: "\"\(t.name)\" (\(t.prefix)…) of user:\(t.user.lowercased)"))
    }

    public func authenticateAPIToken(hash: [UInt8]) async throws(MeshError) -> (token: APITokenRecord?, user: Mesh_V1_User?, now: Date) {
        guard let (id, t) = tokenRows.first(where: { $0.value.hash == hash }) else { return (nil, nil, now()) }
        if t.revoked == nil && t.expires > now() { tokenRows[id]?.lastUsed = now() }
        let u = userRows[t.user].flatMap { $0.tenantID == t.tenant.lowercased ? $0 : nil }
        return (tokenRows[id], u, now())
    }

    public func inviteUser(_ u: Mesh_V1_User, ttl: Duration, audit: AuditEvent) async throws(MeshError) -> Mesh_V1_User {
        guard let id = UUID(text: u.id), let tenant = UUID(text: u.tenantID) else { throw .invalidArgument(field: "id", message: "id must be a UUID") }
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        let clash = userRows.values.contains {
            $0.tenantID == u.tenantID && ((!u.email.isEmpty && $0.email == u.email) || (!u.identitySubject.isEmpty && $0.identitySubject == u.identitySubject))
        }
        guard !clash else { throw .alreadyExists("the tenant already has a user or an invitation for this \(u.email.isEmpty ? "subject" : "email")") }
        var stored = u
        stored.createdAtMs = now().unixMilliseconds
        stored.inviteExpiresAtMs = now().addingTimeInterval(ttl.seconds).unixMilliseconds
        stored.status = .invited
        userRows[id] = stored
        write(audit)
        return stored
    }

    public func setRole(_ user: UUID, tenant: UUID, role: Mesh_V1_Role, actor: String, requestID: String,
                        check: @escaping @Sendable (Mesh_V1_User, Int) throws(MeshError) -> Void) async throws(MeshError) -> Mesh_V1_User {
        guard let target = userRows[user], target.tenantID == tenant.lowercased else { throw .notFound("no such user") }
        let admins = userRows.values.filter { $0.tenantID == tenant.lowercased && $0.role == .admin && $0.status == .active }.count
        try check(target, admins)
        guard target.role != role else { return target }
        userRows[user]?.role = role
        write(AuditEvent(tenant: tenant, actor: actor, action: "user.role", target: user.lowercased, requestID: requestID,
                         detail: "\(target.name): \(target.role.key) → \(role.key)"))
        return userRows[user]!
    }

    public func deleteUser(_ user: UUID, tenant: UUID, disposition: Mesh_V1_DeviceDisposition, reassignTo: UUID?, actor: String, requestID: String,
                           check: @escaping @Sendable (Mesh_V1_User, Int, Mesh_V1_User?) throws(MeshError) -> Void) async throws(MeshError) -> UserRemoval {
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        guard let target = userRows[user], target.tenantID == tenant.lowercased else { throw .notFound("no such user") }
        let owned = deviceRows.values.filter { $0.tenant == tenant && $0.owner == user }.sorted { ($0.createdAt, $0.id.lowercased) < ($1.createdAt, $1.id.lowercased) }
        let to = reassignTo.flatMap { userRows[$0] }.flatMap { $0.tenantID == tenant.lowercased ? $0 : nil }
        try check(target, owned.count, to)
        var deleted: [DeviceRecord] = []
        var reassigned = 0
        var revision: UInt64?
        for d in owned {
            if disposition == .reassign, let to, let newOwner = UUID(text: to.id) {
                deviceRows[d.id]?.owner = newOwner
                revision = append(tenant, .upsert(deviceRows[d.id]!.member()))
                write(AuditEvent(tenant: tenant, actor: actor, action: "device.reassign", target: d.id.lowercased, requestID: requestID,
                                 detail: "\"\(d.label)\" from \(target.name) to \(to.name)"))
                reassigned += 1
            } else {
                deviceRows.removeValue(forKey: d.id)
                names[tenant]?.removeValue(forKey: d.slug)
                tasks[d.id] = (tenant, false, false, now())
                var r = Mesh_V1_MemberRemoval()
                r.id = d.id.lowercased
                r.kind = .device
                r.publicKey = d.publicKey
                revision = append(tenant, .remove(r))
                write(AuditEvent(tenant: tenant, actor: actor, action: "device.delete", target: d.id.lowercased, requestID: requestID,
                                 detail: "\"\(d.label)\" with its owner \(target.name)"))
                deleted.append(d)
            }
        }
        userRows.removeValue(forKey: user)
        events.removeValue(forKey: user)
        for (id, s) in sessionRows where s.user == user { sessionRows.removeValue(forKey: id) }
        for (id, t) in tokenRows where t.user == user { tokenRows.removeValue(forKey: id) }
        write(AuditEvent(tenant: tenant, actor: actor, action: "user.delete", target: user.lowercased, requestID: requestID,
                         detail: target.status == .invited ? "invitation of \(target.name) cancelled" : "\(target.name) removed"))
        return UserRemoval(removed: target, deleted: deleted, reassigned: reassigned, revision: revision)
    }
}

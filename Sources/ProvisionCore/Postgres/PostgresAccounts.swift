import Foundation
import MeshDomain
import MeshNet
import MeshProto
import MeshStore

extension PostgresProvisionStore {
    static let userColumns: SQL = """
        id, tenant_id, name, role, created_at, email, identity_issuer, identity_subject, status, invite_expires_at, last_sign_in_at
        """

    static func user(_ r: Row) throws -> Mesh_V1_User {
        var u = Mesh_V1_User()
        u.id = (try r.decode("id", as: UUID.self)).lowercased
        u.tenantID = (try r.decode("tenant_id", as: UUID.self)).lowercased
        u.name = try r.decode("name")
        u.role = Mesh_V1_Role(key: try r.decode("role")) ?? .unspecified
        u.createdAtMs = (try r.decode("created_at", as: Date.self)).unixMilliseconds
        u.email = try r.decodeIfPresent("email") ?? ""
        u.identityIssuer = try r.decodeIfPresent("identity_issuer") ?? ""
        u.identitySubject = try r.decodeIfPresent("identity_subject") ?? ""
        u.status = Mesh_V1_UserStatus(key: try r.decode("status"))
        u.inviteExpiresAtMs = try r.decodeIfPresent("invite_expires_at", as: Date.self)?.unixMilliseconds ?? 0
        u.lastSignInAtMs = try r.decodeIfPresent("last_sign_in_at", as: Date.self)?.unixMilliseconds ?? 0
        return u
    }

    static let tokenColumns: SQL = "id, user_id, tenant_id, name, prefix, token_hash, created_at, expires_at, last_used_at, revoked_at"

    static func token(_ r: Row) throws -> APITokenRecord {
        APITokenRecord(id: try r.decode("id"), user: try r.decode("user_id"), tenant: try r.decode("tenant_id"), name: try r.decode("name"),
                       prefix: try r.decode("prefix"), hash: (try r.decode("token_hash", as: ByteA.self)).bytes, created: try r.decode("created_at"),
                       expires: try r.decode("expires_at"), lastUsed: try r.decodeIfPresent("last_used_at"), revoked: try r.decodeIfPresent("revoked_at"))
    }

    /// The caller's credential as columns `cred_found`, `cred_revoked`, `cred_expires` (and the session's
    /// `s_amr`, `s_provider`), read next to the user.
    static func credential(_ r: Row, _ c: CallerCredential) throws -> (CredentialRules.Stored, [String], String, Date?) {
        switch c {
        case .bearer:
            return (.init(exists: true), [], "", nil)
        case .session:
            let found = try r.decodeIfPresent("s_id", as: UUID.self) != nil
            let expires: Date? = try r.decodeIfPresent("s_expires")
            let amr = (try r.decodeIfPresent("s_amr", as: String.self) ?? "").split(separator: " ").map(String.init)
            return (.init(exists: found, revoked: try r.decodeIfPresent("s_ended", as: Date.self) != nil, expires: expires), amr,
                    try r.decodeIfPresent("s_provider") ?? "", expires)
        case .apiToken:
            let found = try r.decodeIfPresent("k_id", as: UUID.self) != nil
            return (.init(exists: found, revoked: try r.decodeIfPresent("k_revoked", as: Date.self) != nil, expires: try r.decodeIfPresent("k_expires")),
                    [], "", nil)
        }
    }

    static func ids(_ c: CallerCredential) -> (session: UUID?, token: UUID?) {
        switch c {
        case .bearer: (nil, nil)
        case .session(let id): (id, nil)
        case .apiToken(let id): (nil, id)
        }
    }

    /// A caller's lookup from a row with `u_role`, `u_status`, `t_plan`, `t_require_saml`, `now` and the credential columns.
    static func lookup(_ r: Row, tenant: UUID, user: UUID, credential c: CallerCredential) throws -> CallerLookup {
        let now: Date = try r.decode("now")
        guard let roleText: String = try r.decodeIfPresent("u_role"), let role = Mesh_V1_Role(key: roleText),
              let plan = Mesh_V1_Plan(key: try r.decodeIfPresent("t_plan") ?? "") else {
            return CallerLookup(identity: nil, status: .active, credential: .init(exists: false), now: now)
        }
        let who = CallerIdentity(tenant: tenant, user: user, role: role, plan: plan, requireSAML: try r.decodeIfPresent("t_require_saml") ?? false)
        let (stored, amr, provider, expires) = try credential(r, c)
        return CallerLookup(identity: who, status: Mesh_V1_UserStatus(key: try r.decode("u_status")), credential: stored, sessionAMR: amr,
                            sessionProvider: provider, sessionExpires: expires, now: now)
    }
}

// MARK: The per-request check

extension PostgresProvisionStore {
    public func identify(tenant: UUID, user: UUID, credential: CallerCredential) async throws(MeshError) -> CallerLookup {
        let (session, token) = Self.ids(credential)
        let rows = try await query("""
            SELECT u.role AS u_role, u.status AS u_status, t.plan AS t_plan, t.require_saml AS t_require_saml, now() AS now,
                   s.id AS s_id, s.ended_at AS s_ended, s.expires_at AS s_expires, s.amr AS s_amr, s.provider AS s_provider,
                   k.id AS k_id, k.revoked_at AS k_revoked, k.expires_at AS k_expires
            FROM (SELECT 1) AS one
            LEFT JOIN users u ON u.id = $1 AND u.tenant_id = $2
            LEFT JOIN tenants t ON t.id = u.tenant_id
            LEFT JOIN sessions s ON s.id = $3 AND s.user_id = u.id
            LEFT JOIN api_tokens k ON k.id = $4 AND k.user_id = u.id
            """, user, tenant, session, token)
        do {
            guard let r = rows.first else { throw MeshError.internal("identify returned no row") }
            return try Self.lookup(r, tenant: tenant, user: user, credential: credential)
        } catch {
            throw map(error)
        }
    }
}

// MARK: Sign-in, sessions, tokens, user administration

extension PostgresProvisionStore: AccountRepository {
    public func startSignIn(attempt: [UInt8], provider: String, ttl: Duration) async throws(MeshError) -> Date {
        try await write { tx in
            let r = try tx.batch([
                Statement("""
                    INSERT INTO signin_attempts (id, provider, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
                    ON CONFLICT (id) DO NOTHING RETURNING expires_at
                    """, ByteA(attempt), provider, ttl.seconds),
                // Old attempts go as new ones come (bounded work per sign-in).
                Statement("""
                    DELETE FROM signin_attempts WHERE id IN (SELECT id FROM signin_attempts WHERE expires_at < now() - interval '1 hour' LIMIT 100)
                    """),
            ])
            guard let row = r[0].rows.first else { throw MeshError.invalidArgument(field: "attempt_id", message: "this sign-in attempt already exists") }
            return try row.decode("expires_at", as: Date.self)
        }
    }

    public func finishSignIn(attempt: [UInt8], provider: String) async throws(MeshError) -> Bool {
        let rows = try await query("""
            UPDATE signin_attempts SET used_at = now() WHERE id = $1 AND provider = $2 AND used_at IS NULL AND expires_at > now() RETURNING id
            """, ByteA(attempt), provider)
        return rows.count == 1
    }

    public func signIn(_ draft: SignInDraft,
                       decide: @escaping @Sendable (SignInBinding.Bound?, [SignInBinding.Invitation], Bool, Date) throws(SignInError) -> SignInBinding.Decision)
        async throws(MeshError) -> (user: Mesh_V1_User, expires: Date, decision: SignInBinding.Decision) {
        try await write { tx in
            let f = draft.facts
            // One sign-in of an identity at a time, across replicas: two first sign-ins of the same person
            // must not both create a user.
            let reads = try tx.batch([
                Statement("SELECT pg_advisory_xact_lock(hashtextextended($1, 7)) AS locked, now() AS now", f.issuer + "\n" + f.subject),
                Statement("""
                    SELECT id, tenant_id, role FROM users WHERE status = 'active' AND identity_issuer = $1 AND identity_subject = $2
                    """, f.issuer, f.subject),
                Statement("""
                    SELECT id, tenant_id, email, identity_subject, identity_issuer, role, created_at, invite_expires_at FROM users
                    WHERE status = 'invited' AND (identity_subject = $1 OR ($2 <> '' AND email = $2)) ORDER BY created_at, id FOR UPDATE
                    """, f.subject, f.emailVerified ? f.email : ""),
                Statement("SELECT count(*) AS n FROM tenants WHERE id = $1", f.tenant),
            ])
            let now: Date = try reads[0].rows[0].decode("now")
            let bound = try reads[1].rows.first.map {
                SignInBinding.Bound(user: try $0.decode("id"), tenant: try $0.decode("tenant_id"), role: Mesh_V1_Role(key: try $0.decode("role")) ?? .owner)
            }
            let invitations = try reads[2].rows.map { r in
                SignInBinding.Invitation(user: try r.decode("id"), tenant: try r.decode("tenant_id"), email: try r.decodeIfPresent("email"),
                                         subject: try r.decodeIfPresent("identity_subject"), issuer: (try r.decodeIfPresent("identity_issuer", as: String.self))?.nilIfEmpty,
                                         role: Mesh_V1_Role(key: try r.decode("role")) ?? .owner, created: try r.decode("created_at"),
                                         expires: try r.decodeIfPresent("invite_expires_at") ?? now)
            }
            let tenantExists = try reads[3].rows[0].decode("n", as: Int.self) > 0
            let decision: SignInBinding.Decision
            do {
                decision = try decide(bound, invitations, tenantExists, now)
            } catch let e as SignInError {
                throw e.meshError
            }
            let user: UUID, tenant: UUID
            var writes: [Statement] = []
            let how = "\(draft.provider) as \(f.subject)"
            switch decision {
            case .existing(let u, let t, let newRole):
                (user, tenant) = (u, t)
                writes.append(Statement("""
                    UPDATE users SET last_sign_in_at = now(), email = CASE WHEN $2 <> '' THEN $2 ELSE email END, role = coalesce($3, role) WHERE id = $1
                    """, u, f.emailVerified ? f.email : "", newRole?.key))
                if let newRole, let old = bound?.role {
                    writes.append(Self.auditStatement(AuditEvent(tenant: t, actor: "system", action: "user.role", target: u.lowercased,
                                                                 requestID: draft.requestID, detail: "\(old.key) → \(newRole.key) by \(draft.provider)")))
                }
            case .bind(let u, let t, let role):
                (user, tenant) = (u, t)
                writes.append(Statement("""
                    UPDATE users SET status = 'active', identity_issuer = $2, identity_subject = $3, role = $4, invite_expires_at = NULL,
                      last_sign_in_at = now(), email = CASE WHEN $5 <> '' THEN $5 ELSE email END
                    WHERE id = $1 AND status = 'invited'
                    """, u, f.issuer, f.subject, role.key, f.emailVerified ? f.email : ""))
                writes.append(Self.auditStatement(AuditEvent(tenant: t, actor: "user:\(u.lowercased)", action: "user.join", target: u.lowercased,
                                                             requestID: draft.requestID, detail: "accepted the invitation with \(how) (\(role.key))")))
            case .create(let t, let role):
                let u = UUID()
                (user, tenant) = (u, t)
                writes.append(Statement("""
                    INSERT INTO users (id, tenant_id, name, role, email, identity_issuer, identity_subject, status, last_sign_in_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', now())
                    """, u, t, f.displayName, role.key, f.emailVerified && !f.email.isEmpty ? f.email : nil, f.issuer, f.subject))
                writes.append(Self.auditStatement(AuditEvent(tenant: t, actor: "system", action: "user.create", target: u.lowercased,
                                                             requestID: draft.requestID,
                                                             detail: "\(f.displayName) (\(role.key)) on first sign-in with \(how)")))
            }
            let sessionAt = writes.count
            writes.append(Statement("""
                INSERT INTO sessions (id, user_id, tenant_id, provider, amr, acr, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) RETURNING expires_at
                """, draft.sessionID, user, tenant, draft.provider, draft.amr.joined(separator: " "), draft.acr, draft.ttl.seconds))
            writes.append(Self.auditStatement(AuditEvent(
                tenant: tenant, actor: "user:\(user.lowercased)", action: "session.create", target: draft.sessionID.lowercased, requestID: draft.requestID,
                detail: "signed in with \(how)" + (draft.amr.isEmpty ? "" : " (amr \(draft.amr.joined(separator: ",")))"))))
            writes.append(Statement("""
                DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < now() - interval '1 day' LIMIT 100)
                """))
            let userAt = writes.count
            writes.append(Statement("SELECT \(Self.userColumns) FROM users WHERE id = $1", user))
            let w = try tx.batch(writes)
            if case .bind = decision, w[0].affectedRows != 1 { throw MeshError.conflict("the invitation was taken by another sign-in; try again") }
            guard let row = w[userAt].rows.first, let e = w[sessionAt].rows.first else { throw MeshError.internal("sign-in wrote no user") }
            return (try Self.user(row), try e.decode("expires_at", as: Date.self), decision)
        }
    }

    public func endSession(_ id: UUID, user: UUID, tenant: UUID, requestID: String) async throws(MeshError) {
        try await write { tx in
            let n = try tx.execute("UPDATE sessions SET ended_at = now() WHERE id = $1 AND user_id = $2 AND tenant_id = $3 AND ended_at IS NULL",
                                   id, user, tenant)
            if n == 1 {
                try tx.batch([Self.auditStatement(AuditEvent(tenant: tenant, actor: "user:\(user.lowercased)", action: "session.end",
                                                             target: id.lowercased, requestID: requestID, detail: "logged out"))])
            }
        }
    }

    public func createAPIToken(_ t: APITokenRecord, requestID: String, check: @escaping @Sendable (Int) throws(MeshError) -> Void)
        async throws(MeshError) -> APITokenRecord {
        try await write { tx in
            let r = try tx.batch([
                Statement("SELECT 1 AS x FROM users WHERE id = $1 AND tenant_id = $2 FOR UPDATE", t.user, t.tenant),
                Statement("SELECT count(*) AS n FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()", t.user),
            ])
            guard !r[0].rows.isEmpty else { throw MeshError.unauthenticated("this user no longer exists") }
            try check(try r[1].rows[0].decode("n", as: Int.self))
            let w = try tx.batch([
                Statement("""
                    INSERT INTO api_tokens (id, user_id, tenant_id, name, token_hash, prefix, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) RETURNING \(Self.tokenColumns)
                    """, t.id, t.user, t.tenant, t.name, ByteA(t.hash), t.prefix, t.expires.timeIntervalSince(t.created)),
                Self.auditStatement(AuditEvent(tenant: t.tenant, actor: "user:\(t.user.lowercased)", action: "token.create", target: t.id.lowercased,
                                               requestID: requestID, detail: "\"\(t.name)\" (\(t.prefix)…), expires \(Timestamp.iso(ms: t.expires.unixMilliseconds))")),
            ])
            guard let row = w[0].rows.first else { throw MeshError.internal("token not stored") }
            return try Self.token(row)
        }
    }

    public func apiTokens(user: UUID) async throws(MeshError) -> [APITokenRecord] {
        let rows = try await query("SELECT \(Self.tokenColumns) FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id", user)
        do {
            return try rows.map(Self.token)
        } catch {
            throw map(error)
        }
    }

    public func revokeAPIToken(_ id: UUID, tenant: UUID, actor: String, requestID: String,
                               authorize: @escaping @Sendable (APITokenRecord) throws(MeshError) -> Void) async throws(MeshError) {
        try await write { tx in
            guard let row = try tx.queryFirst("SELECT \(Self.tokenColumns) FROM api_tokens WHERE id = $1 AND tenant_id = $2 FOR UPDATE", id, tenant) else {
                throw MeshError.notFound("no such API token")
            }
            let t = try Self.token(row)
            try authorize(t)
            guard t.revoked == nil else { return }
            try tx.batch([
                Statement("UPDATE api_tokens SET revoked_at = now() WHERE id = $1", id),
                Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "token.revoke", target: id.lowercased, requestID: requestID,
                                               detail: "\"\(t.name)\" (\(t.prefix)…) of user:\(t.user.lowercased)")),
            ])
        }
    }

    public func authenticateAPIToken(hash: [UInt8]) async throws(MeshError) -> (token: APITokenRecord?, user: Mesh_V1_User?, now: Date) {
        let rows = try await query("""
            WITH used AS (
              UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING id)
            SELECT k.id, k.user_id, k.tenant_id, k.name, k.prefix, k.token_hash, k.created_at, k.expires_at, k.last_used_at, k.revoked_at,
                   u.id AS u_id, u.tenant_id AS u_tenant_id, u.name AS u_name, u.role AS u_role, u.status AS u_status, now() AS now
            FROM (SELECT 1) AS one
            LEFT JOIN api_tokens k ON k.token_hash = $1
            LEFT JOIN users u ON u.id = k.user_id AND u.tenant_id = k.tenant_id
            """, ByteA(hash))
        do {
            guard let r = rows.first else { throw MeshError.internal("authenticate returned no row") }
            let now: Date = try r.decode("now")
            guard try r.decodeIfPresent("id", as: UUID.self) != nil else { return (nil, nil, now) }
            var user: Mesh_V1_User?
            if let uid = try r.decodeIfPresent("u_id", as: UUID.self) {
                var u = Mesh_V1_User()
                u.id = uid.lowercased
                u.tenantID = (try r.decode("u_tenant_id", as: UUID.self)).lowercased
                u.name = try r.decode("u_name")
                u.role = Mesh_V1_Role(key: try r.decode("u_role")) ?? .owner
                u.status = Mesh_V1_UserStatus(key: try r.decode("u_status"))
                user = u
            }
            return (try Self.token(r), user, now)
        } catch {
            throw map(error)
        }
    }

    public func inviteUser(_ u: Mesh_V1_User, ttl: Duration, audit: AuditEvent) async throws(MeshError) -> Mesh_V1_User {
        guard let id = UUID(text: u.id), let tenant = UUID(text: u.tenantID) else { throw .invalidArgument(field: "id", message: "id must be a UUID") }
        return try await write { tx in
            guard try tx.queryFirst("SELECT 1 AS x FROM tenants WHERE id = $1 FOR UPDATE", tenant) != nil else { throw MeshError.notFound("unknown tenant") }
            if try tx.queryFirst("""
                SELECT 1 AS x FROM users WHERE tenant_id = $1 AND (($2 <> '' AND email = $2) OR ($3 <> '' AND identity_subject = $3)) LIMIT 1
                """, tenant, u.email, u.identitySubject) != nil {
                throw MeshError.alreadyExists("the tenant already has a user or an invitation for this \(u.email.isEmpty ? "subject" : "email")")
            }
            let w = try tx.batch([
                Statement("""
                    INSERT INTO users (id, tenant_id, name, role, email, identity_issuer, identity_subject, status, invite_expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, 'invited', now() + make_interval(secs => $8)) RETURNING \(Self.userColumns)
                    """, id, tenant, u.name, u.role.key, u.email.nilIfEmpty, u.identityIssuer.nilIfEmpty, u.identitySubject.nilIfEmpty, ttl.seconds),
                Self.auditStatement(audit),
            ])
            guard let row = w[0].rows.first else { throw MeshError.internal("invitation not stored") }
            return try Self.user(row)
        }
    }

    public func setRole(_ user: UUID, tenant: UUID, role: Mesh_V1_Role, actor: String, requestID: String,
                        check: @escaping @Sendable (Mesh_V1_User, Int) throws(MeshError) -> Void) async throws(MeshError) -> Mesh_V1_User {
        try await write { tx in
            // The tenant's active admins, locked in id order: two admins demoting each other serialise here.
            let r = try tx.batch([
                Statement("SELECT id FROM users WHERE tenant_id = $1 AND role = 'admin' AND status = 'active' ORDER BY id FOR UPDATE", tenant),
                Statement("SELECT \(Self.userColumns) FROM users WHERE id = $1 AND tenant_id = $2 FOR UPDATE", user, tenant),
            ])
            guard let row = r[1].rows.first else { throw MeshError.notFound("no such user") }
            let target = try Self.user(row)
            try check(target, r[0].rows.count)
            guard target.role != role else { return target }
            let w = try tx.batch([
                Statement("UPDATE users SET role = $2 WHERE id = $1 RETURNING \(Self.userColumns)", user, role.key),
                Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "user.role", target: user.lowercased, requestID: requestID,
                                               detail: "\(target.name): \(target.role.key) → \(role.key)")),
            ])
            return try Self.user(w[0].rows[0])
        }
    }

    public func deleteUser(_ user: UUID, tenant: UUID, disposition: Mesh_V1_DeviceDisposition, reassignTo: UUID?, actor: String, requestID: String,
                           check: @escaping @Sendable (Mesh_V1_User, Int, Mesh_V1_User?) throws(MeshError) -> Void) async throws(MeshError) -> UserRemoval {
        try await write { tx in
            // The tenant row lock orders this with every other change of the tenant's mesh (revisions).
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                Statement("SELECT \(Self.userColumns) FROM users WHERE id = $1 AND tenant_id = $2 FOR UPDATE", user, tenant),
                Statement("SELECT \(Self.deviceColumns) FROM devices WHERE tenant_id = $1 AND owner_user_id = $2 ORDER BY created_at, id", tenant, user),
                Statement("SELECT \(Self.userColumns) FROM users WHERE id = $1 AND tenant_id = $2", reassignTo, tenant),
            ])
            guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            guard let urow = r[1].rows.first else { throw MeshError.notFound("no such user") }
            let t = try Self.tenant(trow)
            let target = try Self.user(urow)
            let devices = try r[2].rows.map(Self.device)
            let to = try r[3].rows.first.map(Self.user)
            try check(target, devices.count, to)
            var writes: [Statement] = []
            var outboxAt: [Int] = []
            var deleted: [DeviceRecord] = []
            var reassigned = 0
            for d in devices {
                if disposition == .reassign, let to, let newOwner = UUID(text: to.id) {
                    var moved = d
                    moved.owner = newOwner
                    writes.append(Statement("UPDATE devices SET owner_user_id = $2 WHERE id = $1", d.id, newOwner))
                    outboxAt.append(writes.count)
                    writes += try Outbox.statements(tenant: tenant, change: .upsert(moved.member()))
                    writes.append(Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "device.reassign", target: d.id.lowercased,
                                                                 requestID: requestID, detail: "\"\(d.label)\" from \(target.name) to \(to.name)")))
                    reassigned += 1
                } else {
                    var removal = Mesh_V1_MemberRemoval()
                    removal.id = d.id.lowercased
                    removal.kind = .device
                    removal.publicKey = d.publicKey
                    writes += [
                        Statement("DELETE FROM devices WHERE id = $1", d.id),
                        Statement("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", tenant, d.id),
                        Statement("DELETE FROM peer_stats WHERE public_key = $1 AND node_id IN (SELECT id FROM nodes WHERE tenant_id = $2)", d.publicKey, tenant),
                        Self.releaseStatement(owner: d.id, tenant: tenant),
                    ]
                    outboxAt.append(writes.count)
                    writes += try Outbox.statements(tenant: tenant, change: .remove(removal))
                    writes.append(Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "device.delete", target: d.id.lowercased,
                                                                 requestID: requestID,
                                                                 detail: "\"\(d.label)\" (\(MeshName.dnsName(slug: d.slug, domain: t.domain))) with its owner \(target.name)")))
                    deleted.append(d)
                }
            }
            // The user's sessions, tokens and rate-limit window go with it (ON DELETE CASCADE).
            writes.append(Statement("DELETE FROM users WHERE id = $1", user))
            let what = target.status == .invited ? "invitation of \(target.name) cancelled"
                : "\(target.name) removed" + (devices.isEmpty ? "" : reassigned > 0 ? "; \(reassigned) device(s) to \(to?.name ?? "")" : "; \(deleted.count) device(s) deleted")
            writes.append(Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "user.delete", target: user.lowercased,
                                                         requestID: requestID, detail: what)))
            let w = try tx.batch(writes)
            var revision: UInt64?
            if let last = outboxAt.last { revision = try Outbox.revision(w[last..<(last + Outbox.statementCount)]) }
            return UserRemoval(removed: target, deleted: deleted, reassigned: reassigned, revision: revision)
        }
    }
}

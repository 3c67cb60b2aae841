import Foundation
import MeshDomain
import MeshNet
import MeshProto
import MeshStore

extension PostgresProvisionStore: MigrationRepository {
    static let linkColumns: SQL = "id, tenant_id, user_id, label, type, created_by, created_at, expires_at, used_at, device_id"

    static func link(_ r: Row) throws -> ConfigLinkRecord {
        ConfigLinkRecord(id: try r.decode("id"), tenant: try r.decode("tenant_id"), user: try r.decode("user_id"), label: try r.decode("label"),
                         type: Mesh_V1_DeviceType(key: try r.decode("type")) ?? .other, createdBy: try r.decode("created_by"),
                         createdAt: try r.decode("created_at"), expiresAt: try r.decode("expires_at"), usedAt: try r.decodeIfPresent("used_at"),
                         device: try r.decodeIfPresent("device_id"))
    }

    static func check(_ r: Row) throws -> MigrationCheck {
        MigrationCheck(user: try r.decode("user_id"), pritunlRevoked: try r.decode("pritunl_revoked"), checkedAt: try r.decode("checked_at"),
                       checkedBy: try r.decode("checked_by"))
    }

    public func migrationChecks(tenant: UUID) async throws(MeshError) -> [MigrationCheck] {
        let rows = try await query("SELECT user_id, pritunl_revoked, checked_at, checked_by FROM migration_checklist WHERE tenant_id = $1", tenant)
        do { return try rows.map(Self.check) } catch { throw map(error) }
    }

    public func pendingConfigLinks(tenant: UUID) async throws(MeshError) -> [ConfigLinkRecord] {
        let rows = try await query("""
            SELECT \(Self.linkColumns) FROM config_links WHERE tenant_id = $1 AND used_at IS NULL AND expires_at > now() ORDER BY created_at
            """, tenant)
        do { return try rows.map(Self.link) } catch { throw map(error) }
    }

    public func setMigrationCheck(tenant: UUID, user: UUID, revoked: Bool, actor: String, requestID: String) async throws(MeshError) -> MigrationCheck {
        try await write { tx in
            guard let row = try tx.queryFirst("""
                INSERT INTO migration_checklist (user_id, tenant_id, pritunl_revoked, checked_by)
                SELECT id, tenant_id, $3, $4 FROM users WHERE id = $2 AND tenant_id = $1
                ON CONFLICT (user_id) DO UPDATE SET pritunl_revoked = EXCLUDED.pritunl_revoked, checked_at = now(), checked_by = EXCLUDED.checked_by
                RETURNING user_id, pritunl_revoked, checked_at, checked_by
                """, tenant, user, revoked, actor) else { throw MeshError.notFound("no such user") }
            try tx.batch([Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "migration.check", target: user.lowercased,
                                                         requestID: requestID, detail: "Pritunl access revoked: \(revoked ? "yes" : "no")"))])
            return try Self.check(row)
        }
    }

    public func insertConfigLink(_ link: ConfigLinkRecord, hash: [UInt8], ttl: Duration, requestID: String) async throws(MeshError) -> ConfigLinkRecord {
        try await write { tx in
            guard let row = try tx.queryFirst("""
                INSERT INTO config_links (id, tenant_id, user_id, token_hash, label, type, created_by, expires_at)
                SELECT $1, tenant_id, id, $4, $5, $6, $7, now() + make_interval(secs => $8) FROM users
                WHERE id = $3 AND tenant_id = $2 AND status = 'active'
                RETURNING \(Self.linkColumns)
                """, link.id, link.tenant, link.user, ByteA(hash), link.label, link.type.key, link.createdBy, ttl.seconds)
            else { throw MeshError.notFound("no such user") }
            let stored = try Self.link(row)
            try tx.batch([Self.auditStatement(AuditEvent(
                tenant: link.tenant, actor: link.createdBy, action: "config_link.create", target: link.id.lowercased, requestID: requestID,
                detail: "for user \(link.user.lowercased): \(link.label) (\(link.type.key)), expires \(Timestamp.iso(ms: stored.expiresAt.unixMilliseconds))"))])
            return stored
        }
    }

    public func claimConfigLink(hash: [UInt8], requestID: String,
                                decide: @escaping @Sendable (Date?, Date, Date) -> ConfigLinkPolicy.Refusal?) async throws(MeshError) -> ConfigLinkClaim {
        try await write { tx in
            guard let row = try tx.queryFirst("SELECT \(Self.linkColumns), now() AS now FROM config_links WHERE token_hash = $1 FOR UPDATE",
                                              ByteA(hash)) else { return .unknown }
            var link = try Self.link(row)
            let now: Date = try row.decode("now")
            let actor = "link:\(link.id.lowercased)"
            if let refusal = decide(link.usedAt, link.expiresAt, now) {
                try tx.batch([Self.auditStatement(AuditEvent(tenant: link.tenant, actor: actor, action: "config_link.refused", target: link.id.lowercased,
                                                             requestID: requestID, detail: refusal.rawValue))])
                return .refused(link, refusal)
            }
            _ = try tx.execute("UPDATE config_links SET used_at = $2 WHERE id = $1", link.id, now)
            link.usedAt = now
            try tx.batch([Self.auditStatement(AuditEvent(tenant: link.tenant, actor: actor, action: "config_link.open", target: link.id.lowercased,
                                                         requestID: requestID, detail: "for user \(link.user.lowercased): \(link.label)"))])
            return .claimed(link)
        }
    }

    public func finishConfigLink(_ id: UUID, tenant: UUID, device: UUID?, failure: String, requestID: String) async throws(MeshError) {
        try await write { tx in
            let actor = "link:\(id.lowercased)"
            if let device {
                _ = try tx.execute("UPDATE config_links SET device_id = $2 WHERE id = $1", id, device)
                try tx.batch([Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "config_link.used", target: id.lowercased,
                                                             requestID: requestID, detail: "device \(device.lowercased)"))])
            } else {
                _ = try tx.execute("UPDATE config_links SET used_at = NULL WHERE id = $1 AND device_id IS NULL", id)
                try tx.batch([Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "config_link.open_failed", target: id.lowercased,
                                                             requestID: requestID, detail: failure))])
            }
        }
    }
}

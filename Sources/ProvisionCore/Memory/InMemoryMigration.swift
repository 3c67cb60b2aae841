import Foundation
import MeshDomain
import MeshProto

extension InMemoryProvisionStore: MigrationRepository {
    public func migrationChecks(tenant: UUID) async throws(MeshError) -> [MigrationCheck] {
        checklist.values.filter { $0.tenant == tenant }.map(\.check)
    }

    public func pendingConfigLinks(tenant: UUID) async throws(MeshError) -> [ConfigLinkRecord] {
        let t = now()
        return linkRows.values.filter { $0.tenant == tenant && $0.usedAt == nil && $0.expiresAt > t }.sorted { $0.createdAt < $1.createdAt }
    }

    public func setMigrationCheck(tenant: UUID, user: UUID, revoked: Bool, actor: String, requestID: String) async throws(MeshError) -> MigrationCheck {
        guard let u = userRows[user], u.tenantID == tenant.lowercased else { throw .notFound("no such user") }
        let c = MigrationCheck(user: user, pritunlRevoked: revoked, checkedAt: now(), checkedBy: actor)
        checklist[user] = (tenant, c)
        write(AuditEvent(tenant: tenant, actor: actor, action: "migration.check", target: user.lowercased, requestID: requestID,
                         detail: "Pritunl access revoked: \(revoked ? "yes" : "no")"))
        return c
    }

    public func insertConfigLink(_ link: ConfigLinkRecord, hash: [UInt8], ttl: Duration, requestID: String) async throws(MeshError) -> ConfigLinkRecord {
        guard let u = userRows[link.user], u.tenantID == link.tenant.lowercased, u.status == .active else { throw .notFound("no such user") }
        var l = link
        l.createdAt = now()
        l.expiresAt = l.createdAt.addingTimeInterval(ttl.seconds)
        linkRows[hash] = l
        write(AuditEvent(tenant: l.tenant, actor: l.createdBy, action: "config_link.create", target: l.id.lowercased, requestID: requestID,
                         detail: "for user \(l.user.lowercased): \(l.label) (\(l.type.key)), expires \(Timestamp.iso(ms: l.expiresAt.unixMilliseconds))"))
        return l
    }

    public func claimConfigLink(hash: [UInt8], requestID: String,
                                decide: @escaping @Sendable (Date?, Date, Date) -> ConfigLinkPolicy.Refusal?) async throws(MeshError) -> ConfigLinkClaim {
        guard var l = linkRows[hash] else { return .unknown }
        let t = now(), actor = "link:\(l.id.lowercased)"
        if let refusal = decide(l.usedAt, l.expiresAt, t) {
            write(AuditEvent(tenant: l.tenant, actor: actor, action: "config_link.refused", target: l.id.lowercased, requestID: requestID,
                             detail: refusal.rawValue))
            return .refused(l, refusal)
        }
        l.usedAt = t
        linkRows[hash] = l
        write(AuditEvent(tenant: l.tenant, actor: actor, action: "config_link.open", target: l.id.lowercased, requestID: requestID,
                         detail: "for user \(l.user.lowercased): \(l.label)"))
        return .claimed(l)
    }

    public func finishConfigLink(_ id: UUID, tenant: UUID, device: UUID?, failure: String, requestID: String) async throws(MeshError) {
        guard let entry = linkRows.first(where: { $0.value.id == id }) else { return }
        let hash = entry.key
        var l = entry.value
        if let device {
            l.device = device
            write(AuditEvent(tenant: tenant, actor: "link:\(id.lowercased)", action: "config_link.used", target: id.lowercased, requestID: requestID,
                             detail: "device \(device.lowercased)"))
        } else if l.device == nil {
            l.usedAt = nil
            write(AuditEvent(tenant: tenant, actor: "link:\(id.lowercased)", action: "config_link.open_failed", target: id.lowercased,
                             requestID: requestID, detail: failure))
        }
        linkRows[hash] = l
    }

    /// The stored links (tests check that no key or device exists before a link is opened).
    public var configLinks: [ConfigLinkRecord] { Array(linkRows.values) }
}

import Foundation
import MeshDomain
import MeshProto

extension InMemoryProvisionStore {
    public func policy(tenant: UUID) async throws(MeshError) -> (TenantRecord, [Mesh_V1_PolicyRule])? {
        guard let t = tenantRows[tenant] else { return nil }
        return (t, policyRows[tenant] ?? [])
    }

    public func editPolicy(tenant: UUID, references: PolicyValidation.References,
                           _ decide: @escaping @Sendable (PolicyEditState) throws(MeshError) -> PolicyEdit?)
        async throws(MeshError) -> (tenant: TenantRecord, rules: [Mesh_V1_PolicyRule], revision: UInt64?) {
        guard let t = tenantRows[tenant] else { throw .notFound("unknown tenant") }
        let current = policyRows[tenant] ?? []
        let users = Set(references.users.keys.filter { UUID(text: $0).flatMap { userRows[$0] }?.tenantID == tenant.lowercased })
        let devices = Set(references.devices.keys.filter { UUID(text: $0).flatMap { deviceRows[$0] }?.tenant == tenant })
        let nodes = Set(references.nodes.keys.filter { UUID(text: $0).flatMap { nodeRows[$0] }?.tenant == tenant })
        guard let edit = try decide(PolicyEditState(tenant: t, rules: current, users: users, devices: devices, nodes: nodes)) else {
            return (t, current, nil)
        }
        var revision: UInt64?
        if let new = edit.rules, new != current {
            tenantRows[tenant]!.policyVersion += 1
            policyRows[tenant] = new
            var set = Mesh_V1_PolicySet()
            set.version = tenantRows[tenant]!.policyVersion
            set.rules = new
            revision = append(tenant, .policy(set))
        } else if let dns = edit.dnsFiltered, dns != t.dnsFiltered {
            tenantRows[tenant]!.dnsFiltered = dns
            revision = append(tenant, .settings(tenantRows[tenant]!.settings))
        }
        guard revision != nil else { return (t, current, nil) }
        write(edit.audit)
        return (tenantRows[tenant]!, policyRows[tenant] ?? [], revision)
    }

    public func setTags(tenant: UUID, kind: Mesh_V1_PeerKind, id: UUID, tags: [String], actor: String, requestID: String)
        async throws(MeshError) -> UInt64? {
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        let member: Mesh_V1_Member, old: [String]
        if kind == .node {
            guard var n = nodeRows[id], n.tenant == tenant else { throw .notFound("no such node") }
            old = n.tags
            n.tags = tags
            nodeRows[id] = n
            member = n.member
        } else {
            guard var d = deviceRows[id], d.tenant == tenant else { throw .notFound("no such device") }
            old = d.tags
            d.tags = tags
            deviceRows[id] = d
            member = d.member()
        }
        guard old != tags else { return nil }
        write(AuditEvent(tenant: tenant, actor: actor, action: "\(kind.key).tags", target: id.lowercased, requestID: requestID,
                         detail: "[\(old.joined(separator: ", "))] → [\(tags.joined(separator: ", "))]"))
        return append(tenant, .upsert(member))
    }

    public func member(tenant: UUID, _ ref: MemberReference) async throws(MeshError) -> (TenantRecord, Mesh_V1_Member)? {
        guard let t = tenantRows[tenant] else { return nil }
        let devices = deviceRows.values.filter { $0.tenant == tenant }, nodes = nodeRows.values.filter { $0.tenant == tenant }
        switch ref {
        case .device(let id):
            return devices.first { $0.id == id }.map { (t, $0.member()) }
        case .node(let id):
            return nodes.first { $0.id == id }.map { (t, $0.member) }
        case .address(let a):
            if let d = devices.first(where: { $0.ipv4 == a || $0.ipv6 == a }) { return (t, d.member()) }
            return nodes.first { $0.ipv4 == a || $0.ipv6 == a }.map { (t, $0.member) }
        case .slug(let s):
            if let d = devices.first(where: { $0.slug == s }) { return (t, d.member()) }
            return nodes.first { $0.slug == s }.map { (t, $0.member) }
        }
    }
}

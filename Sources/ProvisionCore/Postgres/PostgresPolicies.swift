import Foundation
import MeshDomain
import MeshNet
import MeshProto
import MeshStore

extension PostgresProvisionStore: PolicyRepository {
    static func rules(_ rows: [Row]) throws -> [Mesh_V1_PolicyRule] {
        try rows.map { try Mesh_V1_PolicyRule(serializedBytes: try $0.decode("rule", as: ByteA.self).bytes) }
    }

    static let rulesQuery: SQL = "SELECT rule FROM policy_rules WHERE tenant_id = $1 ORDER BY position"

    public func policy(tenant: UUID) async throws(MeshError) -> (TenantRecord, [Mesh_V1_PolicyRule])? {
        try await read { tx in
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1", tenant),
                Statement(Self.rulesQuery, tenant),
            ])
            guard let trow = r[0].rows.first else { return nil }
            return (try Self.tenant(trow), try Self.rules(r[1].rows))
        }
    }

    /// The ids among `ids` that rows of `table` of the tenant hold (one statement; ids are UUIDs).
    static func known(_ table: SQL, _ ids: some Collection<String>, tenant: UUID) -> Statement {
        Statement("SELECT id FROM \(table) WHERE tenant_id = $1 AND id = ANY(string_to_array($2, ',')::uuid[])",
                  tenant, ids.joined(separator: ","))
    }

    public func editPolicy(tenant: UUID, references: PolicyValidation.References,
                           _ decide: @escaping @Sendable (PolicyEditState) throws(MeshError) -> PolicyEdit?)
        async throws(MeshError) -> (tenant: TenantRecord, rules: [Mesh_V1_PolicyRule], revision: UInt64?) {
        try await write { tx in
            // One round trip (BEGIN rides along): the tenant row lock serialises every change of the
            // tenant (the policy version, the revision), then the rules and the ids the edit names.
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                Statement(Self.rulesQuery, tenant),
                Self.known("users", references.users.keys, tenant: tenant),
                Self.known("devices", references.devices.keys, tenant: tenant),
                Self.known("nodes", references.nodes.keys, tenant: tenant),
            ])
            guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            var t = try Self.tenant(trow)
            let current = try Self.rules(r[1].rows)
            func ids(_ q: QueryResult) throws -> Set<String> { Set(try q.rows.map { try $0.decode("id", as: UUID.self).lowercased }) }
            let state = PolicyEditState(tenant: t, rules: current, users: try ids(r[2]), devices: try ids(r[3]), nodes: try ids(r[4]))
            guard let edit = try decide(state) else { return (t, current, nil) }
            var writes: [Statement] = []
            var change: Mesh_V1_PeersUpdated.OneOf_Change?
            var rules = current
            if let new = edit.rules, new != current {
                rules = new
                t.policyVersion += 1
                writes.append(Statement("UPDATE tenants SET policy_version = $2 WHERE id = $1", tenant, Int64(t.policyVersion)))
                writes += Self.ruleWrites(tenant: tenant, from: current, to: new)
                var set = Mesh_V1_PolicySet()
                set.version = t.policyVersion
                set.rules = new
                change = .policy(set)
            } else if let dns = edit.dnsFiltered, dns != t.dnsFiltered {
                t.dnsFiltered = dns
                writes.append(Statement("UPDATE tenants SET dns_filtered = $2 WHERE id = $1", tenant, dns))
                change = .settings(t.settings)
            }
            guard let change else { return (t, current, nil) }
            let first = writes.count
            writes += try Outbox.statements(tenant: tenant, change: change)
            writes.append(Self.auditStatement(edit.audit))
            let w = try tx.batch(writes)
            t.revision = try Outbox.revision(w[first..<(first + Outbox.statementCount)])
            return (t, rules, t.revision)
        }
    }

    /// The statements that turn the stored rules `old` into `new`: rules that are gone are deleted,
    /// new or changed ones (content or position) written.
    static func ruleWrites(tenant: UUID, from old: [Mesh_V1_PolicyRule], to new: [Mesh_V1_PolicyRule]) -> [Statement] {
        var writes: [Statement] = []
        let kept = Set(new.map(\.id))
        let gone = old.map(\.id).filter { !kept.contains($0) }
        if !gone.isEmpty {
            writes.append(Statement("DELETE FROM policy_rules WHERE tenant_id = $1 AND id = ANY(string_to_array($2, ',')::uuid[])",
                                    tenant, gone.joined(separator: ",")))
        }
        let before = Dictionary(old.enumerated().map { ($1.id, ($0, $1)) }, uniquingKeysWith: { a, _ in a })
        for (i, rule) in new.enumerated() {
            if let (j, r) = before[rule.id], j == i, r == rule { continue }
            let bytes = (try? rule.serializedBytes() as [UInt8]) ?? []
            writes.append(Statement("""
                INSERT INTO policy_rules (id, tenant_id, position, name, rule) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (id) DO UPDATE SET position = EXCLUDED.position, name = EXCLUDED.name, rule = EXCLUDED.rule, updated_at = now()
                WHERE policy_rules.tenant_id = EXCLUDED.tenant_id
                """, UUID(text: rule.id), tenant, i, rule.name, ByteA(bytes)))
        }
        return writes
    }

    public func setTags(tenant: UUID, kind: Mesh_V1_PeerKind, id: UUID, tags: [String], actor: String, requestID: String)
        async throws(MeshError) -> UInt64? {
        try await write { tx in
            let table: SQL = kind == .node ? "nodes" : "devices"
            let columns = kind == .node ? Self.nodeColumns : Self.deviceColumns
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                Statement("SELECT \(columns) FROM \(table) WHERE id = $1 AND tenant_id = $2", id, tenant),
            ])
            guard r[0].rows.first != nil else { throw MeshError.notFound("unknown tenant") }
            guard let row = r[1].rows.first else { throw MeshError.notFound("no such \(kind.key)") }
            let member: Mesh_V1_Member, old: [String], name: String
            if kind == .node {
                var n = try Self.node(row)
                old = n.tags
                n.tags = tags
                member = n.member
                name = n.name
            } else {
                var d = try Self.device(row)
                old = d.tags
                d.tags = tags
                member = d.member()
                name = d.label
            }
            guard old != tags else { return nil }
            var writes = [Statement("UPDATE \(table) SET tags = $2::jsonb WHERE id = $1", id, Self.json(tags: tags))]
            let first = writes.count
            writes += try Outbox.statements(tenant: tenant, change: .upsert(member))
            writes.append(Self.auditStatement(AuditEvent(
                tenant: tenant, actor: actor, action: "\(kind.key).tags", target: id.lowercased, requestID: requestID,
                detail: "\"\(name)\": [\(old.joined(separator: ", "))] → [\(tags.joined(separator: ", "))]")))
            let w = try tx.batch(writes)
            return try Outbox.revision(w[first..<(first + Outbox.statementCount)])
        }
    }

    public func member(tenant: UUID, _ ref: MemberReference) async throws(MeshError) -> (TenantRecord, Mesh_V1_Member)? {
        try await read { tx in
            let device: Statement, node: Statement
            switch ref {
            case .device(let id):
                device = Statement("SELECT \(Self.deviceColumns) FROM devices WHERE tenant_id = $1 AND id = $2", tenant, id)
                node = Statement("SELECT \(Self.nodeColumns) FROM nodes WHERE false AND tenant_id = $1", tenant)
            case .node(let id):
                device = Statement("SELECT \(Self.deviceColumns) FROM devices WHERE false AND tenant_id = $1", tenant)
                node = Statement("SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $1 AND id = $2", tenant, id)
            case .address(let a):
                device = Statement("SELECT \(Self.deviceColumns) FROM devices WHERE tenant_id = $1 AND (ipv4 = $2 OR ipv6 = $2)", tenant, a)
                node = Statement("SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $1 AND (ipv4 = $2 OR ipv6 = $2)", tenant, a)
            case .slug(let s):
                device = Statement("SELECT \(Self.deviceColumns) FROM devices WHERE tenant_id = $1 AND slug = $2", tenant, s)
                node = Statement("SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $1 AND slug = $2", tenant, s)
            }
            let r = try tx.batch([Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1", tenant), device, node])
            guard let trow = r[0].rows.first else { return nil }
            if let d = r[1].rows.first { return (try Self.tenant(trow), try Self.device(d).member()) }
            if let n = r[2].rows.first { return (try Self.tenant(trow), try Self.node(n).member) }
            return nil
        }
    }
}

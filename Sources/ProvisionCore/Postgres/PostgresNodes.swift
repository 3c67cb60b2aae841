import Foundation
import MeshDomain
import MeshNet
import MeshProto
import MeshStore

extension PostgresProvisionStore: NodeRepository {
    public func insertEnrollmentToken(hash: [UInt8], tenant: UUID, createdBy: String, ttl: Duration, uses: Int,
                                      audit: AuditEvent) async throws(MeshError) -> Date {
        try await write { tx in
            guard let row = try tx.queryFirst("""
                INSERT INTO enrollment_tokens (token_hash, tenant_id, created_by, expires_at, uses_left)
                SELECT $1, id, $3, now() + make_interval(secs => $4), $5 FROM tenants WHERE id = $2
                RETURNING expires_at
                """, ByteA(hash), tenant, createdBy, ttl.seconds, uses) else { throw MeshError.notFound("unknown tenant") }
            try tx.batch([Self.auditStatement(audit)])
            return try row.decode("expires_at")
        }
    }

    public func enrollmentTenant(tokenHash: [UInt8], publicKey: String, busKey: String?) async throws(MeshError) -> UUID? {
        let rows = try await query("""
            SELECT e.tenant_id FROM enrollment_tokens e
            WHERE e.token_hash = $1 AND e.expires_at > now()
              AND (e.uses_left > 0 OR EXISTS (\(Self.spentByThisNode)))
            """, ByteA(tokenHash), publicKey, busKey)
        return try? rows.first?.decode("tenant_id", as: UUID.self)
    }

    /// The node with key $2 and bus key $3 registered with token $1 (of `e`, the token's row).
    static let spentByThisNode: SQL = """
        SELECT 1 FROM nodes n WHERE n.tenant_id = e.tenant_id AND n.public_key = $2 AND n.enrolled_with = $1
          AND n.bus_public_key IS NOT DISTINCT FROM $3
        """

    public func node(publicKey: String) async throws(MeshError) -> NodeRecord? {
        let rows = try await query("SELECT \(Self.nodeColumns) FROM nodes WHERE public_key = $1", publicKey)
        do {
            return try rows.first.map(Self.node)
        } catch {
            throw map(error)
        }
    }

    public func busKeyHolder(_ key: String) async throws(MeshError) -> (holder: UUID?, revoked: Bool) {
        let rows = try await query("""
            SELECT (SELECT id FROM nodes WHERE bus_public_key = $1) AS holder,
                   EXISTS (SELECT 1 FROM bus_revocations WHERE user_key = $1) AS revoked
            """, key)
        guard let r = rows.first else { return (nil, false) }
        return (try? r.decodeIfPresent("holder", as: UUID.self), (try? r.decode("revoked", as: Bool.self)) ?? false)
    }

    public func registerNode(id nodeID: UUID, tenant: UUID, _ r: NodeRegistration, addresses: (ipv4: String, ipv6: String)?)
        async throws(MeshError) -> (node: NodeRecord, tenant: TenantRecord, revision: UInt64?, isNew: Bool) {
        try await write { tx in
            let pre = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                // A retry of the node that spent the token spends nothing.
                Statement("""
                    UPDATE enrollment_tokens e SET uses_left = uses_left - 1
                    WHERE e.token_hash = $1 AND e.tenant_id = $4 AND e.uses_left > 0 AND e.expires_at > now()
                      AND NOT EXISTS (\(Self.spentByThisNode))
                    """, ByteA(r.tokenHash), r.publicKey, r.busKey, tenant),
                Statement("""
                    SELECT 1 FROM enrollment_tokens e WHERE e.token_hash = $1 AND e.expires_at > now() AND e.tenant_id = $4
                      AND EXISTS (\(Self.spentByThisNode))
                    """, ByteA(r.tokenHash), r.publicKey, r.busKey, tenant),
                Statement("SELECT \(Self.nodeColumns), bus_public_key, bus_jwt_expires_at FROM nodes WHERE id = $1", nodeID),
            ])
            guard let trow = pre[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            var t = try Self.tenant(trow)
            // A use spent now, or the retry of the node that spent it.
            guard pre[1].affectedRows == 1 || !pre[2].rows.isEmpty else { throw MeshError.unauthenticated("invalid or expired enrollment token") }
            var revision: UInt64?
            let node: NodeRecord
            if let old = pre[3].rows.first {
                let before = try Self.node(old)
                var n = before
                n.endpoint = r.endpoint
                n.listenPort = r.listenPort
                n.name = r.name
                // A node that registers again with a new bus key: its old key stops working.
                if let busKey = r.busKey, let oldKey = try old.decodeIfPresent("bus_public_key", as: String.self), oldKey != busKey {
                    try tx.batch([Self.revokeBusKeyStatement(key: oldKey, node: nodeID,
                                                             pruneAfter: try old.decodeIfPresent("bus_jwt_expires_at", as: Date.self))])
                }
                var writes = [
                    Statement("UPDATE nodes SET endpoint = $2, listen_port = $3, name = $4, enrolled_with = $5, last_seen_at = now() WHERE id = $1",
                              nodeID, r.endpoint, r.listenPort, r.name, ByteA(r.tokenHash)),
                ]
                if let busKey = r.busKey {
                    writes.append(Statement("UPDATE nodes SET bus_public_key = $2, bus_jwt_expires_at = $3 WHERE id = $1", nodeID, busKey, r.busJWTExpires))
                }
                writes.append(Self.auditStatement(AuditEvent(tenant: tenant, actor: "node:\(nodeID.lowercased)", action: "node.reregister",
                                                              target: nodeID.lowercased, requestID: r.requestID, detail: "\(r.name) at \(r.endpoint)")))
                try tx.batch(writes)
                if n.member != before.member {
                    revision = try Outbox.append(tx, tenant: tenant, change: .upsert(n.member))
                    if n.endpoint != before.endpoint {
                        try Self.markOutdated(tx, tenant: tenant, node: nodeID, change: .nodeMoved(name: n.name, endpoint: n.endpoint))
                    }
                }
                node = n
            } else {
                guard let addresses else { throw MeshError.internal("a new node needs addresses") }
                let base = Slug.make(r.name, fallback: "node")
                let taken = try Self.takenNames(tx, tenant: tenant, base: base)
                let slug = Slug.firstFree(base, taken: taken)
                var writes = [
                    Statement("INSERT INTO mesh_names (tenant_id, slug, owner_id) VALUES ($1, $2, $3)", tenant, slug, nodeID),
                    Statement("""
                        INSERT INTO nodes (id, tenant_id, name, slug, public_key, endpoint, listen_port, ipv4, ipv6, last_seen_at,
                                           bus_public_key, bus_jwt_expires_at, enrolled_with)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10, $11, $12) RETURNING created_at, last_seen_at
                        """, nodeID, tenant, r.name, slug, r.publicKey, r.endpoint, r.listenPort, addresses.ipv4, addresses.ipv6,
                        r.busKey, r.busJWTExpires, ByteA(r.tokenHash)),
                    Self.dropHoldStatement(owner: nodeID),
                    Self.auditStatement(AuditEvent(tenant: tenant, actor: "node:\(nodeID.lowercased)", action: "node.register",
                                                   target: nodeID.lowercased, requestID: r.requestID,
                                                   detail: "\(r.name) as \(MeshName.dnsName(slug: slug, domain: t.domain)) at \(r.endpoint), \(addresses.ipv4)")),
                ]
                // The hub rule needs the current hub, if it still exists, and the oldest node: not
                // every node of the tenant (10,000 rows under the tenant lock for each registration).
                let existingNodes = try tx.query("""
                    SELECT id FROM (
                      (SELECT id, created_at FROM nodes WHERE tenant_id = $1 AND id = (SELECT hub_node_id FROM tenants WHERE id = $1))
                      UNION
                      (SELECT id, created_at FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id LIMIT 1)
                    ) n ORDER BY created_at, id
                    """, tenant).map { try $0.decode("id", as: UUID.self).lowercased }
                let w = try tx.batch(writes)
                writes.removeAll()
                guard w[2].affectedRows == 1 else {
                    throw MeshError.unavailable("the address hold expired before the node was saved; try again")
                }
                let created: Date = try w[1].rows[0].decode("created_at")
                node = NodeRecord(id: nodeID, tenant: tenant, name: r.name, slug: slug, publicKey: r.publicKey, endpoint: r.endpoint,
                                  listenPort: r.listenPort, ipv4: addresses.ipv4, ipv6: addresses.ipv6, createdAt: created, lastSeen: created)
                revision = try Outbox.append(tx, tenant: tenant, change: .upsert(node.member))
                // The first node (or the first after the hub went) becomes the hub.
                let hub = DeviceRules.hub(current: t.hubNodeID, nodesByAge: existingNodes + [nodeID.lowercased])
                if hub != t.hubNodeID {
                    t.hubNodeID = hub
                    try tx.execute("UPDATE tenants SET hub_node_id = $2 WHERE id = $1", tenant, UUID(text: hub))
                    revision = try Outbox.append(tx, tenant: tenant, change: .settings(t.settings))
                }
            }
            if let revision { t.revision = revision }
            return (node, t, revision, pre[3].rows.isEmpty)
        }
    }

    public func deregisterNode(_ id: UUID, tenant: UUID, actor: String, requestID: String) async throws(MeshError) -> (NodeRecord, UInt64) {
        try await write { tx in
            let pre = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                Statement("SELECT \(Self.nodeColumns), bus_public_key, bus_jwt_expires_at FROM nodes WHERE id = $1 AND tenant_id = $2", id, tenant),
            ])
            guard let trow = pre[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            guard let row = pre[1].rows.first else { throw MeshError.notFound("no such node") }
            var t = try Self.tenant(trow)
            let n = try Self.node(row)
            var writes: [Statement] = []
            if let key = try row.decodeIfPresent("bus_public_key", as: String.self) {
                writes.append(Self.revokeBusKeyStatement(key: key, node: id, pruneAfter: try row.decodeIfPresent("bus_jwt_expires_at", as: Date.self)))
            }
            writes += [
                Statement("DELETE FROM nodes WHERE id = $1", id),
                Statement("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", tenant, id),
                Self.releaseStatement(owner: id, tenant: tenant),
                Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "node.deregister", target: id.lowercased,
                                               requestID: requestID, detail: n.name)),
            ]
            try tx.batch(writes)
            try Self.markOutdated(tx, tenant: tenant, node: id, change: .nodeRemoved(name: n.name))
            let removal = Mesh_V1_MemberRemoval(id: id.lowercased, kind: .node, publicKey: n.publicKey)
            var revision = try Outbox.append(tx, tenant: tenant, change: .remove(removal))
            if t.hubNodeID == id.lowercased {
                let rest = try tx.query("SELECT id FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id", tenant)
                    .map { try $0.decode("id", as: UUID.self).lowercased }
                t.hubNodeID = DeviceRules.hub(current: "", nodesByAge: rest)
                try tx.execute("UPDATE tenants SET hub_node_id = $2 WHERE id = $1", tenant, UUID(text: t.hubNodeID))
                revision = try Outbox.append(tx, tenant: tenant, change: .settings(t.settings))
            }
            return (n, revision)
        }
    }

    public func setHub(_ id: UUID, tenant: UUID, actor: String, requestID: String) async throws(MeshError) -> (NodeRecord, TenantRecord, UInt64?) {
        try await write { tx in
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                Statement("SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $1", tenant),
            ])
            guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            var t = try Self.tenant(trow)
            let nodes = try r[1].rows.map(Self.node)
            guard let n = nodes.first(where: { $0.id == id }) else { throw MeshError.notFound("no such node") }
            guard t.hubNodeID != id.lowercased else { return (n, t, nil) }
            let old = nodes.first { $0.id.lowercased == t.hubNodeID }
            t.hubNodeID = id.lowercased
            try tx.batch([
                Statement("UPDATE tenants SET hub_node_id = $2 WHERE id = $1", tenant, id),
                Self.auditStatement(AuditEvent(tenant: tenant, actor: actor, action: "node.set_hub", target: id.lowercased, requestID: requestID,
                                               detail: "hub \(old?.name ?? "none") → \(n.name)")),
            ])
            if let old { try Self.markOutdated(tx, tenant: tenant, node: old.id, change: .hubChanged(from: old.name, to: n.name)) }
            t.revision = try Outbox.append(tx, tenant: tenant, change: .settings(t.settings))
            return (n, t, t.revision)
        }
    }

    public func nodes(tenant: UUID) async throws(MeshError) -> (TenantRecord, [NodeRecord])? {
        try await read { tx in
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1", tenant),
                Statement("SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id", tenant),
            ])
            guard let trow = r[0].rows.first else { return nil }
            return (try Self.tenant(trow), try r[1].rows.map(Self.node))
        }
    }

    /// Marks the configs a change of node `node` outdates: those whose hub it is, and those that list
    /// it as another node.
    static func markOutdated(_ tx: borrowing Transaction, tenant: UUID, node: UUID, change: PeerCatalog.ConfigChange) throws {
        var writes: [Statement] = []
        if let reason = change.reason(listedAsHub: true) {
            writes.append(Statement("""
                UPDATE devices SET config_outdated = $3 WHERE tenant_id = $1 AND config_outdated IS NULL AND config_hub_id = $2
                """, tenant, node, reason))
        }
        if let reason = change.reason(listedAsHub: false) {
            writes.append(Statement("""
                UPDATE devices SET config_outdated = $3
                WHERE tenant_id = $1 AND config_outdated IS NULL AND config_hub_id IS DISTINCT FROM $2
                  AND config_nodes @> jsonb_build_array(jsonb_build_object('id', $2::text))
                """, tenant, node, reason))
        }
        if !writes.isEmpty { try tx.batch(writes) }
    }

    /// Records that a node's bus key is revoked (pushed to nats-server after the commit).
    static func revokeBusKeyStatement(key: String, node: UUID, pruneAfter: Date?) -> Statement {
        Statement("""
            INSERT INTO bus_revocations (user_key, node_id, prune_after) VALUES ($1, $2, $3)
            ON CONFLICT (user_key) DO UPDATE SET revoked_at = now()
            """, key, node, pruneAfter)
    }
}

import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto
import MeshStore
import ServiceStore

/// ProvisionSvc's repositories on PostgreSQL (the `provision` schema, ``ProvisionSchema``).
///
/// Every replica is stateless. Anything two replicas could race on is decided inside one
/// transaction that locks the tenant row (plan cap, per-tenant revision, unique slug, hub) and the
/// user row (rate limit), so the rules hold exactly however many replicas run.
public final class PostgresProvisionStore: Sendable {
    let store: Store
    let logger: Logger

    public init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    // MARK: Transactions with errors mapped to MeshError

    func write<T: Sendable>(_ body: @escaping @Sendable (borrowing Transaction) throws -> T) async throws(MeshError) -> T {
        do {
            return try await store.write(body)
        } catch {
            throw map(error)
        }
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (borrowing Transaction) throws -> T) async throws(MeshError) -> T {
        do {
            return try await store.read(body)
        } catch {
            throw map(error)
        }
    }

    /// One statement in autocommit mode: one round trip.
    func query(_ sql: SQL, _ params: (any PGEncodable)?...) async throws(MeshError) -> [Row] {
        do {
            return try await store.query(sql: sql, parameters: params)
        } catch {
            throw map(error)
        }
    }

    /// Storage errors as domain errors (ServiceStore's one mapping).
    func map(_ error: any Error) -> MeshError { .fromStore(error, logger: logger) }

    // MARK: Shared pieces

    static let tenantColumns: SQL = """
        id, name, plan, require_saml, ipv4_prefix, ipv6_prefix, domain, node_keepalive, device_keepalive, device_mtu,
        config_max_nodes, dns_resolvers, hub_node_id, mesh_enabled, revision, created_at, device_lifetime_seconds, dns_filtered, policy_version
        """

    /// A tenant from `tenantColumns`, each name optionally prefixed (`t_` in a join).
    static func tenant(_ r: Row, prefix p: String = "") throws -> TenantRecord {
        var t = TenantRecord(id: try r.decode(p + "id"), name: try r.decode(p + "name"), plan: Mesh_V1_Plan(key: try r.decode(p + "plan")) ?? .free,
                             requireSAML: try r.decode(p + "require_saml"), ipv4Prefix: try r.decode(p + "ipv4_prefix"),
                             ipv6Prefix: try r.decode(p + "ipv6_prefix"), createdAt: try r.decode(p + "created_at"))
        t.domain = try r.decode(p + "domain")
        t.nodeKeepalive = try r.decode(p + "node_keepalive")
        t.deviceKeepalive = try r.decode(p + "device_keepalive")
        t.deviceMTU = try r.decode(p + "device_mtu")
        t.configMaxNodes = try r.decode(p + "config_max_nodes")
        t.dnsResolvers = try r.decode(p + "dns_resolvers")
        t.hubNodeID = try r.decodeIfPresent(p + "hub_node_id", as: UUID.self)?.lowercased ?? ""
        t.meshEnabled = try r.decode(p + "mesh_enabled")
        t.dnsFiltered = try r.decode(p + "dns_filtered")
        t.policyVersion = UInt64(try r.decode(p + "policy_version", as: Int64.self))
        t.revision = UInt64(try r.decode(p + "revision", as: Int64.self))
        t.deviceLifetimeSeconds = try r.decodeIfPresent(p + "device_lifetime_seconds", as: Int.self) ?? 0
        return t
    }

    /// The columns of a device a listing shows (``DeviceQuery/listing``).
    static let deviceListingColumns: SQL = """
        id, owner_user_id, label, slug, type, ipv4, ipv6, created_at, last_handshake_at,
        rx_bytes, tx_bytes, endpoint, config_outdated, suspended_at, suspend_reason, expires_at, tag_list AS tags
        """

    /// A device's own columns: the listing's, then those it leaves out (the tenant, the public key,
    /// the config hub and the listed nodes). ``device(_:)`` also reads `owner_role`, which
    /// ``deviceColumns`` adds (a read that joins `users` anyway takes it from the join instead).
    static let deviceOwnColumns: SQL = """
        \(deviceListingColumns), tenant_id, public_key, config_hub_id, config_node_ids
        """

    static let deviceColumns: SQL = """
        \(deviceOwnColumns), (SELECT role FROM users o WHERE o.id = devices.owner_user_id) AS owner_role
        """

    /// A device from ``deviceColumns`` (or ``deviceOwnColumns`` and `owner_role`), its columns read in
    /// the order they are listed, which is the order ``ColumnIndex`` guesses first.
    static func device(_ r: Row) throws -> DeviceRecord {
        try device(r, id: try r.decode("id"))
    }

    /// ``device(_:)`` for a row whose `id` the caller has already read; with `listedIn`, a row of
    /// ``deviceListingColumns`` of that tenant (the columns it lacks are left empty).
    static func device(_ r: Row, id: UUID, listedIn listing: UUID? = nil) throws -> DeviceRecord {
        let owner: UUID = try r.decode("owner_user_id")
        let label: String = try r.decode("label"), slug: String = try r.decode("slug")
        let type = Mesh_V1_DeviceType(key: try r.decode("type")) ?? .other
        let ipv4: String = try r.decode("ipv4"), ipv6: String = try r.decode("ipv6")
        let createdAt: Date = try r.decode("created_at"), lastHandshake: Date? = try r.decodeIfPresent("last_handshake_at")
        let rxBytes: Int64 = try r.decode("rx_bytes"), txBytes: Int64 = try r.decode("tx_bytes")
        let endpoint: String? = try r.decodeIfPresent("endpoint")
        let configOutdated: String? = try r.decodeIfPresent("config_outdated")
        let lifecycle = DeviceLifecycle(
            suspendedAt: try r.decodeIfPresent("suspended_at"),
            suspendReason: Mesh_V1_SuspendReason(key: try r.decodeIfPresent("suspend_reason", as: String.self) ?? "") ?? .unspecified,
            expiresAt: try r.decodeIfPresent("expires_at"))
        let tags: [String] = try r.decode("tags")
        // The columns a listing leaves out come last.
        let full = listing == nil
        let tenant: UUID = try listing ?? r.decode("tenant_id")
        let publicKey: String = full ? try r.decode("public_key") : ""
        let configHubID = full ? try r.decodeIfPresent("config_hub_id", as: UUID.self)?.lowercased ?? "" : ""
        let configNodeIDs: [String] = full ? try r.decode("config_node_ids") : []
        let ownerRole = Mesh_V1_Role(key: try r.decodeIfPresent("owner_role") ?? "") ?? .unspecified
        var d = DeviceRecord(id: id, tenant: tenant, owner: owner, label: label, slug: slug, type: type, ipv4: ipv4, ipv6: ipv6,
                             publicKey: publicKey, createdAt: createdAt, lastHandshake: lastHandshake, rxBytes: rxBytes, txBytes: txBytes,
                             endpoint: endpoint, configHubID: configHubID, configNodeIDs: configNodeIDs, configOutdated: configOutdated,
                             tags: tags, ownerRole: ownerRole)
        d.lifecycle = lifecycle
        return d
    }

    /// The statement that writes a device's lifecycle.
    static func lifecycleStatement(_ id: UUID, _ l: DeviceLifecycle) -> Statement {
        Statement("UPDATE devices SET suspended_at = $2, suspend_reason = $3, expires_at = $4 WHERE id = $1",
                  id, l.suspendedAt, l.isActive ? nil : l.suspendReason.key, l.expiresAt)
    }

    /// Tags are stored as a JSON array of strings and read through the generated `tag_list` text array (migration 12).
    static func json(tags: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(tags)) ?? Data("[]".utf8), as: UTF8.self)
    }

    static let nodeColumns: SQL = """
        id, tenant_id, name, slug, public_key, endpoint, listen_port, ipv4, ipv6, created_at, last_seen_at, tag_list AS tags
        """

    static func node(_ r: Row) throws -> NodeRecord {
        NodeRecord(id: try r.decode("id"), tenant: try r.decode("tenant_id"), name: try r.decode("name"), slug: try r.decode("slug"),
                   publicKey: try r.decode("public_key"), endpoint: try r.decode("endpoint"), listenPort: try r.decode("listen_port"),
                   ipv4: try r.decode("ipv4"), ipv6: try r.decode("ipv6"), createdAt: try r.decode("created_at"),
                   lastSeen: try r.decodeIfPresent("last_seen_at"), tags: try r.decode("tags"))
    }

    static func auditStatement(_ a: AuditEvent) -> Statement {
        Statement("""
            INSERT INTO audit_log (tenant_id, actor, action, target_id, request_id, detail) VALUES ($1, $2, $3, $4, $5, $6)
            """, a.tenant, a.actor, a.action, a.target, a.requestID, a.detail)
    }

    static func json(_ listed: [PeerCatalog.ListedNode]) -> String {
        let data = (try? JSONEncoder().encode(listed)) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

// MARK: Tenants

extension PostgresProvisionStore: TenantRepository {
    public func insertTenant(_ t: TenantRecord, audit: AuditEvent) async throws(MeshError) {
        let hub: UUID? = UUID(text: t.hubNodeID)
        try await write { tx in
            let n = try tx.execute("""
                INSERT INTO tenants (id, name, plan, require_saml, ipv4_prefix, ipv6_prefix, domain, node_keepalive, device_keepalive,
                                     device_mtu, config_max_nodes, dns_resolvers, hub_node_id, mesh_enabled, device_lifetime_seconds)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (id) DO NOTHING
                """, t.id, t.name, t.plan.key, t.requireSAML, t.ipv4Prefix, t.ipv6Prefix, t.domain, t.nodeKeepalive, t.deviceKeepalive,
                t.deviceMTU, t.configMaxNodes, t.dnsResolvers, hub, t.meshEnabled, t.deviceLifetimeSeconds > 0 ? t.deviceLifetimeSeconds : nil)
            guard n == 1 else { throw MeshError.alreadyExists("tenant \(t.id.lowercased) already exists") }
            // The first change of every tenant: its settings, so a node starts from a known state.
            try Outbox.append(tx, tenant: t.id, change: .settings(t.settings))
            try tx.batch([Self.auditStatement(audit)])
        }
    }

    public func tenant(_ id: UUID) async throws(MeshError) -> TenantRecord? {
        let rows = try await query("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1", id)
        do {
            return try rows.first.map { try Self.tenant($0) }
        } catch {
            throw map(error)
        }
    }

    public func tenants() async throws(MeshError) -> [TenantRecord] {
        let rows = try await query("SELECT \(Self.tenantColumns) FROM tenants ORDER BY created_at, id")
        do {
            return try rows.map { try Self.tenant($0) }
        } catch {
            throw map(error)
        }
    }

    public func updateTenant(_ id: UUID, _ change: @escaping @Sendable (TenantRecord) throws(MeshError) -> (TenantRecord, AuditEvent)?)
        async throws(MeshError) -> (tenant: TenantRecord, revision: UInt64?) {
        try await write { tx in
            guard let row = try tx.queryFirst("SELECT \(Self.tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", id) else {
                throw MeshError.notFound("unknown tenant")
            }
            let cur = try Self.tenant(row)
            guard let (t, audit) = try change(cur) else { return (cur, nil) }
            try tx.execute("""
                UPDATE tenants SET name = $2, plan = $3, require_saml = $4, domain = $5, node_keepalive = $6, device_keepalive = $7,
                  device_mtu = $8, config_max_nodes = $9, dns_resolvers = $10, mesh_enabled = $11, device_lifetime_seconds = $12 WHERE id = $1
                """, id, t.name, t.plan.key, t.requireSAML, t.domain, t.nodeKeepalive, t.deviceKeepalive, t.deviceMTU, t.configMaxNodes,
                t.dnsResolvers, t.meshEnabled, t.deviceLifetimeSeconds > 0 ? t.deviceLifetimeSeconds : nil)
            var revision: UInt64?
            var after = t
            if t.settings != cur.settings {
                revision = try Outbox.append(tx, tenant: id, change: .settings(t.settings))
                after.revision = revision!
            }
            try tx.batch([Self.auditStatement(audit)])
            return (after, revision)
        }
    }
}

// MARK: Users

extension PostgresProvisionStore: UserRepository {
    public func insertUser(_ u: Mesh_V1_User, audit: AuditEvent) async throws(MeshError) -> Mesh_V1_User {
        guard let id = UUID(text: u.id), let tenant = UUID(text: u.tenantID) else { throw .invalidArgument(field: "id", message: "id must be a UUID") }
        return try await write { tx in
            guard try tx.queryFirst("SELECT 1 AS x FROM tenants WHERE id = $1", tenant) != nil else { throw MeshError.notFound("unknown tenant") }
            guard let row = try tx.queryFirst("""
                INSERT INTO users (id, tenant_id, name, role) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING
                RETURNING \(Self.userColumns)
                """, id, tenant, u.name, u.role.key) else { throw MeshError.alreadyExists("user \(id.lowercased) already exists") }
            try tx.batch([Self.auditStatement(audit)])
            return try Self.user(row)
        }
    }

    public func user(tenant: UUID, id: UUID) async throws(MeshError) -> Mesh_V1_User? {
        let rows = try await query("SELECT \(Self.userColumns) FROM users WHERE id = $1 AND tenant_id = $2", id, tenant)
        do {
            return try rows.first.map(Self.user)
        } catch {
            throw map(error)
        }
    }

    public func users(tenant: UUID) async throws(MeshError) -> [Mesh_V1_User] {
        let rows = try await query("SELECT \(Self.userColumns) FROM users WHERE tenant_id = $1 ORDER BY created_at, id", tenant)
        do {
            return try rows.map(Self.user)
        } catch {
            throw map(error)
        }
    }
}

// MARK: Audit and license

extension PostgresProvisionStore: AuditRepository {
    public func audit(tenant: UUID, before: Int64, limit: Int, filter: AuditFilter) async throws(MeshError) -> [Mesh_V1_AuditEntry] {
        // An action family ("device") matches "device" and "device.*"; a full action matches itself.
        let family = filter.action.flatMap { $0.contains(".") ? nil : $0 + ".%" }
        let rows = try await query("""
            SELECT id, tenant_id, actor, action, target_id, request_id, detail, at FROM audit_log
            WHERE tenant_id = $1 AND id < $2
              AND ($4::text IS NULL OR action = $4 OR ($5::text IS NOT NULL AND action LIKE $5))
              AND ($6::text IS NULL OR actor = $6)
            ORDER BY id DESC LIMIT $3
            """, tenant, before, limit, filter.action, family, filter.actor)
        do {
            return try rows.map { r in
                var a = Mesh_V1_AuditEntry()
                a.id = try r.decode("id")
                a.tenantID = (try r.decode("tenant_id", as: UUID.self)).lowercased
                a.actor = try r.decode("actor")
                a.action = try r.decode("action")
                a.targetID = try r.decode("target_id")
                a.requestID = try r.decode("request_id")
                a.detail = try r.decode("detail")
                a.atMs = (try r.decode("at", as: Date.self)).unixMilliseconds
                return a
            }
        } catch {
            throw map(error)
        }
    }

    public func license(tenant: UUID) async throws(MeshError) -> (TenantRecord, devices: Int)? {
        let rows = try await query("""
            SELECT \(Self.tenantColumns), device_count AS used FROM tenants WHERE id = $1
            """, tenant)
        do {
            guard let r = rows.first else { return nil }
            return (try Self.tenant(r), try r.decode("used", as: Int.self))
        } catch {
            throw map(error)
        }
    }
}

// MARK: Lease tasks

extension PostgresProvisionStore: LeaseTaskRepository {
    public func holdLease(owner: UUID, tenant: UUID, due: Date) async throws(MeshError) {
        _ = try await query("""
            INSERT INTO lease_tasks (owner_id, tenant_id, op, never_published, due_at) VALUES ($1, $2, 'pending', true, $3)
            ON CONFLICT (owner_id) DO NOTHING
            """, owner, tenant, due)
    }

    public func claimLeaseTasks(limit: Int, retryAfter: Duration) async throws(MeshError) -> [LeaseTask] {
        let rows = try await query("""
            WITH due AS (
              SELECT owner_id FROM lease_tasks WHERE due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
            UPDATE lease_tasks t SET op = 'release', due_at = now() + make_interval(secs => $2)
            FROM due WHERE t.owner_id = due.owner_id
            RETURNING t.owner_id, t.tenant_id, t.never_published
            """, limit, retryAfter.seconds)
        do {
            return try rows.map { LeaseTask(owner: try $0.decode("owner_id"), tenant: try $0.decode("tenant_id"),
                                            neverPublished: try $0.decode("never_published")) }
        } catch {
            throw map(error)
        }
    }

    public func finishLeaseTask(owner: UUID) async throws(MeshError) {
        _ = try await query("DELETE FROM lease_tasks WHERE owner_id = $1", owner)
    }

    /// The statements that record an owner's release, for the transaction that deletes it.
    static func releaseStatement(owner: UUID, tenant: UUID) -> Statement {
        Statement("""
            INSERT INTO lease_tasks (owner_id, tenant_id, op, never_published, due_at) VALUES ($1, $2, 'release', false, now())
            ON CONFLICT (owner_id) DO UPDATE SET op = 'release', never_published = false, due_at = now()
            """, owner, tenant)
    }

    /// The statement that drops an owner's hold as it commits; it must affect exactly one row.
    static func dropHoldStatement(owner: UUID) -> Statement {
        Statement("DELETE FROM lease_tasks WHERE owner_id = $1 AND op = 'pending'", owner)
    }
}

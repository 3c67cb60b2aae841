import Crypto
import Foundation
import Logging
import MeshClient
import MeshCore
import MeshNet
import MeshProto
import MeshStore

/// The provisioning rules: tenants, users, devices, nodes, plans and caps, the rate limit,
/// keypairs, configs, QR codes, the audit log and the change outbox.
///
/// Every replica is stateless. Anything two replicas could race on is decided inside one
/// PostgreSQL transaction that locks the tenant row (plan cap, per-tenant revision, unique slug)
/// and the user row (rate limit), so the rules hold exactly however many replicas run.
public final class Provisioner: Sendable {
    let store: Store
    let allocator: AllocatorClient
    public let configuration: ProvisionConfiguration
    let renderer: ConfigRenderer
    let logger: Logger
    /// Per-node bus identities, when the bus runs with them (docs/security.md); nil on an open bus.
    let busIdentities: NodeBusIdentities?

    public init(store: Store, allocator: AllocatorClient, configuration: ProvisionConfiguration, logger: Logger,
                busIdentities: NodeBusIdentities? = nil) {
        self.busIdentities = busIdentities
        self.store = store
        self.allocator = allocator
        self.configuration = configuration
        self.renderer = ConfigRenderer(domain: configuration.meshDomain, mtu: configuration.deviceMTU,
                                       keepalive: configuration.persistentKeepalive, dnsResolvers: configuration.dnsResolvers)
        self.logger = logger
    }

    // MARK: Tenants and users

    public func createTenant(_ req: Mesh_V1_CreateTenantRequest, requestID: String) async throws(MeshError) -> Mesh_V1_Tenant {
        let name = try Validate.name(req.name, field: "name")
        let plan = req.plan == .unspecified ? Mesh_V1_Plan.free : req.plan
        guard plan.deviceCap != 0 else { throw .invalidArgument(field: "plan", message: "unknown plan") }
        if req.requireSaml && plan != .enterprise {
            throw .failedPrecondition("SAML-gated provisioning is an Enterprise feature")
        }
        let id = req.id.isEmpty ? UUID() : try Validate.uuid(req.id, field: "id")
        let prefixes = try await allocator.ensureTenant(id.lowercased, requestID: requestID)
        let ranges = prefixes.deviceRanges.joined(separator: ",")
        try await run { tx in
            let n = try tx.execute("""
                INSERT INTO tenants (id, name, plan, require_saml, ipv4_prefix, ipv6_prefix, device_ranges)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING
                """, id, name, plan.key, req.requireSaml, prefixes.ipv4Prefix, prefixes.ipv6Prefix, ranges)
            guard n == 1 else { throw MeshError.alreadyExists("tenant \(id.lowercased) already exists") }
            try Audit.write(tx, tenant: id, actor: "system", action: "tenant.create", target: id.lowercased, requestID: requestID,
                            detail: "\(name) on the \(plan.displayName) plan")
        }
        logger.info("tenant created", metadata: ["tenant.id": "\(id.lowercased)", "tenant.plan": "\(plan.key)", "request.id": "\(requestID)"])
        return try await tenant(id)
    }

    public func updateTenant(_ req: Mesh_V1_UpdateTenantRequest, requestID: String) async throws(MeshError) -> Mesh_V1_Tenant {
        let id = try Validate.uuid(req.tenantID, field: "tenant_id")
        try await run { tx in
            guard let row = try tx.queryFirst("SELECT plan, require_saml FROM tenants WHERE id = $1 FOR UPDATE", id) else {
                throw MeshError.notFound("unknown tenant")
            }
            var plan = Mesh_V1_Plan(key: try row.decode("plan")) ?? .free
            var saml: Bool = try row.decode("require_saml")
            if req.plan != .unspecified {
                guard req.plan.deviceCap != 0 else { throw MeshError.invalidArgument(field: "plan", message: "unknown plan") }
                plan = req.plan
            }
            if req.setRequireSaml { saml = req.requireSaml }
            if saml && plan != .enterprise {
                if req.setRequireSaml { throw MeshError.failedPrecondition("SAML-gated provisioning is an Enterprise feature") }
                saml = false
            }
            try tx.execute("UPDATE tenants SET plan = $2, require_saml = $3 WHERE id = $1", id, plan.key, saml)
            try Audit.write(tx, tenant: id, actor: "system", action: "tenant.update", target: id.lowercased, requestID: requestID,
                            detail: "plan \(plan.key), require_saml \(saml)")
        }
        return try await tenant(id)
    }

    public func tenant(_ id: UUID) async throws(MeshError) -> Mesh_V1_Tenant {
        let row = try await readOne {
            try await store.query("""
                SELECT id, name, plan, require_saml, revision, ipv4_prefix, ipv6_prefix,
                       (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
                FROM tenants WHERE id = $1
                """, id)
        }
        guard let row else { throw .notFound("unknown tenant") }
        return try Mapping.tenant(row)
    }

    public func listTenants() async throws(MeshError) -> [Mesh_V1_Tenant] {
        let rows = try await read { tx in
            try tx.query("""
                SELECT id, name, plan, require_saml, revision, ipv4_prefix, ipv6_prefix,
                       (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
                FROM tenants ORDER BY created_at, id
                """)
        }
        return try rows.map { row throws(MeshError) in try Mapping.tenant(row) }
    }

    public func createUser(_ req: Mesh_V1_CreateUserRequest, requestID: String) async throws(MeshError) -> Mesh_V1_User {
        let tenant = try Validate.uuid(req.tenantID, field: "tenant_id")
        let name = try Validate.name(req.name, field: "name")
        guard req.role == .owner || req.role == .admin else { throw .invalidArgument(field: "role", message: "role must be owner or admin") }
        let id = req.id.isEmpty ? UUID() : try Validate.uuid(req.id, field: "id")
        let row = try await run { tx in
            guard try tx.queryFirst("SELECT 1 AS x FROM tenants WHERE id = $1", tenant) != nil else { throw MeshError.notFound("unknown tenant") }
            guard let row = try tx.queryFirst("""
                INSERT INTO users (id, tenant_id, name, role) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING
                RETURNING id, tenant_id, name, role, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
                """, id, tenant, name, req.role.key) else { throw MeshError.alreadyExists("user \(id.lowercased) already exists") }
            try Audit.write(tx, tenant: tenant, actor: "system", action: "user.create", target: id.lowercased, requestID: requestID,
                            detail: "\(name) (\(req.role.key))")
            return row
        }
        return try Mapping.user(row)
    }

    public func user(tenant: String, id: String) async throws(MeshError) -> Mesh_V1_User {
        let t = try Validate.uuid(tenant, field: "tenant_id"), u = try Validate.uuid(id, field: "user_id")
        let row = try await read { tx in
            try tx.queryFirst("""
                SELECT id, tenant_id, name, role, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
                FROM users WHERE id = $1 AND tenant_id = $2
                """, u, t)
        }
        guard let row else { throw .notFound("unknown user") }
        return try Mapping.user(row)
    }

    public func listUsers(tenant: String) async throws(MeshError) -> [Mesh_V1_User] {
        let t = try Validate.uuid(tenant, field: "tenant_id")
        let rows = try await read { tx in
            try tx.query("""
                SELECT id, tenant_id, name, role, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
                FROM users WHERE tenant_id = $1 ORDER BY created_at, id
                """, t)
        }
        return try rows.map { row throws(MeshError) in try Mapping.user(row) }
    }

    // MARK: Caller identity

    /// The verified identity of a user caller: the tenant and user must exist, and the role is
    /// the one stored here (a token's claim is only a hint).
    struct Identity {
        var tenant: UUID
        var user: UUID
        var role: Mesh_V1_Role
        var isAdmin: Bool { role == .admin }
    }

    func identify(_ caller: Mesh_V1_Caller) async throws(MeshError) -> Identity {
        let tenant = try Validate.uuid(caller.tenantID, field: "caller.tenant_id")
        let user = try Validate.uuid(caller.userID, field: "caller.user_id")
        let row = try await readOne { try await store.query("SELECT role FROM users WHERE id = $1 AND tenant_id = $2", user, tenant) }
        guard let row, let role = Mesh_V1_Role(key: (try? row.decode("role", as: String.self)) ?? "") else {
            throw .notFound("unknown user")
        }
        return Identity(tenant: tenant, user: user, role: role)
    }

    // MARK: License and audit

    public func license(caller: Mesh_V1_Caller) async throws(MeshError) -> Mesh_V1_MeshVpnFeature {
        let tenant = try Validate.uuid(caller.tenantID, field: "caller.tenant_id")
        let row = try await read { tx in
            try tx.queryFirst("""
                SELECT plan, require_saml, (SELECT count(*) FROM devices WHERE tenant_id = $1) AS used FROM tenants WHERE id = $1
                """, tenant)
        }
        guard let row else { throw .notFound("unknown tenant") }
        let plan = Mesh_V1_Plan(key: (try? row.decode("plan", as: String.self)) ?? "") ?? .free
        var f = Mesh_V1_MeshVpnFeature()
        f.enabled = true
        f.plan = plan
        f.unlimited = plan.deviceCap == nil
        f.deviceCap = UInt32(plan.deviceCap ?? 0)
        f.devicesUsed = UInt32((try? row.decode("used", as: Int.self)) ?? 0)
        f.diagnostics = plan.diagnostics
        f.requireSaml = (try? row.decode("require_saml", as: Bool.self)) ?? false
        return f
    }

    public func audit(_ req: Mesh_V1_ListAuditRequest) async throws(MeshError) -> Mesh_V1_ListAuditResponse {
        let who = try await identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("the audit log is for admins") }
        let plan = try await tenant(who.tenant).plan
        guard plan.diagnostics.rawValue >= Mesh_V1_DiagnosticsLevel.auditLog.rawValue else {
            throw .permissionDenied("the audit log needs the Team plan or above (this tenant is on \(plan.displayName))")
        }
        let limit = Int(req.limit == 0 ? 50 : min(req.limit, 500))
        let before = req.beforeID <= 0 ? Int64.max : req.beforeID
        let rows = try await read { tx in
            try tx.query("""
                SELECT id, tenant_id, actor, action, target_id, request_id, detail, (extract(epoch FROM at) * 1000)::bigint AS at_ms
                FROM audit_log WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3
                """, who.tenant, before, limit + 1)
        }
        var resp = Mesh_V1_ListAuditResponse()
        resp.entries = try rows.prefix(limit).map { row throws(MeshError) in try Mapping.audit(row) }
        if rows.count > limit, let last = resp.entries.last { resp.nextBeforeID = last.id }
        return resp
    }

    // MARK: Helpers

    /// Runs a write transaction, mapping storage errors to ``MeshError``.
    func run<T: Sendable>(_ body: @escaping @Sendable (borrowing Transaction) throws -> T) async throws(MeshError) -> T {
        do {
            return try await store.write(body)
        } catch {
            throw mapStore(error)
        }
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (borrowing Transaction) throws -> T) async throws(MeshError) -> T {
        do {
            return try await store.read(body)
        } catch {
            throw mapStore(error)
        }
    }

    /// The first row of one read-only statement run in autocommit mode: one round trip, where
    /// ``read(_:)`` costs three (BEGIN, the statement, COMMIT) for the same snapshot. For the
    /// single-statement reads on hot paths (every request identifies its caller).
    func readOne(_ statement: () async throws -> [Row]) async throws(MeshError) -> Row? {
        do {
            return try await statement().first
        } catch {
            throw mapStore(error)
        }
    }

    func mapStore(_ error: any Error) -> MeshError {
        switch error {
        case let e as MeshError: return e
        case let e as StoreError:
            switch e {
            case .connectionLost, .connectFailed, .poolTimeout, .closed:
                logger.error("database unavailable", metadata: ["error": "\(e)"])
                return .unavailable("database unavailable")
            default:
                logger.error("database error", metadata: ["error": "\(e)"])
                return .internal("internal error")
            }
        default:
            logger.error("unexpected error", metadata: ["error": "\(error)"])
            return .internal("internal error")
        }
    }
}

/// Input validation shared by the handlers: every rule gives a typed error naming the field.
enum Validate {
    static func uuid(_ s: String, field: String) throws(MeshError) -> UUID {
        guard let u = UUID(text: s) else { throw .invalidArgument(field: field, message: "\(field) must be a UUID") }
        return u
    }

    /// A display name: 1–100 characters after trimming, no control characters.
    static func name(_ raw: String, field: String) throws(MeshError) -> String {
        let s = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !s.isEmpty, s.count <= 100 else { throw .invalidArgument(field: field, message: "\(field) must be 1 to 100 characters") }
        guard !s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format }) else {
            throw .invalidArgument(field: field, message: "\(field) must not contain control characters")
        }
        return s
    }

    /// `host:port` for a node endpoint.
    static func endpoint(_ s: String) throws(MeshError) -> HostPort {
        guard let hp = HostPort(s) else {
            throw .invalidArgument(field: "endpoint", message: "endpoint must be host:port (IPv6 as [addr]:port)")
        }
        return hp
    }
}

/// The audit log.
enum Audit {
    static func write(_ tx: borrowing Transaction, tenant: UUID, actor: String, action: String, target: String,
                      requestID: String, detail: String) throws {
        try tx.batch([statement(tenant: tenant, actor: actor, action: action, target: target, requestID: requestID, detail: detail)])
    }

    /// The audit row as a statement, for a ``Transaction/batch(_:)``.
    static func statement(tenant: UUID, actor: String, action: String, target: String, requestID: String, detail: String) -> Statement {
        Statement("""
            INSERT INTO audit_log (tenant_id, actor, action, target_id, request_id, detail) VALUES ($1, $2, $3, $4, $5, $6)
            """, tenant, actor, action, target, requestID, detail)
    }
}

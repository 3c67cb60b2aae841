import Foundation
import Logging
import MeshDomain
import MeshProto

/// Tenants: creation (with their prefixes from AllocatorSvc), plan and gate changes, and settings.
public struct TenantService: Sendable {
    let tenants: any TenantRepository
    let prefixes: any TenantPrefixSource
    let notifier: any ChangeNotifier
    let logger: Logger

    public init(tenants: any TenantRepository, prefixes: any TenantPrefixSource, notifier: any ChangeNotifier, logger: Logger) {
        self.tenants = tenants
        self.prefixes = prefixes
        self.notifier = notifier
        self.logger = logger
    }

    public func create(_ req: Mesh_V1_CreateTenantRequest, requestID: String) async throws(MeshError) -> Mesh_V1_Tenant {
        let name = try DisplayName.validate(req.name, field: "name")
        let policy = try PlanPolicy.require(req.plan == .unspecified ? .free : req.plan)
        try policy.checkSAMLGate(requested: req.requireSaml)
        let id = req.id.isEmpty ? UUID() : try ProvisionValidate.uuid(req.id, field: "id")
        let p = try await prefixes.ensureTenant(id, requestID: requestID)
        var t = TenantRecord(id: id, name: name, plan: policy.plan, requireSAML: req.requireSaml, ipv4Prefix: p.ipv4, ipv6Prefix: p.ipv6)
        if req.hasSettings { try Self.apply(req.settings, to: &t) }
        try await tenants.insertTenant(t, audit: AuditEvent(tenant: id, actor: "system", action: "tenant.create", target: id.lowercased,
                                                             requestID: requestID, detail: "\(name) on the \(policy.plan.displayName) plan"))
        logger.info("tenant created", metadata: ["tenant.id": "\(id.lowercased)", "tenant.plan": "\(policy.plan.key)", "request.id": "\(requestID)"])
        return try await get(id)
    }

    /// Changes the plan, the SAML gate or the settings. A plan without the gate drops it (unless the
    /// request asks for it, which is refused). New settings reach every node as one change.
    public func update(_ req: Mesh_V1_UpdateTenantRequest, requestID: String) async throws(MeshError) -> Mesh_V1_Tenant {
        let id = try ProvisionValidate.uuid(req.tenantID, field: "tenant_id")
        let newPlan: PlanPolicy? = req.plan == .unspecified ? nil : try PlanPolicy.require(req.plan)
        let patch = req.hasSettings ? req.settings : nil
        let (t, revision) = try await tenants.updateTenant(id) { cur throws(MeshError) in
            var t = cur
            let policy = newPlan ?? t.plan.policy ?? PlanPolicy.catalogue[0]
            t.plan = policy.plan
            if req.setRequireSaml {
                try policy.checkSAMLGate(requested: req.requireSaml)
                t.requireSAML = req.requireSaml
            }
            t.requireSAML = policy.samlGate(after: t.requireSAML)
            if let patch { try Self.apply(patch, to: &t) }
            guard t != cur else { return nil }
            return (t, AuditEvent(tenant: id, actor: "system", action: "tenant.update", target: id.lowercased, requestID: requestID,
                                  detail: Self.describe(from: cur, to: t)))
        }
        if revision != nil { notifier.changed(tenant: id) }
        return t.proto
    }

    public func get(_ id: UUID) async throws(MeshError) -> Mesh_V1_Tenant {
        guard let t = try await tenants.tenant(id) else { throw .notFound("unknown tenant") }
        return t.proto
    }

    public func list() async throws(MeshError) -> [Mesh_V1_Tenant] {
        try await tenants.tenants().map(\.proto)
    }

    /// Validates and applies a settings patch.
    static func apply(_ p: Mesh_V1_TenantSettingsPatch, to t: inout TenantRecord) throws(MeshError) {
        if p.domainSet != nil { t.domain = try MeshName.validateDomain(p.domain, field: "settings.domain") }
        if p.nodeKeepaliveSet != nil { t.nodeKeepalive = try range(p.nodeKeepalive, 0...3600, "settings.node_keepalive") }
        if p.deviceKeepaliveSet != nil { t.deviceKeepalive = try range(p.deviceKeepalive, 0...3600, "settings.device_keepalive") }
        if p.deviceMtuSet != nil { t.deviceMTU = try range(p.deviceMtu, 1280...9000, "settings.device_mtu") }
        if p.configMaxNodesSet != nil { t.configMaxNodes = try range(p.configMaxNodes, 1...64, "settings.config_max_nodes") }
        if p.dnsResolversSet != nil { t.dnsResolvers = try range(p.dnsResolvers, 0...8, "settings.dns_resolvers") }
    }

    static func range(_ v: UInt32, _ r: ClosedRange<Int>, _ field: String) throws(MeshError) -> Int {
        guard r.contains(Int(v)) else { throw .invalidArgument(field: field, message: "\(field) must be between \(r.lowerBound) and \(r.upperBound)") }
        return Int(v)
    }

    static func describe(from a: TenantRecord, to b: TenantRecord) -> String {
        var parts: [String] = []
        if a.plan != b.plan { parts.append("plan \(a.plan.key) → \(b.plan.key)") }
        if a.requireSAML != b.requireSAML { parts.append("require_saml \(b.requireSAML)") }
        if a.domain != b.domain { parts.append("domain \(b.domain)") }
        if a.nodeKeepalive != b.nodeKeepalive { parts.append("node_keepalive \(b.nodeKeepalive)") }
        if a.deviceKeepalive != b.deviceKeepalive { parts.append("device_keepalive \(b.deviceKeepalive)") }
        if a.deviceMTU != b.deviceMTU { parts.append("device_mtu \(b.deviceMTU)") }
        if a.configMaxNodes != b.configMaxNodes { parts.append("config_max_nodes \(b.configMaxNodes)") }
        if a.dnsResolvers != b.dnsResolvers { parts.append("dns_resolvers \(b.dnsResolvers)") }
        return parts.joined(separator: ", ")
    }
}

/// A tenant's prefixes (AllocatorSvc over the bus).
public protocol TenantPrefixSource: Sendable {
    func ensureTenant(_ id: UUID, requestID: String) async throws(MeshError) -> (ipv4: String, ipv6: String)
}

/// Users, and the identity of every caller.
public struct UserService: Sendable {
    let users: any UserRepository

    public init(users: any UserRepository) { self.users = users }

    public func create(_ req: Mesh_V1_CreateUserRequest, requestID: String) async throws(MeshError) -> Mesh_V1_User {
        let tenant = try ProvisionValidate.uuid(req.tenantID, field: "tenant_id")
        let name = try DisplayName.validate(req.name, field: "name")
        guard req.role == .owner || req.role == .admin else { throw .invalidArgument(field: "role", message: "role must be owner or admin") }
        var u = Mesh_V1_User()
        u.id = (req.id.isEmpty ? UUID() : try ProvisionValidate.uuid(req.id, field: "id")).lowercased
        u.tenantID = tenant.lowercased
        u.name = name
        u.role = req.role
        return try await users.insertUser(u, audit: AuditEvent(tenant: tenant, actor: "system", action: "user.create", target: u.id,
                                                               requestID: requestID, detail: "\(name) (\(req.role.key))"))
    }

    public func get(tenant: String, id: String) async throws(MeshError) -> Mesh_V1_User {
        let t = try ProvisionValidate.uuid(tenant, field: "tenant_id"), u = try ProvisionValidate.uuid(id, field: "user_id")
        guard let user = try await users.user(tenant: t, id: u) else { throw .notFound("unknown user") }
        return user
    }

    /// A tenant's users (and pending invitations). With a caller: an admin of the caller's tenant
    /// (its tenant, whatever `tenant` says); without one (operators): the tenant named.
    public func list(tenant: String, caller: Mesh_V1_Caller? = nil) async throws(MeshError) -> [Mesh_V1_User] {
        if let caller {
            let who = try await identify(caller)
            guard who.isAdmin else { throw .permissionDenied("only admins see the tenant's users") }
            return try await users.users(tenant: who.tenant)
        }
        return try await users.users(tenant: try ProvisionValidate.uuid(tenant, field: "tenant_id"))
    }

    /// The verified identity of a user caller: the tenant and user must exist, the user must be
    /// active, and the caller's credential must stand (a session not ended or expired, an API token
    /// not revoked or expired; ``CredentialRules``). The role is the one stored here; `amr` is the
    /// session's (stored at sign-in), none for an API token, the token's claim for a bearer JWT.
    public func identify(_ caller: Mesh_V1_Caller) async throws(MeshError) -> CallerIdentity {
        try await lookup(caller).identity
    }

    /// ``identify(_:)`` with the lookup it was decided from.
    public func lookup(_ caller: Mesh_V1_Caller) async throws(MeshError) -> (identity: CallerIdentity, lookup: CallerLookup) {
        let tenant = try ProvisionValidate.uuid(caller.tenantID, field: "caller.tenant_id")
        let user = try ProvisionValidate.uuid(caller.userID, field: "caller.user_id")
        let credential = try CallerCredential(caller)
        let l = try await users.identify(tenant: tenant, user: user, credential: credential)
        return (try Self.decide(l, credential: credential, caller: caller), l)
    }

    /// The credential rules applied to a lookup.
    static func decide(_ l: CallerLookup, credential: CallerCredential, caller: Mesh_V1_Caller) throws(MeshError) -> CallerIdentity {
        try CredentialRules.checkUser(exists: l.identity != nil, status: l.status)
        guard var who = l.identity else { throw .unauthenticated("this user no longer exists") }
        switch credential {
        case .bearer:
            who.amr = caller.amr
        case .session:
            try CredentialRules.checkSession(l.credential, now: l.now)
            who.amr = l.sessionAMR
        case .apiToken:
            try CredentialRules.checkAPIToken(l.credential, now: l.now)
            who.amr = []
        }
        return who
    }
}

/// The audit log and the license feature.
public struct AuditService: Sendable {
    let audit: any AuditRepository
    let users: UserService

    public init(audit: any AuditRepository, users: UserService) {
        self.audit = audit
        self.users = users
    }

    /// The tenant's audit log, newest first: admins of a plan that includes it.
    public func list(_ req: Mesh_V1_ListAuditRequest) async throws(MeshError) -> Mesh_V1_ListAuditResponse {
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("the audit log is for admins") }
        guard let policy = who.plan.policy else { throw .internal("tenant has an unknown plan") }
        try policy.requireDiagnostics(.auditLog, for: "the audit log")
        let limit = Int(req.limit == 0 ? 50 : min(req.limit, 500))
        let before = req.beforeID <= 0 ? Int64.max : req.beforeID
        let rows = try await audit.audit(tenant: who.tenant, before: before, limit: limit + 1)
        var resp = Mesh_V1_ListAuditResponse()
        resp.entries = Array(rows.prefix(limit))
        if rows.count > limit, let last = resp.entries.last { resp.nextBeforeID = last.id }
        return resp
    }

    /// The mesh_vpn license feature of the caller's tenant.
    public func license(caller: Mesh_V1_Caller) async throws(MeshError) -> Mesh_V1_MeshVpnFeature {
        let tenant = try ProvisionValidate.uuid(caller.tenantID, field: "caller.tenant_id")
        guard let (t, used) = try await audit.license(tenant: tenant) else { throw .notFound("unknown tenant") }
        let policy = t.plan.policy ?? PlanPolicy.catalogue[0]
        var f = Mesh_V1_MeshVpnFeature()
        f.enabled = t.meshEnabled
        f.plan = t.plan
        f.unlimited = policy.deviceCap == nil
        f.deviceCap = UInt32(policy.deviceCap ?? 0)
        f.devicesUsed = UInt32(used)
        f.diagnostics = policy.diagnostics
        f.requireSaml = t.requireSAML
        return f
    }
}

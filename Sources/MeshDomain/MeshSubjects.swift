/// Every NATS subject of the control plane, in one place. docs/architecture.md has the table of
/// subject → request/reply types → queue group → serving service.
public enum MeshSubjects {
    // AllocatorSvc
    public static let allocatorTenant = "mesh.v1.allocator.tenant"
    public static let allocatorAllocate = "mesh.v1.allocator.allocate"
    public static let allocatorRelease = "mesh.v1.allocator.release"
    public static let allocatorLease = "mesh.v1.allocator.lease"
    public static let allocatorUsage = "mesh.v1.allocator.usage"

    // ProvisionSvc
    public static let tenantCreate = "mesh.v1.provision.tenant.create"
    public static let tenantUpdate = "mesh.v1.provision.tenant.update"
    public static let tenantGet = "mesh.v1.provision.tenant.get"
    public static let tenantList = "mesh.v1.provision.tenant.list"
    public static let userCreate = "mesh.v1.provision.user.create"
    public static let userGet = "mesh.v1.provision.user.get"
    public static let userList = "mesh.v1.provision.user.list"
    public static let userInvite = "mesh.v1.provision.user.invite"
    public static let userRole = "mesh.v1.provision.user.role"
    public static let userDelete = "mesh.v1.provision.user.delete"
    /// The per-request check of a user caller (its session or token included).
    public static let callerIdentify = "mesh.v1.provision.caller.identify"
    public static let signInStart = "mesh.v1.provision.signin.start"
    public static let signInFinish = "mesh.v1.provision.signin.finish"
    public static let sessionCreate = "mesh.v1.provision.session.create"
    public static let sessionEnd = "mesh.v1.provision.session.end"
    public static let tokenCreate = "mesh.v1.provision.token.create"
    public static let tokenList = "mesh.v1.provision.token.list"
    public static let tokenRevoke = "mesh.v1.provision.token.revoke"
    public static let tokenAuthenticate = "mesh.v1.provision.token.authenticate"
    public static let deviceCreate = "mesh.v1.provision.device.create"
    public static let deviceDelete = "mesh.v1.provision.device.delete"
    public static let deviceList = "mesh.v1.provision.device.list"
    public static let deviceRename = "mesh.v1.provision.device.rename"
    public static let deviceReissue = "mesh.v1.provision.device.reissue"
    public static let enrollmentCreate = "mesh.v1.provision.enrollment.create"
    public static let nodeRegister = "mesh.v1.provision.node.register"
    public static let nodeDeregister = "mesh.v1.provision.node.deregister"
    public static let nodeList = "mesh.v1.provision.node.list"
    public static let nodeGet = "mesh.v1.provision.node.get"
    public static let nodeDiagnostics = "mesh.v1.provision.node.diagnostics"
    public static let nodeSetHub = "mesh.v1.provision.node.set_hub"
    public static let licenseGet = "mesh.v1.provision.license.get"
    public static let auditList = "mesh.v1.provision.audit.list"
    public static let policyGet = "mesh.v1.provision.policy.get"
    public static let policyUpdate = "mesh.v1.provision.policy.update"
    public static let policyCheck = "mesh.v1.provision.policy.check"
    public static let tagsSet = "mesh.v1.provision.tags.set"

    /// Handshake reports: `mesh.v1.reports.<tenant>.<node>.handshake`, served by ProvisionSvc.
    public static func handshakeReport(tenant: String, node: String) -> String { "mesh.v1.reports.\(tenant).\(node).handshake" }
    public static let handshakeReportWildcard = "mesh.v1.reports.*.*.handshake"

    // FanoutSvc
    /// ProvisionSvc's outbox relay hands FanoutSvc a tenant's changes: `mesh.v1.fanout.ingest`.
    public static let fanoutIngest = "mesh.v1.fanout.ingest"
    /// The per-tenant peer stream: `mesh.v1.peers.updated.<tenant>`.
    public static func peersUpdated(tenant: String) -> String { "mesh.v1.peers.updated.\(tenant)" }
    public static let peersUpdatedWildcard = "mesh.v1.peers.updated.*"
    /// SyncFromCP: `mesh.v1.fanout.sync.<tenant>.<node>`.
    public static func sync(tenant: String, node: String) -> String { "mesh.v1.fanout.sync.\(tenant).\(node)" }
    public static let syncWildcard = "mesh.v1.fanout.sync.*.*"
    /// Catch-up after a paged sync: `mesh.v1.fanout.changes.<tenant>.<node>`.
    public static func changes(tenant: String, node: String) -> String { "mesh.v1.fanout.changes.\(tenant).\(node)" }
    public static let changesWildcard = "mesh.v1.fanout.changes.*.*"
    /// The newest revision of a tenant: `mesh.v1.fanout.revision.<tenant>`.
    public static func revision(tenant: String) -> String { "mesh.v1.fanout.revision.\(tenant)" }
    public static let revisionWildcard = "mesh.v1.fanout.revision.*"

    // NodeApplier (one instance per node)
    public static func nodeState(_ node: String) -> String { "mesh.v1.node.\(node).state" }
    public static func nodePeers(_ node: String) -> String { "mesh.v1.node.\(node).peers" }
    public static func nodeRefresh(_ node: String) -> String { "mesh.v1.node.\(node).refresh" }
}

/// The service names announced on `$SRV.*`.
public enum MeshServiceName {
    public static let allocator = "AllocatorSvc"
    public static let provision = "ProvisionSvc"
    public static let fanout = "FanoutSvc"
    public static let nodeApplier = "NodeApplier"
    public static let gateway = "Gateway"
}

/// The version every service reports (SemVer).
public enum MeshVersion {
    public static let current = "0.9.0"
}

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
    public static let deviceGet = "mesh.v1.provision.device.get"
    public static let deviceSuspend = "mesh.v1.provision.device.suspend"
    public static let deviceResume = "mesh.v1.provision.device.resume"
    public static let deviceExpiry = "mesh.v1.provision.device.expiry"
    public static let settingsGet = "mesh.v1.provision.settings.get"
    public static let settingsUpdate = "mesh.v1.provision.settings.update"
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
    public static let migrationStatus = "mesh.v1.provision.migration.status"
    public static let migrationCheck = "mesh.v1.provision.migration.check"
    public static let linkCreate = "mesh.v1.provision.link.create"
    public static let linkOpen = "mesh.v1.provision.link.open"
    public static let policyGet = "mesh.v1.provision.policy.get"
    public static let policyUpdate = "mesh.v1.provision.policy.update"
    public static let policyCheck = "mesh.v1.provision.policy.check"
    public static let tagsSet = "mesh.v1.provision.tags.set"

    /// Handshake reports: `mesh.v1.reports.<tenant>.<node>.handshake`, served by ProvisionSvc.
    public static func handshakeReport(tenant: String, node: String) -> String { "mesh.v1.reports.\(tenant).\(node).handshake" }
    public static let handshakeReportWildcard = "mesh.v1.reports.*.*.handshake"
    /// Device status changes (`DeviceStatusChanged`): `mesh.v1.status.<tenant>.devices`, published by
    /// ProvisionSvc after a handshake report changed a device, read by every gateway's live channel.
    public static func deviceStatus(tenant: String) -> String { "mesh.v1.status.\(tenant).devices" }
    public static let deviceStatusWildcard = "mesh.v1.status.*.devices"

    /// A node's certificate for its HTTPS front (the phone fallback):
    /// `mesh.v1.provision.node.certificate.<tenant>.<node>`, served by ProvisionSvc.
    public static func nodeCertificate(tenant: String, node: String) -> String { "mesh.v1.provision.node.certificate.\(tenant).\(node)" }
    public static let nodeCertificateWildcard = "mesh.v1.provision.node.certificate.*.*"

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

    /// Every subject a service answers requests on: the pattern (`*` stands for a tenant or node
    /// token) and the service that serves it. Tests are driven by this list (the bus fuzzer sends
    /// bad input to each subject) and compare it with what the running services announce in
    /// `$SRV.INFO`, so a request subject added to a service must be added here too.
    public static let served: [ServedSubject] = [
        ServedSubject(MeshServiceName.allocator, allocatorTenant),
        ServedSubject(MeshServiceName.allocator, allocatorAllocate),
        ServedSubject(MeshServiceName.allocator, allocatorRelease),
        ServedSubject(MeshServiceName.allocator, allocatorLease),
        ServedSubject(MeshServiceName.allocator, allocatorUsage),
        ServedSubject(MeshServiceName.provision, tenantCreate),
        ServedSubject(MeshServiceName.provision, tenantUpdate),
        ServedSubject(MeshServiceName.provision, tenantGet),
        ServedSubject(MeshServiceName.provision, tenantList),
        ServedSubject(MeshServiceName.provision, userCreate),
        ServedSubject(MeshServiceName.provision, userGet),
        ServedSubject(MeshServiceName.provision, userList),
        ServedSubject(MeshServiceName.provision, userInvite),
        ServedSubject(MeshServiceName.provision, userRole),
        ServedSubject(MeshServiceName.provision, userDelete),
        ServedSubject(MeshServiceName.provision, callerIdentify),
        ServedSubject(MeshServiceName.provision, signInStart),
        ServedSubject(MeshServiceName.provision, signInFinish),
        ServedSubject(MeshServiceName.provision, sessionCreate),
        ServedSubject(MeshServiceName.provision, sessionEnd),
        ServedSubject(MeshServiceName.provision, tokenCreate),
        ServedSubject(MeshServiceName.provision, tokenList),
        ServedSubject(MeshServiceName.provision, tokenRevoke),
        ServedSubject(MeshServiceName.provision, tokenAuthenticate),
        ServedSubject(MeshServiceName.provision, deviceCreate),
        ServedSubject(MeshServiceName.provision, deviceDelete),
        ServedSubject(MeshServiceName.provision, deviceList),
        ServedSubject(MeshServiceName.provision, deviceRename),
        ServedSubject(MeshServiceName.provision, deviceReissue),
        ServedSubject(MeshServiceName.provision, deviceGet),
        ServedSubject(MeshServiceName.provision, deviceSuspend),
        ServedSubject(MeshServiceName.provision, deviceResume),
        ServedSubject(MeshServiceName.provision, deviceExpiry),
        ServedSubject(MeshServiceName.provision, settingsGet),
        ServedSubject(MeshServiceName.provision, settingsUpdate),
        ServedSubject(MeshServiceName.provision, enrollmentCreate),
        ServedSubject(MeshServiceName.provision, nodeRegister),
        ServedSubject(MeshServiceName.provision, nodeDeregister),
        ServedSubject(MeshServiceName.provision, nodeList),
        ServedSubject(MeshServiceName.provision, nodeGet),
        ServedSubject(MeshServiceName.provision, nodeDiagnostics),
        ServedSubject(MeshServiceName.provision, nodeSetHub),
        ServedSubject(MeshServiceName.provision, licenseGet),
        ServedSubject(MeshServiceName.provision, auditList),
        ServedSubject(MeshServiceName.provision, migrationStatus),
        ServedSubject(MeshServiceName.provision, migrationCheck),
        ServedSubject(MeshServiceName.provision, linkCreate),
        ServedSubject(MeshServiceName.provision, linkOpen),
        ServedSubject(MeshServiceName.provision, policyGet),
        ServedSubject(MeshServiceName.provision, policyUpdate),
        ServedSubject(MeshServiceName.provision, policyCheck),
        ServedSubject(MeshServiceName.provision, tagsSet),
        ServedSubject(MeshServiceName.provision, nodeCertificateWildcard),
        ServedSubject(MeshServiceName.provision, handshakeReportWildcard),
        ServedSubject(MeshServiceName.fanout, fanoutIngest),
        ServedSubject(MeshServiceName.fanout, syncWildcard),
        ServedSubject(MeshServiceName.fanout, changesWildcard),
        ServedSubject(MeshServiceName.fanout, revisionWildcard),
        ServedSubject(MeshServiceName.nodeApplier, nodeState("*")),
        ServedSubject(MeshServiceName.nodeApplier, nodePeers("*")),
        ServedSubject(MeshServiceName.nodeApplier, nodeRefresh("*")),
    ]
}

/// A request subject (pattern) and the service that answers it (``MeshSubjects/served``).
public struct ServedSubject: Sendable, Hashable, CustomStringConvertible {
    /// The service name announced on `$SRV.*` (``MeshServiceName``).
    public let service: String
    /// The subject, with `*` for each tenant or node token.
    public let subject: String

    public init(_ service: String, _ subject: String) {
        self.service = service
        self.subject = subject
    }

    public var description: String { "\(service) \(subject)" }

    /// Whether a concrete subject (or the same pattern) falls under this pattern, token by token.
    public func matches(_ other: String) -> Bool {
        let mine = subject.split(separator: ".", omittingEmptySubsequences: false)
        let theirs = other.split(separator: ".", omittingEmptySubsequences: false)
        guard mine.count == theirs.count else { return false }
        return zip(mine, theirs).allSatisfy { $0 == "*" || $0 == $1 }
    }
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

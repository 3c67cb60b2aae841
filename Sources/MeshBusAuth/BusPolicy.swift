import MeshDomain

/// Who may do what on the bus. Each identity gets the least it needs; docs/security.md has the
/// same table and the tests check every line of it against a real nats-server.
public enum BusPolicy {
    /// Reply inboxes of a node: `_INBOX.node.<node>`. The node's connection uses it as its inbox
    /// prefix and may subscribe to nothing else under `_INBOX`.
    public static func nodeInboxPrefix(_ node: String) -> String { "_INBOX.node.\(node)" }

    /// Reply inboxes of a node that is registering with the shared bootstrap identity.
    public static let enrollInboxPrefix = "_INBOX.enroll"

    /// Reply inboxes of the monitor identity (`meshctl service ping`, container health checks).
    public static let monitorInboxPrefix = "_INBOX.monitor"

    /// How long the permission to answer a received request lasts.
    static let responseTTL: Duration = .seconds(60)

    /// A node, bound to its id and tenant: its own tenant's peer stream, its own control subjects
    /// and inbox, its own reports, SyncFromCP and catch-up, its tenant's revision, and replies to what
    /// it received.
    public static func node(tenant: String, node: String) -> BusPermissions {
        BusPermissions(
            publishAllow: [
                MeshSubjects.handshakeReport(tenant: tenant, node: node),
                MeshSubjects.sync(tenant: tenant, node: node),
                MeshSubjects.changes(tenant: tenant, node: node),
                MeshSubjects.revision(tenant: tenant),
            ],
            subscribeAllow: [
                MeshSubjects.peersUpdated(tenant: tenant),
                "mesh.v1.node.\(node).>",
                nodeInboxPrefix(node) + ".>",
                // ADR-32 discovery, answered under the node's own id only.
                "$SRV.PING", "$SRV.INFO", "$SRV.STATS",
                "$SRV.*.\(MeshServiceName.nodeApplier)", "$SRV.*.\(MeshServiceName.nodeApplier).\(node)",
            ],
            responses: 1, responseTTL: responseTTL)
    }

    /// The shared identity of nodes that are not registered yet: the registration request and its reply.
    public static let enroll = BusPermissions(
        publishAllow: [MeshSubjects.nodeRegister],
        subscribeAllow: [enrollInboxPrefix + ".>"])

    /// The control-plane identities `meshctl bus init` creates.
    public enum Service: String, Sendable, CaseIterable {
        case allocator
        case provision
        case fanout
        case gateway
        /// meshctl and other operator tools.
        case admin
        /// Health checks: ADR-32 PING of the services, replies on its own inboxes; nothing else.
        case monitor

        /// The user name in its JWT.
        public var userName: String {
            switch self {
            case .allocator: MeshServiceName.allocator
            case .provision: MeshServiceName.provision
            case .fanout: MeshServiceName.fanout
            case .gateway: MeshServiceName.gateway
            case .admin: "meshctl"
            case .monitor: "monitor"
            }
        }

        /// What the service may do. Services answer requests on `_INBOX.>` and through response permissions.
        public var permissions: BusPermissions {
            let inbox = "_INBOX.>", discovery = "$SRV.>"
            switch self {
            case .allocator:
                return BusPermissions(publishAllow: [inbox], subscribeAllow: ["mesh.v1.allocator.>", discovery, inbox],
                                      responses: 1, responseTTL: responseTTL)
            case .provision:
                // The outbox relay hands changes to FanoutSvc; diagnostics read a node's live peers.
                return BusPermissions(publishAllow: [inbox, "mesh.v1.allocator.>", MeshSubjects.fanoutIngest, "mesh.v1.node.*.peers"],
                                      subscribeAllow: ["mesh.v1.provision.>", "mesh.v1.reports.>", discovery, inbox],
                                      responses: 1, responseTTL: responseTTL)
            case .fanout:
                return BusPermissions(publishAllow: [inbox, "mesh.v1.peers.updated.>"],
                                      subscribeAllow: ["mesh.v1.fanout.>", discovery, inbox],
                                      responses: 1, responseTTL: responseTTL)
            case .gateway:
                return BusPermissions(publishAllow: [inbox, discovery, "mesh.v1.provision.>", "mesh.v1.fanout.sync.>", "mesh.v1.fanout.changes.>",
                                                     "mesh.v1.fanout.revision.>", "mesh.v1.node.>"],
                                      subscribeAllow: [discovery, inbox], responses: 1, responseTTL: responseTTL)
            case .admin:
                // Everything an operator needs, but never a forged change: only ProvisionSvc feeds
                // FanoutSvc, and only FanoutSvc publishes to nodes.
                return BusPermissions(publishAllow: [inbox, discovery, "mesh.v1.>"],
                                      publishDeny: ["mesh.v1.peers.updated.>", MeshSubjects.fanoutIngest],
                                      subscribeAllow: [inbox], responses: 1, responseTTL: responseTTL)
            case .monitor:
                return BusPermissions(publishAllow: ["$SRV.PING", "$SRV.PING.>"], subscribeAllow: [monitorInboxPrefix + ".>"])
            }
        }
    }
}

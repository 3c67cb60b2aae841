import Foundation
import Logging
import MeshBus
import MeshBusAuth
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshWireGuard
import ServiceKit
import ServiceLifecycle

/// Everything one node runs, wired together: registration, the interface, the agent, the bus
/// subscriptions and timers, handshake reports, the node's control subjects, and mesh DNS.
public enum NodeRuntime {
    /// Registers (once; the result is kept in the state directory), prepares the interface and runs
    /// until SIGTERM/SIGINT. The interface stays up afterwards, so a restart does not cut traffic.
    public static func run(_ config: NodeConfiguration, common: CommonOptions, enrollmentToken: String?) async throws {
        try await ServiceHost.run(name: MeshServiceName.nodeApplier, description: "applies mesh changes to \(config.interface)", common: common,
                                  connect: { initial in try await connectNode(config, common: common, token: enrollmentToken, logger: initial) },
                                  build: { ctx, prepared in try await build(config, common: common, bus: ctx.bus, identity: prepared.0,
                                                                            privateKey: prepared.1, logger: ctx.logger) })
    }

    /// Registers if needed and connects with the node's own identity.
    static func connectNode(_ config: NodeConfiguration, common: CommonOptions, token: String?,
                            logger initial: Logger) async throws -> (BusConnection, (NodeIdentity, String), Logger) {
        var logger = initial
        logger[metadataKey: "node.name"] = "\(config.name)"
        let files = NodeStateStore(directory: config.stateDirectory)
        let keys = try files.keyPair()
        // Until it is registered the node speaks with the shared bootstrap identity (MESH_NATS_CREDS[_FILE]),
        // which may only send the registration and read its reply; afterwards with its own key and JWT.
        let base = try common.busConfiguration(name: MeshServiceName.nodeApplier, inboxPrefix: BusPolicy.enrollInboxPrefix)
        let bus: BusConnection
        let identity: NodeIdentity
        if let saved = files.identity(), saved.publicKey == keys.publicKey {
            identity = saved
            bus = try await BusConnection.connect(try nodeBusConfiguration(base, identity: saved, files: files), logger: logger)
        } else {
            let enrollBus = try await BusConnection.connect(base, logger: logger)
            identity = try await register(config, files: files, keys: keys, bus: enrollBus, token: token, logger: logger)
            if identity.busUserJWT != nil {
                await enrollBus.drain(timeout: .seconds(2))
                bus = try await BusConnection.connect(try nodeBusConfiguration(base, identity: identity, files: files), logger: logger)
            } else {
                bus = enrollBus
            }
        }
        logger[metadataKey: "node.id"] = "\(identity.nodeID)"
        logger[metadataKey: "tenant.id"] = "\(identity.tenantID)"
        return (bus, (identity, keys.privateKey), logger)
    }

    /// The node's parts: the interface, the agent, its loops, handshake reports, the control subjects
    /// and mesh DNS.
    static func build(_ config: NodeConfiguration, common: CommonOptions, bus: BusConnection, identity: NodeIdentity, privateKey: String,
                      logger: Logger) async throws -> ServiceParts {
        let backend = try await InterfaceSetup.prepare(config, identity: identity, privateKey: privateKey, logger: logger)
        let fanout = FanoutClient(bus: bus)
        let enforcer = PolicyEnforcer(filter: config.policyFilter ? NFTablesFilter(nft: config.nft, conntrack: config.conntrack) : nil,
                                      interface: config.interface, logger: logger)
        let dnsFilter = DNSPolicyFilter()
        let agent = NodeAgent(identity: identity, interface: config.interface, backend: backend, logger: logger,
                              enforcer: enforcer, dnsFilter: dnsFilter) { () async throws(MeshError) in
            try await fanout.fullView(tenantID: identity.tenantID, nodeID: identity.nodeID)
        }
        let dns = MeshDNSWiring(config: config, identity: identity, logger: logger, dnsFilter: dnsFilter)
        dns.attach(to: agent)
        let readings = InterfaceReadings(privateKey: privateKey)
        let control = NodeControl(agent: agent, backend: backend, readings: readings, config: config, dns: dns)
        let log = logger
        let reporter = HandshakeReporter(agent: agent, backend: backend, readings: readings, interval: config.handshakePollInterval,
                                         logger: logger) { report in
            do {
                log.trace("handshake report", metadata: ["peers": "\(report.peers.map { "\($0.publicKey.prefix(8)):\($0.lastHandshakeMs)" })"])
                try bus.publish(MeshSubjects.handshakeReport(tenant: identity.tenantID, node: identity.nodeID), try report.serializedBytes())
            } catch {
                log.debug("handshake report not sent", metadata: ["error": "\(error)"])
            }
        }
        var https: [any Service] = []
        if config.httpsPort != 0 {
            https.append(try NodeHTTPSService(config: config, agent: agent, provision: ProvisionClient(bus: bus), logger: logger))
        }
        logger.info("node starting", metadata: ["interface": "\(config.interface)", "backend": "\(backend.kind)"])
        // The service id is the node id: a node's credentials let it answer discovery under its own id only.
        return ServiceParts(endpoints: control.endpoints(),
                            services: [AgentService(agent: agent, bus: bus, fanout: fanout, config: config, logger: logger, reporter: reporter),
                                       FunctionService { await reporter.run() },
                                       InterfaceWatch(readings: readings, interface: config.interface,
                                                      interval: config.interfaceCheckInterval, logger: logger)] + dns.services() + https,
                            serviceID: identity.nodeID, metadata: ["node_id": identity.nodeID, "tenant_id": identity.tenantID],
                            onStop: { log.info("node stopped; the interface stays up") })
    }

    /// The connection settings of a registered node: its own key and JWT when it has them (the inbox
    /// prefix bound to its id), otherwise the configured ones (an open bus).
    static func nodeBusConfiguration(_ base: BusConfiguration, identity: NodeIdentity, files: NodeStateStore) throws -> BusConfiguration {
        var c = base
        c.inboxPrefix = identity.inboxPrefix ?? BusPolicy.nodeInboxPrefix(identity.nodeID)
        if let jwt = identity.busUserJWT {
            guard let key = files.busKey() else {
                throw MeshError.failedPrecondition("\(files.busKeyURL.path) is missing: remove node.json and enroll this node again")
            }
            c.credentials = .jwt(jwt: jwt, seed: key.seed)
        }
        return c
    }

    /// A new registration made with the enrollment token and a new bus key of the node's own.
    static func register(_ config: NodeConfiguration, files: NodeStateStore, keys: WireGuardKeyPair, bus: BusConnection,
                         token: String?, logger: Logger) async throws -> NodeIdentity {
        guard let token, !token.isEmpty else {
            throw MeshError.unauthenticated("this node is not registered yet: set MESH_NODE_ENROLLMENT_TOKEN (or _FILE) to a token from `meshctl node enroll`")
        }
        var req = Mesh_V1_RegisterNodeRequest()
        req.enrollmentToken = token
        req.name = config.name
        req.publicKey = keys.publicKey
        req.endpoint = config.endpoint
        req.listenPort = UInt32(config.listenPort)
        req.busPublicKey = try files.newBusKey().publicKey
        let client = ProvisionClient(bus: bus)
        var delay = Duration.milliseconds(250)
        while true {
            do {
                let r = try await client.registerNode(req)
                let identity = NodeIdentity(registration: r)
                try files.save(identity)
                logger.info("registered", metadata: ["node.id": "\(identity.nodeID)", "ipv4": "\(identity.ipv4)", "dns": "\(identity.dnsName)"])
                return identity
            } catch let error as MeshError {
                switch error {
                case .unavailable, .deadlineExceeded:
                    logger.warning("control plane not reachable; retrying registration", metadata: ["error": "\(error)"])
                    try await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                default:
                    throw error
                }
            }
        }
    }
}

/// The agent's loops: the command queue, the tenant's peer stream, a resync after every bus
/// reconnect, the periodic full resync, and the cheap revision check.
struct AgentService: Service {
    let agent: NodeAgent
    let bus: BusConnection
    let fanout: FanoutClient
    let config: NodeConfiguration
    let logger: Logger
    let reporter: HandshakeReporter

    func run() async throws {
        let tenant = agent.identity.tenantID
        let updates = try bus.subscribe(MeshSubjects.peersUpdated(tenant: tenant))
        let events = bus.events()
        let agent = self.agent, fanout = self.fanout, config = self.config
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await agent.run() }
                group.addTask {
                    for await m in updates {
                        agent.receive(subject: m.subject, payload: m.payload)
                    }
                }
                group.addTask {
                    // During an outage the interface keeps what it has; afterwards, resync by diff.
                    for await e in events where e == .reconnected || e == .connected {
                        agent.requestSync(reason: "bus \(e)")
                        reporter.reportEverythingNext()
                    }
                }
                group.addTask {
                    var backoff = Duration.milliseconds(200)
                    // The first sync, retried until the control plane answers.
                    while !Task.isCancelled {
                        if (try? await agent.refresh(reason: "start")) != nil { break }
                        try? await Task.sleep(for: backoff)
                        backoff = min(backoff * 2, .seconds(5))
                    }
                    var sinceResync = Duration.zero
                    var lag = RevisionLag()
                    while !Task.isCancelled {
                        try? await Task.sleep(for: config.revisionCheckInterval)
                        sinceResync += config.revisionCheckInterval
                        if sinceResync >= config.resyncInterval {
                            sinceResync = .zero
                            agent.requestSync(reason: "periodic")
                        } else if let tip = try? await fanout.revision(tenantID: tenant),
                                  let missed = lag.check(tip: tip, applied: agent.revision) {
                            agent.requestSync(reason: "behind: \(agent.revision) < \(missed)")
                        }
                    }
                }
            }
        }
        agent.finish()
        updates.unsubscribe()
    }
}

/// Decides whether the node fell behind the tenant's newest revision. A tip ahead of the applied
/// revision is normal while deltas are in flight (during a burst of changes, always): the node is
/// behind only if it has still not reached, by this check, the tip the previous check saw. A delta
/// lost on the bus is then caught one interval later, and a node busy applying a burst is not sent
/// into a full sync it does not need.
public struct RevisionLag: Sendable {
    private var previousTip: UInt64 = 0

    public init() {}

    /// Records this check's tip; returns the revision the node missed, or nil if it is not behind.
    public mutating func check(tip: UInt64, applied: UInt64) -> UInt64? {
        defer { previousTip = max(previousTip, tip) }
        return applied < previousTip ? previousTip : nil
    }
}

/// A service from a closure that runs until cancelled (cancelled on graceful shutdown).
struct FunctionService: Service {
    let body: @Sendable () async -> Void

    init(_ body: @escaping @Sendable () async -> Void) { self.body = body }

    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}

/// The node's control subjects, for the gateway: state, live peer dump, refresh.
struct NodeControl: Sendable {
    let agent: NodeAgent
    let backend: any WireGuardBackend
    let readings: InterfaceReadings
    let config: NodeConfiguration
    let dns: MeshDNSWiring

    func endpoints() -> [ServiceEndpoint] {
        let id = agent.identity.nodeID
        return [
            .proto("state", subject: MeshSubjects.nodeState(id)) { (_: Mesh_V1_NodeStateRequest, _) in try await state() },
            .proto("peers", subject: MeshSubjects.nodePeers(id)) { (_: Mesh_V1_PeerDumpRequest, _) in try await dump() },
            .proto("refresh", subject: MeshSubjects.nodeRefresh(id)) { (_: Mesh_V1_RefreshRequest, _) in
                do {
                    return try await agent.refresh(reason: "requested")
                } catch let e as MeshError {
                    throw e
                } catch {
                    throw MeshError.unavailable("refresh failed: \(error)")
                }
            },
        ]
    }

    func state() async throws(MeshError) -> Mesh_V1_NodeState {
        let s = agent.status()
        var st = Mesh_V1_NodeState()
        st.nodeID = agent.identity.nodeID
        st.tenantID = agent.identity.tenantID
        st.interfaceName = config.interface
        st.backend = backend.kind.rawValue
        st.meshIp = agent.identity.ipv4
        st.meshIpv6 = agent.identity.ipv6
        st.revision = s.revision
        st.lastSyncMs = s.lastSync?.unixMilliseconds ?? 0
        // Nothing is read from the interface here: a state answer must cost nothing, and a dump of a
        // 50,000-peer interface holds wireguard-go's configuration lock for ~200 ms. The peer count is
        // the agent's, which counts only changes the interface accepted (so it goes with `revision`);
        // the listen port and "the interface is there" come from the reporter's last reading.
        if let port = readings.listenPort, readings.lost == nil {
            st.listenPort = UInt32(port)
            st.peerCount = UInt32(s.peers)
            st.active = s.synced
        }
        st.dnsStatus = dns.status()
        if let policy = agent.enforcer?.status() { st.policyStatus = policy }
        return st
    }

    func dump() async throws(MeshError) -> Mesh_V1_PeerDump {
        let device: WireGuardDevice
        do {
            device = try await backend.device(named: config.interface)
        } catch {
            throw .unavailable("cannot read \(config.interface): \(error)")
        }
        let known = agent.identities(ofKeys: device.peers.map(\.publicKey.base64))
        var d = Mesh_V1_PeerDump()
        d.nodeID = agent.identity.nodeID
        d.readAtMs = Date().unixMilliseconds
        d.peers = device.peers.map { PeerStatsMapping.stats($0, known: known[$0.publicKey.base64]) }
        return d
    }
}

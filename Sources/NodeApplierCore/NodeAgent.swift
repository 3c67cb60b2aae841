import Foundation
import Logging
import MeshCore
import MeshNet
import MeshProto
import MeshWireGuard
import Metrics
import Synchronization

/// Applies the control plane's peer list to one WireGuard interface.
///
/// All changes go through one queue consumed by ``run()``, so a delta never interleaves with a full
/// sync. The rules for `PeersUpdated`: revision = last+1 → apply the delta; ≤ last → a duplicate,
/// ignored; a gap → full sync (SyncFromCP, then the diff against the live device). A full sync also
/// runs at start, on request, after a bus reconnect, on a timer, and when the tenant's newest
/// revision is ahead of ours. Only the difference is ever applied.
public final class NodeAgent: Sendable {
    public let identity: NodeIdentity
    public let interface: String
    let wg: any WireGuardBackend
    let logger: Logger
    let sync: @Sendable () async throws(MeshError) -> Mesh_V1_SyncResponse
    let resolver = EndpointResolver()
    let commands: AsyncStream<Command>
    let continuation: AsyncStream<Command>.Continuation
    let state = Mutex(State())
    let observers = Mutex<[@Sendable (ZoneSnapshot) -> Void]>([])

    let applied = Counter(label: "mesh_node_deltas_applied_total")
    let fullSyncs = Counter(label: "mesh_node_full_syncs_total")
    let applyLatency = Metrics.Timer(label: "mesh_node_commit_to_apply_seconds")

    struct State {
        /// Desired peers by id (devices and other nodes; never this node).
        var peers: [String: Mesh_V1_Peer] = [:]
        var selfPeer: Mesh_V1_Peer?
        var revision: UInt64 = 0
        var synced = false
        var lastSync: Date?
        var removedFromMesh = false
    }

    /// The pending retry of a failed background sync (``retrySoon()``).
    private let retry = Mutex<(pending: Bool, delay: Duration)>((false, .milliseconds(100)))

    enum Command: Sendable {
        case update(Mesh_V1_PeersUpdated)
        case sync(reason: String, reply: CheckedContinuation<Mesh_V1_RefreshResponse, any Error>?)
    }

    /// What DNS serves: every peer's name and addresses plus this node's, at a revision.
    public struct ZoneSnapshot: Sendable {
        public var revision: UInt64
        public var peers: [Mesh_V1_Peer]
    }

    public init(identity: NodeIdentity, interface: String, backend: any WireGuardBackend, logger: Logger,
                sync: @escaping @Sendable () async throws(MeshError) -> Mesh_V1_SyncResponse) {
        self.identity = identity
        self.interface = interface
        self.wg = backend
        self.logger = logger
        self.sync = sync
        (commands, continuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    // MARK: Inputs

    /// Checks a message from the bus before it is queued: it must have come on this node's tenant
    /// subject (`mesh.v1.peers.updated.<tenant>`) and name the same tenant. Anything else is
    /// dropped and logged; the revision is checked when it is applied.
    @discardableResult
    public func receive(subject: String, payload: [UInt8]) -> Mesh_V1_PeersUpdated? {
        let expected = MeshSubjects.peersUpdated(tenant: identity.tenantID)
        guard subject == expected else {
            logger.warning("ignoring a peer update on another subject", metadata: ["nats.subject": "\(subject)"])
            return nil
        }
        guard let u = try? Mesh_V1_PeersUpdated(serializedBytes: payload) else {
            logger.warning("ignoring a malformed peer update", metadata: ["nats.subject": "\(subject)"])
            return nil
        }
        guard u.tenantID == identity.tenantID else {
            logger.warning("ignoring an update for another tenant", metadata: ["tenant.id": "\(u.tenantID)"])
            return nil
        }
        submit(u)
        return u
    }

    /// Queues a PeersUpdated message (from the tenant's subject).
    public func submit(_ update: Mesh_V1_PeersUpdated) {
        continuation.yield(.update(update))
    }

    /// Queues a full sync without waiting for it.
    public func requestSync(reason: String) {
        continuation.yield(.sync(reason: reason, reply: nil))
    }

    /// Runs a full sync and returns what it changed.
    public func refresh(reason: String) async throws -> Mesh_V1_RefreshResponse {
        try await withCheckedThrowingContinuation { cont in
            continuation.yield(.sync(reason: reason, reply: cont))
        }
    }

    /// Called with the peer set after every change (mesh DNS, hosts file).
    public func observe(_ observer: @escaping @Sendable (ZoneSnapshot) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Processes the queue until cancelled.
    public func run() async {
        for await command in commands {
            switch command {
            case .update(let u):
                await handle(u)
            case .sync(let reason, let reply):
                do {
                    let r = try await fullSync(reason: reason)
                    reply?.resume(returning: r)
                } catch {
                    logger.warning("full sync failed", metadata: ["reason": "\(reason)", "error": "\(error)"])
                    // A caller waiting for the answer retries on its own; a background sync does not.
                    if let reply { reply.resume(throwing: error) } else { retrySoon() }
                }
            }
        }
    }

    /// Stops ``run()``.
    public func finish() { continuation.finish() }

    /// Queues another full sync after a failed one, with a backoff (0.1 s doubling to 5 s, reset by
    /// a sync that succeeds). Without it a node whose sync request failed (its FanoutSvc replica was
    /// killed while answering, say) stayed behind until the next message or revision check.
    func retrySoon() {
        guard !state.withLock({ $0.removedFromMesh }) else { return }
        let delay: Duration? = retry.withLock { r in
            guard !r.pending else { return nil }
            r.pending = true
            defer { r.delay = min(r.delay * 2, .seconds(5)) }
            return r.delay
        }
        guard let delay else { return }
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard let self else { return }
            self.retry.withLock { $0.pending = false }
            self.requestSync(reason: "retry after a failed sync")
        }
    }

    // MARK: Deltas

    func handle(_ u: Mesh_V1_PeersUpdated) async {
        guard u.tenantID == identity.tenantID else {
            logger.warning("ignoring an update for another tenant", metadata: ["tenant.id": "\(u.tenantID)"])
            return
        }
        let (synced, last) = state.withLock { ($0.synced, $0.revision) }
        if !synced || u.revision <= last { return }  // a sync is due anyway, or a duplicate
        if u.revision != last + 1 {
            logger.info("revision gap; full sync", metadata: ["revision.last": "\(last)", "revision.got": "\(u.revision)"])
            if (try? await fullSync(reason: "gap \(last)->\(u.revision)")) == nil { retrySoon() }
            return
        }
        do {
            try await apply(u)
            state.withLock { $0.revision = u.revision }
            applied.increment()
            if u.committedAtMs > 0 {
                applyLatency.recordMilliseconds(max(0, Date().unixMilliseconds - u.committedAtMs))
            }
            notifyObservers()
        } catch {
            logger.warning("applying a delta failed; full sync", metadata: ["revision": "\(u.revision)", "error": "\(error)"])
            if (try? await fullSync(reason: "apply failed")) == nil { retrySoon() }
        }
    }

    func apply(_ u: Mesh_V1_PeersUpdated) async throws {
        var configs: [WireGuardPeerConfig] = []
        let myID = identity.nodeID
        for p in u.removed {
            if p.id == myID {
                logger.error("this node was removed from the mesh; dropping every peer")
                state.withLock { $0.removedFromMesh = true }
                let all = state.withLock { Array($0.peers.values) }
                try await configure(all.compactMap { WireGuardKey(base64: $0.publicKey) }.map { .removing($0) })
                state.withLock { $0.peers.removeAll() }
                return
            }
            let old = state.withLock { $0.peers.removeValue(forKey: p.id) }
            if let key = WireGuardKey(base64: old?.publicKey ?? p.publicKey) { configs.append(.removing(key)) }
        }
        for p in u.added + u.changed where p.id != myID {
            guard let d = DesiredPeer(p) else {
                logger.warning("skipping a malformed peer", metadata: ["peer.id": "\(p.id)"])
                continue
            }
            let old = state.withLock { s -> Mesh_V1_Peer? in
                defer { s.peers[p.id] = p }
                return s.peers[p.id]
            }
            if let old, old.publicKey != p.publicKey, let oldKey = WireGuardKey(base64: old.publicKey) {
                configs.append(.removing(oldKey))
            }
            var resolved = d
            if let e = d.endpoint { resolved.endpoint = await resolver.resolve(e) }
            if old == nil || old?.publicKey != p.publicKey {
                configs += PeerDiff(add: [resolved], update: [], remove: []).configs
            } else {
                configs += PeerDiff.forChange(resolved, current: WireGuardPeer(publicKey: d.publicKey))
            }
        }
        try await configure(configs)
    }

    func configure(_ peers: [WireGuardPeerConfig]) async throws {
        guard !peers.isEmpty else { return }
        try await wg.configure(device: interface, WireGuardConfig(peers: peers, reportSkippedUpdateOnlyPeers: false))
    }

    // MARK: Full sync

    /// SyncFromCP, then apply the diff against the live device.
    @discardableResult
    func fullSync(reason: String) async throws -> Mesh_V1_RefreshResponse {
        let list: Mesh_V1_SyncResponse
        do {
            list = try await sync()
        } catch {
            if case .notFound = error {
                // Removed from the mesh (deregistered): hold no peers.
                logger.error("the control plane does not know this node; dropping every peer", metadata: ["error": "\(error)"])
                let live = try await wg.device(named: interface)
                try await configure(live.peers.map { .removing($0.publicKey) })
                state.withLock {
                    $0.peers.removeAll()
                    $0.removedFromMesh = true
                }
            }
            throw error
        }
        // The reply must be this node's own list: its tenant, and its own entry when it has one.
        guard list.tenantID == identity.tenantID, !list.hasSelf_p || list.self_p.id == identity.nodeID else {
            logger.error("ignoring a peer list for another tenant or node",
                         metadata: ["tenant.id": "\(list.tenantID)", "peer.id": "\(list.self_p.id)"])
            throw MeshError.permissionDenied("the peer list is not this node's")
        }
        var desired: [DesiredPeer] = []
        for p in list.peers where p.id != identity.nodeID {
            guard var d = DesiredPeer(p) else {
                logger.warning("skipping a malformed peer", metadata: ["peer.id": "\(p.id)"])
                continue
            }
            if let e = d.endpoint { d.endpoint = await resolver.resolve(e) }
            desired.append(d)
        }
        let live = try await wg.device(named: interface)
        let diff = PeerDiff(current: live.peers, desired: desired)
        try await configure(diff.configs)
        state.withLock { s in
            s.peers = Dictionary(list.peers.filter { $0.id != identity.nodeID }.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            s.selfPeer = list.self_p
            s.revision = list.revision
            s.synced = true
            s.lastSync = Date()
            s.removedFromMesh = false
        }
        retry.withLock { $0.delay = .milliseconds(100) }
        fullSyncs.increment()
        notifyObservers()
        logger.info("full sync", metadata: ["reason": "\(reason)", "revision": "\(list.revision)", "peers": "\(desired.count)",
                                            "added": "\(diff.add.count)", "changed": "\(diff.update.count)", "removed": "\(diff.remove.count)"])
        var r = Mesh_V1_RefreshResponse()
        r.revision = list.revision
        r.added = UInt32(diff.add.count)
        r.changed = UInt32(diff.update.count)
        r.removed = UInt32(diff.remove.count)
        return r
    }

    // MARK: Reading

    /// The revision applied last.
    public var revision: UInt64 { state.withLock { $0.revision } }

    /// The desired peers by public key (for reports and dumps).
    public func peersByKey() -> [String: Mesh_V1_Peer] {
        state.withLock { s in Dictionary(s.peers.values.map { ($0.publicKey, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    /// Revision, sync time, peer count.
    public func status() -> (revision: UInt64, lastSync: Date?, peers: Int, synced: Bool) {
        state.withLock { ($0.revision, $0.lastSync, $0.peers.count, $0.synced) }
    }

    func notifyObservers() {
        let snapshot = state.withLock { s in ZoneSnapshot(revision: s.revision, peers: Array(s.peers.values) + (s.selfPeer.map { [$0] } ?? [])) }
        for o in observers.withLock({ $0 }) { o(snapshot) }
    }
}

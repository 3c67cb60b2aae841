import Foundation
import Logging
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import MeshWireGuard
import Metrics
import Synchronization

/// Applies the control plane's view of the tenant to one WireGuard interface.
///
/// The agent keeps the tenant's members and settings (``MeshState``); the peers the interface holds
/// are what ``PeerCatalog`` makes of them, for a delta and a full sync alike. All changes go through
/// one queue consumed by ``run()``, so a delta never interleaves with a full sync. The rules for
/// `PeersUpdated`: revision = last+1 → apply the change; ≤ last → a duplicate, ignored; a gap →
/// full sync. A full sync (SyncFromCP, then the diff against the live device) also runs at start, on
/// request, after a bus reconnect, on a timer, and when the tenant's newest revision is ahead of
/// ours. Either way only the difference reaches the interface (``PeerDiff``), and the agent's state
/// changes only after the interface accepted it.
public final class NodeAgent: Sendable {
    public let identity: NodeIdentity
    public let interface: String
    let wg: any WireGuardBackend
    let logger: Logger
    let fetch: @Sendable () async throws(MeshError) -> MeshView
    /// The packet filter of the tenant's access policy (nil: not enforced here) and the mesh DNS's
    /// view of it (docs/policies.md).
    public let enforcer: PolicyEnforcer?
    public let dnsFilter: DNSPolicyFilter?
    let resolver = EndpointResolver()
    let commands = CommandQueue()
    let state: Mutex<State>
    let observers = Mutex<[@Sendable (ZoneUpdate) -> Void]>([])
    let revisionObservers = Mutex<[@Sendable (UInt64) -> Void]>([])
    /// The pending retry of a failed background sync (``retrySoon()``), woken by ``runRetries()``.
    private let retry = Mutex<(delay: Duration, due: Bool, waiter: CheckedContinuation<Void, Never>?)>((.milliseconds(100), false, nil))

    let applied = Counter(label: "mesh_node_deltas_applied_total")
    let fullSyncs = Counter(label: "mesh_node_full_syncs_total")
    let applyLatency = Metrics.Timer(label: "mesh_node_commit_to_apply_seconds")

    struct State {
        var mesh: MeshState
        /// How many peers the interface holds (as PeerCatalog builds them).
        var peerCount = 0
        var synced = false
        var lastSync: Date?
        var removedFromMesh = false
        /// A background sync (``requestSync(reason:)``) waits in the queue: another request adds
        /// nothing, since that sync will fetch the newest view when it runs.
        var backgroundSyncQueued = false
    }

    enum Command: Sendable {
        case update(Mesh_V1_PeersUpdated)
        case sync(reason: String, reply: CheckedContinuation<Mesh_V1_RefreshResponse, any Error>?)
    }

    /// What the mesh DNS must serve after a change: every name (after a full sync or new settings), or
    /// the names one change removed and added.
    public enum ZoneUpdate: Sendable {
        case all(domain: String, records: [(name: String, addresses: [String])], revision: UInt64)
        case changed(removed: [String], added: [(name: String, addresses: [String])], revision: UInt64)
    }

    public init(identity: NodeIdentity, interface: String, backend: any WireGuardBackend, logger: Logger,
                enforcer: PolicyEnforcer? = nil, dnsFilter: DNSPolicyFilter? = nil,
                fetch: @escaping @Sendable () async throws(MeshError) -> MeshView) {
        self.identity = identity
        self.interface = interface
        self.wg = backend
        self.logger = logger
        self.enforcer = enforcer
        self.dnsFilter = dnsFilter
        self.fetch = fetch
        self.state = Mutex(State(mesh: MeshState(viewer: identity.nodeID)))
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
        commands.push(.update(update))
    }

    /// Queues a full sync without waiting for it, unless one is queued already. Requests coalesce:
    /// a full sync of a large mesh can take longer than the interval of the revision check that asks
    /// for it, and queued syncs would otherwise pile up and keep every delta waiting behind them.
    public func requestSync(reason: String) {
        let queue = state.withLock { s -> Bool in
            if s.backgroundSyncQueued { return false }
            s.backgroundSyncQueued = true
            return true
        }
        if queue { commands.push(.sync(reason: reason, reply: nil)) }
    }

    /// Runs a full sync and returns what it changed.
    public func refresh(reason: String) async throws -> Mesh_V1_RefreshResponse {
        try await withCheckedThrowingContinuation { cont in
            if !commands.push(.sync(reason: reason, reply: cont)) { cont.resume(throwing: CancellationError()) }
        }
    }

    /// Called with what the mesh DNS must serve after every change the agent applied.
    public func observe(_ observer: @escaping @Sendable (ZoneUpdate) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Called with the revision after every change or full sync the interface accepted (cheap: no
    /// zone is built for it).
    public func observeRevisions(_ observer: @escaping @Sendable (UInt64) -> Void) {
        revisionObservers.withLock { $0.append(observer) }
    }

    /// Processes the queue (and the retries of failed syncs) until cancelled or finished.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.runRetries() }
            await processCommands()
            group.cancelAll()
        }
    }

    func processCommands() async {
        while let command = await commands.next() {
            switch command {
            case .update(let u):
                await handle(u)
            case .sync(let reason, let reply):
                // A request made from now on needs a sync after this one: it may have seen a newer
                // revision than this sync's fetch returns.
                if reply == nil { state.withLock { $0.backgroundSyncQueued = false } }
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
    public func finish() {
        commands.finish()
        let w = retry.withLock { r -> CheckedContinuation<Void, Never>? in
            defer { r.waiter = nil }
            return r.waiter
        }
        w?.resume()
    }

    /// Asks for another full sync after a failed one, with a backoff (0.1 s doubling to 5 s, reset by
    /// a sync that succeeds). Without it a node whose sync request failed (its FanoutSvc replica was
    /// killed while answering, say) stayed behind until the next message or revision check.
    func retrySoon() {
        guard !state.withLock({ $0.removedFromMesh }) else { return }
        let w = retry.withLock { r -> CheckedContinuation<Void, Never>? in
            r.due = true
            defer { r.waiter = nil }
            return r.waiter
        }
        w?.resume()
    }

    /// Runs the retries ``retrySoon()`` asks for, until cancelled.
    func runRetries() async {
        while !Task.isCancelled {
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = retry.withLock { r -> Bool in
                        if r.due || Task.isCancelled { return true }
                        r.waiter = c
                        return false
                    }
                    if now { c.resume() }
                }
            } onCancel: {
                let w = retry.withLock { r -> CheckedContinuation<Void, Never>? in
                    defer { r.waiter = nil }
                    return r.waiter
                }
                w?.resume()
            }
            guard !Task.isCancelled else { return }
            let delay = retry.withLock { r -> Duration in
                r.due = false
                defer { r.delay = min(r.delay * 2, .seconds(5)) }
                return r.delay
            }
            try? await Task.sleep(for: delay)
            requestSync(reason: "retry after a failed sync")
        }
    }

    // MARK: Deltas

    func handle(_ u: Mesh_V1_PeersUpdated) async {
        guard u.tenantID == identity.tenantID else {
            logger.warning("ignoring an update for another tenant", metadata: ["tenant.id": "\(u.tenantID)"])
            return
        }
        let (synced, last) = state.withLock { ($0.synced, $0.mesh.revision) }
        if !synced || u.revision <= last { return }  // a sync is due anyway, or a duplicate
        if u.revision != last + 1 {
            logger.info("revision gap; full sync", metadata: ["revision.last": "\(last)", "revision.got": "\(u.revision)"])
            if (try? await fullSync(reason: "gap \(last)->\(u.revision)")) == nil { retrySoon() }
            return
        }
        do {
            try await apply(u)
            applied.increment()
            if u.committedAtMs > 0 {
                applyLatency.recordMilliseconds(max(0, Date().unixMilliseconds - u.committedAtMs))
            }
        } catch {
            logger.warning("applying a change failed; full sync", metadata: ["revision": "\(u.revision)", "error": "\(error)"])
            if (try? await fullSync(reason: "apply failed")) == nil { retrySoon() }
        }
    }

    /// Applies one change: the peers it touches, diffed before and after, then the state. Nothing of
    /// the state is copied for a change that touches one member (a copy of a 50,000-member view would
    /// cost more than the change).
    func apply(_ u: Mesh_V1_PeersUpdated) async throws {
        let changed: String? = switch u.change {
        case .upsert(let m): m.id
        case .remove(let r): r.id
        default: nil
        }
        let (t, whole, oldMember, oldRecord, domain) = state.withLock { s in
            let t = s.mesh.prepare(u)
            let whole = t.touched == nil ? (s.mesh.peers(), s.mesh.peers(after: t)) : nil
            let old = changed.flatMap { s.mesh.members[$0] }
            return (t, whole, old, old.flatMap { Self.record($0, s.mesh.settings) }, s.mesh.settings.domain)
        }
        if t.removesViewer {
            logger.error("this node was removed from the mesh; dropping every peer")
            let live = try await wg.device(named: interface)
            try await configure(live.peers.map { .removing($0.publicKey) })
            state.withLock { s in
                s.mesh = MeshState(viewer: identity.nodeID)
                s.peerCount = 0
                s.removedFromMesh = true
            }
            notify(revision: u.revision) { .all(domain: domain, records: [], revision: u.revision) }
            return
        }
        let diff: PeerDiff
        if let touched = t.touched {
            diff = PeerDiff(from: touched.values.compactMap { $0.before.flatMap(DesiredPeer.init) },
                            to: touched.values.compactMap { $0.after.flatMap(DesiredPeer.init) })
        } else {
            diff = PeerDiff(from: whole!.0.compactMap(DesiredPeer.init), to: whole!.1.compactMap(DesiredPeer.init))
        }
        try await configure(await resolved(diff).configs)
        let (mesh, newRecord) = state.withLock { s -> (MeshState, (name: String, addresses: [String])?) in
            s.mesh.commit(t)
            guard let touched = t.touched else {
                s.peerCount = whole!.1.count
                return (s.mesh, nil)
            }
            for p in touched.values {
                if p.before != nil { s.peerCount -= 1 }
                if p.after != nil { s.peerCount += 1 }
            }
            return (s.mesh, changed.flatMap { s.mesh.members[$0] }.flatMap { Self.record($0, s.mesh.settings) })
        }
        notify(revision: mesh.revision) {
            guard t.touched != nil else { return Self.zone(of: mesh) }
            var removed: [String] = []
            if let oldRecord, oldRecord.name != newRecord?.name { removed.append(oldRecord.name) }
            return .changed(removed: removed, added: newRecord.map { [$0] } ?? [], revision: mesh.revision)
        }
        if let dnsFilter {
            if let changed {
                dnsFilter.update(before: oldMember, after: mesh.members[changed], mesh: mesh)
            } else {
                dnsFilter.rebuild(mesh)
            }
        }
        // The peers are in; now the filter (a failure makes the agent resync, which installs it whole).
        try await enforcer?.apply(u, before: oldMember, mesh: mesh)
    }

    /// Resolves the host names of endpoints the diff sets.
    func resolved(_ diff: PeerDiff) async -> PeerDiff {
        var d = diff
        for i in d.add.indices { if let e = d.add[i].endpoint { d.add[i].endpoint = await resolver.resolve(e) } }
        for i in d.update.indices { if let e = d.update[i].endpoint { d.update[i].endpoint = await resolver.resolve(e) } }
        return d
    }

    func configure(_ peers: [WireGuardPeerConfig]) async throws {
        guard !peers.isEmpty else { return }
        try await wg.configure(device: interface, WireGuardConfig(peers: peers, reportSkippedUpdateOnlyPeers: false))
    }

    // MARK: Full sync

    /// SyncFromCP, then apply the diff against the live device.
    @discardableResult
    func fullSync(reason: String) async throws -> Mesh_V1_RefreshResponse {
        let view: MeshView
        do {
            view = try await fetch()
        } catch {
            if case .notFound = error {
                // Removed from the mesh (deregistered): hold no peers.
                logger.error("the control plane does not know this node; dropping every peer", metadata: ["error": "\(error)"])
                let live = try await wg.device(named: interface)
                try await configure(live.peers.map { .removing($0.publicKey) })
                state.withLock {
                    $0.mesh = MeshState(viewer: identity.nodeID)
                    $0.peerCount = 0
                    $0.removedFromMesh = true
                }
            }
            throw error
        }
        // The view must include this node itself.
        guard view.members[identity.nodeID]?.kind == .node else {
            logger.error("ignoring a view without this node", metadata: ["tenant.id": "\(identity.tenantID)"])
            throw MeshError.permissionDenied("the view is not this node's")
        }
        // The view's table is shared, not copied (a persistent map).
        let mesh = MeshState(viewer: identity.nodeID, revision: view.revision, settings: view.settings, table: view.table, policy: view.policy)
        let peers = mesh.peers()
        var desired: [DesiredPeer] = []
        desired.reserveCapacity(peers.count)
        for p in peers {
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
            s.mesh = mesh
            s.peerCount = peers.count
            s.synced = true
            s.lastSync = Date()
            s.removedFromMesh = false
        }
        dnsFilter?.rebuild(mesh)
        notify(revision: mesh.revision) { Self.zone(of: mesh) }
        // The whole filter, after the peers; a failure fails the sync, and it is retried.
        try await enforcer?.sync(mesh)
        retry.withLock { $0.delay = .milliseconds(100) }
        fullSyncs.increment()
        HeapRelease.now()
        logger.info("full sync", metadata: ["reason": "\(reason)", "revision": "\(view.revision)", "peers": "\(desired.count)",
                                            "added": "\(diff.add.count)", "changed": "\(diff.update.count)", "removed": "\(diff.remove.count)"])
        var r = Mesh_V1_RefreshResponse()
        r.revision = view.revision
        r.added = UInt32(diff.add.count)
        r.changed = UInt32(diff.update.count)
        r.removed = UInt32(diff.remove.count)
        return r
    }

    // MARK: DNS

    /// Every name the node serves.
    static func zone(of mesh: MeshState) -> ZoneUpdate {
        .all(domain: mesh.settings.domain, records: mesh.members.values.compactMap { record($0, mesh.settings) }, revision: mesh.revision)
    }

    static func record(_ m: Mesh_V1_Member, _ settings: Mesh_V1_TenantSettings) -> (name: String, addresses: [String])? {
        guard PeerCatalog.isNamed(m, settings: settings), !settings.domain.isEmpty else { return nil }
        return (MeshName.dnsName(slug: m.slug, domain: settings.domain), [m.ipv4, m.ipv6])
    }

    /// Tells the observers; the update is only built when someone observes (a whole zone of a large
    /// tenant is 50,000 names).
    func notify(revision: UInt64, _ update: () -> ZoneUpdate) {
        for o in revisionObservers.withLock({ $0 }) { o(revision) }
        let all = observers.withLock { $0 }
        guard !all.isEmpty else { return }
        let u = update()
        for o in all { o(u) }
    }

    // MARK: Reading

    /// The revision applied last.
    public var revision: UInt64 { state.withLock { $0.mesh.revision } }

    /// The member ids and DNS names of the given public keys (the peers this node holds).
    public func identities(ofKeys keys: [String]) -> [String: (id: String, dnsName: String)] {
        state.withLock { s in
            var out: [String: (id: String, dnsName: String)] = [:]
            for k in keys {
                guard let id = s.mesh.table.byKey[k], let m = s.mesh.members[id] else { continue }
                out[k] = (id, MeshName.dnsName(slug: m.slug, domain: s.mesh.settings.domain))
            }
            return out
        }
    }

    /// The peers the agent holds now, as PeerCatalog builds them (tests compare a delta with a full
    /// sync through this).
    public func peers() -> [Mesh_V1_Peer] { state.withLock { $0.mesh.peers() } }

    /// This node's own DNS name as last applied (nil before the first sync): it changes when the node
    /// is renamed.
    public var ownDNSName: String? {
        state.withLock { s in
            guard let m = s.mesh.members[identity.nodeID], !s.mesh.settings.domain.isEmpty else { return nil }
            return MeshName.dnsName(slug: m.slug, domain: s.mesh.settings.domain)
        }
    }

    /// The tenant's settings as last applied.
    public var settings: Mesh_V1_TenantSettings { state.withLock { $0.mesh.settings } }

    /// Revision, sync time, peer count.
    public func status() -> (revision: UInt64, lastSync: Date?, peers: Int, synced: Bool) {
        state.withLock { ($0.mesh.revision, $0.lastSync, $0.peerCount, $0.synced) }
    }
}

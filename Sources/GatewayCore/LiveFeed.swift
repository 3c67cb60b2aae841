import Foundation
import Logging
import MeshBus
import MeshDomain
import MeshProto
import ServiceLifecycle
import Synchronization

/// What an open live stream has to do next. The feed merges into it whatever arrives while the
/// stream is busy writing, so a burst of changes costs each stream one list read, not one per change.
struct LiveWork: Sendable {
    /// The tenant's mesh changed (a device or node added, changed or removed): read the list again.
    var meshChanged = false
    /// The newest mesh revision seen (FanoutSvc's, from `PeersUpdated`).
    var revision: UInt64 = 0
    /// Devices whose status changed, newest per id.
    var status: [String: Mesh_V1_Device] = [:]
    /// The feed's periodic tick: heartbeat, offline check, the stream's lifetime.
    var tick = false
    /// The bus reconnected (events may have been missed): read the list again.
    var resync = false
    /// The gateway is stopping: end the stream.
    var closed = false
}

/// The inbox of one open live stream (`GET /api/mesh/events`): pending work and a wake-up signal
/// that holds at most one pending wake-up.
final class LiveInbox: Sendable {
    let tenant: String
    private let pending = Mutex(LiveWork())
    let signal: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init(tenant: String) {
        self.tenant = tenant
        let (signal, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.signal = signal
        self.continuation = continuation
    }

    /// Adds to the pending work and wakes the stream.
    func post(_ change: (inout LiveWork) -> Void) {
        pending.withLock { change(&$0) }
        continuation.yield()
    }

    /// Takes the pending work, leaving none.
    func take() -> LiveWork {
        pending.withLock { w in
            let taken = w
            w = LiveWork()
            return taken
        }
    }

    /// Ends the stream's wake-ups (the gateway is stopping).
    func close() {
        post { $0.closed = true }
        continuation.finish()
    }
}

/// The gateway's live feed: one subscription per gateway replica to every tenant's mesh changes
/// (`mesh.v1.peers.updated.*`, published by FanoutSvc) and device status changes
/// (`mesh.v1.status.*.devices`, published by ProvisionSvc), handed to the open live streams of the
/// tenant. It keeps no state but the open streams, so any number of replicas may run.
public final class LiveFeed: Service, Sendable {
    let bus: BusConnection
    let tick: Duration
    let logger: Logger
    private let streams = Mutex<[String: [ObjectIdentifier: LiveInbox]]>([:])
    private let stopped = Atomic<Bool>(false)

    /// A feed on `bus` that ticks every `tick` (the streams' heartbeat and offline check).
    public init(bus: BusConnection, tick: Duration, logger: Logger) {
        self.bus = bus
        self.tick = tick
        self.logger = logger
    }

    /// How many live streams are open on this replica.
    public var openStreams: Int {
        streams.withLock { byTenant in byTenant.values.reduce(0) { sum, inboxes in sum + inboxes.count } }
    }

    /// A new stream's inbox for `tenant`. Registered before the stream's first list read, so no change
    /// that commits after that read started can be missed.
    func register(tenant: String) -> LiveInbox {
        let inbox = LiveInbox(tenant: tenant)
        if stopped.load(ordering: .acquiring) {
            inbox.close()
            return inbox
        }
        streams.withLock { $0[tenant, default: [:]][ObjectIdentifier(inbox)] = inbox }
        return inbox
    }

    /// Forgets a stream that ended.
    func unregister(_ inbox: LiveInbox) {
        streams.withLock { s in
            s[inbox.tenant]?[ObjectIdentifier(inbox)] = nil
            if s[inbox.tenant]?.isEmpty == true { s[inbox.tenant] = nil }
        }
    }

    private func inboxes(of tenant: String) -> [LiveInbox] {
        streams.withLock { $0[tenant].map { Array($0.values) } ?? [] }
    }

    private func everyInbox() -> [LiveInbox] {
        streams.withLock { $0.values.flatMap(\.values) }
    }

    /// The last token of `subject` at `index`, lowercased: the tenant id.
    static func token(_ subject: String, _ index: Int) -> String? {
        let parts = subject.split(separator: ".")
        return parts.indices.contains(index) ? String(parts[index]).lowercased() : nil
    }

    /// A `PeersUpdated` of one tenant: its streams read their list again.
    func meshChanged(subject: String, payload: [UInt8]) {
        guard let tenant = Self.token(subject, 4) else { return }
        let targets = inboxes(of: tenant)
        guard !targets.isEmpty else { return }
        let revision = (try? Mesh_V1_PeersUpdated(serializedBytes: payload))?.revision ?? 0
        for inbox in targets {
            inbox.post { w in
                w.meshChanged = true
                w.revision = max(w.revision, revision)
            }
        }
    }

    /// A `DeviceStatusChanged` of one tenant: handed to its streams, which pass on only the devices
    /// their caller's list holds.
    func statusChanged(subject: String, payload: [UInt8]) {
        guard let tenant = Self.token(subject, 3) else { return }
        let targets = inboxes(of: tenant)
        guard !targets.isEmpty else { return }
        guard let event = try? Mesh_V1_DeviceStatusChanged(serializedBytes: payload), event.tenantID.lowercased() == tenant else {
            logger.warning("malformed device status event dropped", metadata: ["nats.subject": "\(subject)"])
            return
        }
        for inbox in targets {
            inbox.post { w in
                for d in event.devices {
                    if let held = w.status[d.id], held.lastHandshakeAtMs > d.lastHandshakeAtMs { continue }
                    w.status[d.id] = d
                }
            }
        }
    }

    /// Subscribes and dispatches until the gateway stops; then ends every open stream.
    public func run() async throws {
        let changes = try bus.subscribe(MeshSubjects.peersUpdatedWildcard)
        let status = try bus.subscribe(MeshSubjects.deviceStatusWildcard)
        let events = bus.events()
        let tick = self.tick
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { for await m in changes { self.meshChanged(subject: m.subject, payload: m.payload) } }
                group.addTask { for await m in status { self.statusChanged(subject: m.subject, payload: m.payload) } }
                group.addTask {
                    for await e in events where e == .reconnected {
                        // Core NATS does not replay what was published during the outage.
                        for inbox in self.everyInbox() { inbox.post { $0.resync = true } }
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: tick)
                        for inbox in self.everyInbox() { inbox.post { $0.tick = true } }
                    }
                }
            }
        }
        stopped.store(true, ordering: .releasing)
        changes.unsubscribe()
        status.unsubscribe()
        for inbox in everyInbox() { inbox.close() }
    }
}

import Foundation
import Logging
import MeshBus
import MeshCore
import MeshNet
import MeshProto
import MeshStore
import Metrics
import ServiceLifecycle
import Synchronization

/// FanoutSvc's settings.
public struct FanoutConfiguration: Sendable {
    /// How often to look for unpublished changes without a NOTIFY (the fallback path).
    public var pollInterval: Duration
    /// Changes published per transaction.
    public var batchSize: Int
    /// Tenants published at once by one replica.
    public var concurrency: Int
    /// Published changes older than this are deleted.
    public var retention: Duration
    /// The mesh DNS zone (for peer DNS names in SyncFromCP).
    public var meshDomain: String
    /// PersistentKeepalive for node peers.
    public var nodeKeepalive: Int

    public init(pollInterval: Duration = .seconds(2), batchSize: Int = 256, concurrency: Int = 4,
                retention: Duration = .seconds(7 * 86400), meshDomain: String = "quazzar.mesh", nodeKeepalive: Int = 25) {
        self.pollInterval = pollInterval
        self.batchSize = batchSize
        self.concurrency = concurrency
        self.retention = retention
        self.meshDomain = meshDomain
        self.nodeKeepalive = nodeKeepalive
    }
}

/// Publishes the change outbox, one `PeersUpdated` per change, on `mesh.v1.peers.updated.<tenant>`.
///
/// Ordering across replicas: a replica publishes a tenant's changes only while holding that
/// tenant's transaction-scoped advisory lock, reads them in revision order, waits until nats-server
/// has them (a flush), and marks them published in the same transaction. Another replica that finds
/// the lock taken skips the tenant; the holder re-reads after committing, so nothing is left behind.
/// A change therefore goes out once, in order, unless a replica dies between the flush and the
/// commit; the next publisher then sends it again, and nodes drop it by revision.
///
/// Cost per change is constant: the outbox row already holds the peer as protobuf, so nothing is
/// recomputed from the tenant's other peers.
public final class Fanout: Sendable {
    let store: Store
    let bus: BusConnection
    public let configuration: FanoutConfiguration
    let logger: Logger
    private let pending = Mutex<(set: Set<UUID>, waiters: [CheckedContinuation<Void, Never>])>(([], []))
    private let published = Counter(label: "mesh_fanout_published_total")
    private let lag = Metrics.Timer(label: "mesh_fanout_commit_to_publish_seconds")

    public init(store: Store, bus: BusConnection, configuration: FanoutConfiguration, logger: Logger) {
        self.store = store
        self.bus = bus
        self.configuration = configuration
        self.logger = logger
    }

    /// Publishes every unpublished change of `tenant`, in revision order. Returns how many this
    /// replica published (0 if another replica holds the tenant).
    @discardableResult
    public func publish(tenant: UUID) async throws -> Int {
        var total = 0
        while true {
            let batch = configuration.batchSize
            let bus = self.bus
            let result: (count: Int, more: Bool, locked: Bool, lags: [Int64]) = try await store.write { tx in
                let got = try tx.queryFirst("SELECT pg_try_advisory_xact_lock(hashtext('mesh.fanout'), hashtext($1)) AS ok", tenant.lowercased)!
                guard try got.decode("ok", as: Bool.self) else { return (0, false, false, []) }
                let rows = try tx.query("""
                    SELECT revision, op, payload, (extract(epoch FROM created_at) * 1000)::bigint AS at_ms,
                           (extract(epoch FROM (clock_timestamp() - created_at)) * 1e9)::bigint AS lag_ns
                    FROM peer_changes WHERE tenant_id = $1 AND published_at IS NULL ORDER BY revision LIMIT $2
                    """, tenant, batch + 1)
                let work = rows.prefix(batch)
                guard !work.isEmpty else { return (0, false, true, []) }
                for row in work {
                    let message = try Self.message(tenant: tenant, row: row)
                    try bus.publish(MeshSubjects.peersUpdated(tenant: tenant.lowercased), try message.serializedBytes())
                }
                // Only mark what nats-server has acknowledged (PING/PONG after the publishes).
                try bus.flushBlocking(timeout: .seconds(5))
                let last = try work.last!.decode("revision", as: Int64.self)
                try tx.execute("UPDATE peer_changes SET published_at = now() WHERE tenant_id = $1 AND published_at IS NULL AND revision <= $2",
                               tenant, last)
                return (work.count, rows.count > batch, true, try work.map { try $0.decode("lag_ns", as: Int64.self) })
            }
            total += result.count
            published.increment(by: result.count)
            for l in result.lags { lag.recordNanoseconds(l) }
            // After committing, look again: a change that committed while we held the lock may have
            // been skipped by another replica.
            if !result.locked || result.count == 0 { break }
            if !result.more { continue }
        }
        if total > 0 { logger.debug("published changes", metadata: ["tenant.id": "\(tenant.lowercased)", "count": "\(total)"]) }
        return total
    }

    static func message(tenant: UUID, row: Row) throws -> Mesh_V1_PeersUpdated {
        var m = Mesh_V1_PeersUpdated()
        m.tenantID = tenant.lowercasedText
        m.revision = UInt64(try row.decode("revision", as: Int64.self))
        m.committedAtMs = try row.decode("at_ms")
        let peer = try Mesh_V1_Peer(serializedBytes: try row.decode("payload", as: ByteA.self).bytes)
        switch try row.decode("op", as: String.self) {
        case "added": m.added = [peer]
        case "changed": m.changed = [peer]
        default: m.removed = [peer]
        }
        return m
    }

    /// Tenants with unpublished changes.
    public func tenantsWithWork() async throws -> [UUID] {
        try await store.query("SELECT DISTINCT tenant_id FROM peer_changes WHERE published_at IS NULL").map { try $0.decode("tenant_id") }
    }

    /// Deletes published changes older than the retention.
    public func prune() async throws -> Int {
        try await store.query("""
            DELETE FROM peer_changes WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1) RETURNING revision
            """, Double(configuration.retention.components.seconds)).count
    }

    // MARK: Scheduling

    func enqueue(_ tenants: some Sequence<UUID>) {
        let waiters = pending.withLock { p -> [CheckedContinuation<Void, Never>] in
            p.set.formUnion(tenants)
            guard !p.set.isEmpty else { return [] }
            defer { p.waiters.removeAll() }
            return p.waiters
        }
        waiters.forEach { $0.resume() }
    }

    func take() async -> [UUID] {
        while true {
            let got = pending.withLock { p -> [UUID] in
                defer { p.set.removeAll() }
                return Array(p.set)
            }
            if !got.isEmpty { return got }
            if Task.isCancelled { return [] }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = pending.withLock { p -> Bool in
                        if !p.set.isEmpty || Task.isCancelled { return true }
                        p.waiters.append(c)
                        return false
                    }
                    if now { c.resume() }
                }
            } onCancel: {
                wakeAll()
            }
        }
    }

    func wakeAll() {
        let waiters = pending.withLock { p -> [CheckedContinuation<Void, Never>] in
            defer { p.waiters.removeAll() }
            return p.waiters
        }
        waiters.forEach { $0.resume() }
    }
}

/// The long-running part of FanoutSvc: LISTEN for outbox notifications, poll as a fallback, and
/// publish tenants with work, several at once.
public struct FanoutPublisher: Service {
    let fanout: Fanout

    public init(fanout: Fanout) { self.fanout = fanout }

    public func run() async throws {
        let f = fanout
        // On graceful shutdown everything is cancelled: a publish in flight still completes or rolls
        // back as a whole, because store transactions run to the end on their connection's thread.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // Wake-ups from NOTIFY (payload: tenant id). After (re)connecting, re-scan: any
                // notification sent meanwhile is lost.
                group.addTask {
                    for await event in f.store.listen([MeshOutbox.channel]) {
                        switch event {
                        case .notification(let n):
                            if let t = UUID(text: n.payload) { f.enqueue([t]) }
                        case .listening, .reconnected:
                            if let all = try? await f.tenantsWithWork() { f.enqueue(all) }
                        case .disconnected:
                            break
                        }
                    }
                    f.logger.debug("outbox listener stopped")
                }
                // The fallback: poll, and prune now and then.
                group.addTask {
                    var ticks = 0
                    while !Task.isCancelled {
                        try? await Task.sleep(for: f.configuration.pollInterval)
                        if let all = try? await f.tenantsWithWork() { f.enqueue(all) }
                        ticks += 1
                        if ticks % 1800 == 0, let n = try? await f.prune(), n > 0 {
                            f.logger.info("pruned published changes", metadata: ["count": "\(n)"])
                        }
                    }
                    f.logger.debug("outbox poller stopped")
                }
                // The publishers.
                group.addTask {
                    while !Task.isCancelled {
                        let tenants = await f.take()
                        if tenants.isEmpty { continue }
                        await withTaskGroup(of: Void.self) { g in
                            var running = 0
                            for t in tenants {
                                if running >= f.configuration.concurrency {
                                    await g.next()
                                    running -= 1
                                }
                                running += 1
                                g.addTask {
                                    do {
                                        try await f.publish(tenant: t)
                                    } catch {
                                        f.logger.warning("publishing failed; will retry", metadata: ["tenant.id": "\(t)", "error": "\(error)"])
                                    }
                                }
                            }
                        }
                    }
                    f.logger.debug("publisher stopped")
                }
            }
        }
    }
}

import Foundation
import Logging
import MeshDomain
import MeshProto
import MeshStore
import Metrics
import ServiceLifecycle
import Synchronization

/// Hands the outbox to FanoutSvc (`mesh.v1.fanout.ingest`), tenant by tenant, in revision order.
/// The bus is the only way from ProvisionSvc's tables to FanoutSvc's.
///
/// A relay reads a tenant's undelivered rows in revision order, always from the lowest, sends them,
/// and marks them delivered once FanoutSvc answered (it has stored and published them by then).
/// FanoutSvc keeps the tenant's revision under its own row lock, so changes that two replicas send at
/// once, or that a replica sends again after dying before its mark, are stored once and published
/// once; a batch that skips revisions is refused with the revision FanoutSvc expects, and the relay
/// sends from there (or, when those rows are gone, the tenant's whole state). Within a process one
/// relay runs per tenant at a time.
///
/// Wake-ups: the replica that committed a change relays at once (``changed(tenant:)``); every
/// replica also looks for rows older than a second that nobody delivered (a replica that died), so a
/// change is never stuck. After a failed relay (FanoutSvc down or refusing), new changes of that
/// tenant do not wake the relay for ``retryAfterFailure``: the sweep, or a change after that, tries
/// again. Without the pause every committed change would re-read and re-send the whole waiting
/// backlog to a FanoutSvc that cannot take it.
public final class OutboxRelay: ChangeNotifier, Service, Sendable {
    let store: Store
    let ingest: @Sendable (Mesh_V1_IngestRequest) async throws(MeshError) -> Mesh_V1_IngestResponse
    let logger: Logger
    let sweepInterval: Duration
    let batchSize: Int
    /// Members per snapshot request (and per page read from the database).
    let snapshotPageSize: Int
    private let pending = Mutex<(set: Set<UUID>, waiter: CheckedContinuation<Void, Never>?)>(([], nil))
    /// Tenants being relayed in this process, and whether a change arrived meanwhile.
    private let inFlight = Mutex<[UUID: Bool]>([:])
    private let relayed = Counter(label: "mesh_provision_outbox_relayed_total")
    /// How long a tenant's changes do not wake the relay after a failed relay.
    let retryAfterFailure: Duration
    /// Tenants whose last relay failed, and until when wake-ups are ignored.
    private let pausedUntil = Mutex<[UUID: ContinuousClock.Instant]>([:])

    public init(store: Store, ingest: @escaping @Sendable (Mesh_V1_IngestRequest) async throws(MeshError) -> Mesh_V1_IngestResponse,
                sweepInterval: Duration = .seconds(1), retryAfterFailure: Duration? = nil, batchSize: Int = 256, snapshotPageSize: Int = 2000,
                logger: Logger) {
        self.store = store
        self.snapshotPageSize = max(1, snapshotPageSize)
        self.ingest = ingest
        self.sweepInterval = sweepInterval
        self.retryAfterFailure = retryAfterFailure ?? sweepInterval / 2
        self.batchSize = batchSize
        self.logger = logger
    }

    /// A change of `tenant` committed: relay it soon.
    public func changed(tenant: UUID) {
        let waiter = pending.withLock { p -> CheckedContinuation<Void, Never>? in
            p.set.insert(tenant)
            defer { p.waiter = nil }
            return p.waiter
        }
        waiter?.resume()
    }

    public func deliver(tenant: UUID, through revision: UInt64) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            _ = try? await relay(tenant: tenant)
            if let row = try? await store.query("""
                SELECT coalesce(min(revision), 9223372036854775807) AS low FROM outbox WHERE tenant_id = $1 AND delivered_at IS NULL
                """, tenant).first, let low = try? row.decode("low", as: Int64.self), low > Int64(revision) {
                return true
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        logger.warning("changes not delivered in time", metadata: ["tenant.id": "\(tenant.lowercased)", "revision": "\(revision)"])
        return false
    }

    /// Relays every undelivered change of `tenant`; returns how many this call delivered (0 when a
    /// relay of the tenant is already running in this process: it picks the new changes up).
    @discardableResult
    public func relay(tenant: UUID) async throws -> Int {
        let mine = inFlight.withLock { f -> Bool in
            if f[tenant] != nil { f[tenant] = true; return false }
            f[tenant] = false
            return true
        }
        guard mine else { return 0 }
        defer { inFlight.withLock { _ = $0.removeValue(forKey: tenant) } }
        var total = 0
        while true {
            inFlight.withLock { $0[tenant] = false }
            let n = try await relayOnce(tenant: tenant)
            total += n
            relayed.increment(by: n)
            let again = inFlight.withLock { $0[tenant] ?? false }
            if n == 0 && !again { break }
        }
        return total
    }

    /// One batch: the lowest undelivered rows, sent and marked.
    func relayOnce(tenant: UUID) async throws -> Int {
        let rows = try await store.query("""
            SELECT revision, payload, created_at FROM outbox WHERE tenant_id = $1 AND delivered_at IS NULL ORDER BY revision LIMIT $2
            """, tenant, batchSize)
        guard !rows.isEmpty else { return 0 }
        let sized = try rows.map(Self.sizedChange)
        var changes = Self.fit(sized)
        var resp = try await send(tenant: tenant, changes: changes)
        if resp.expectedRevision > 0 && resp.expectedRevision < changes[0].revision {
            // FanoutSvc lacks earlier revisions (its copy is behind, or new): send them from the ones
            // still kept, or the whole state when those are gone.
            let older = try await store.query("""
                SELECT revision, payload, created_at FROM outbox WHERE tenant_id = $1 AND revision >= $2 AND revision < $3 ORDER BY revision
                """, tenant, Int64(resp.expectedRevision), Int64(changes[0].revision))
            if let first = older.first, try first.decode("revision", as: Int64.self) == Int64(resp.expectedRevision),
               older.count == Int(changes[0].revision - resp.expectedRevision) {
                changes = Self.fit(try older.map(Self.sizedChange) + sized.prefix(changes.count))
                resp = try await send(tenant: tenant, changes: changes)
            } else {
                logger.notice("FanoutSvc lacks revisions no longer kept; sending the tenant's whole state",
                              metadata: ["tenant.id": "\(tenant.lowercased)", "revision.expected": "\(resp.expectedRevision)"])
                resp = try await sendSnapshot(tenant: tenant)
                return 1
            }
        }
        guard resp.expectedRevision == 0 || resp.expectedRevision > changes.last!.revision else {
            throw MeshError.unavailable("FanoutSvc expects revision \(resp.expectedRevision) of \(tenant.lowercased)")
        }
        try await store.query("UPDATE outbox SET delivered_at = now() WHERE tenant_id = $1 AND delivered_at IS NULL AND revision <= $2",
                              tenant, Int64(changes.last!.revision))
        return changes.count
    }

    /// The most bytes of changes one ingest request carries: a request must fit in one NATS message
    /// (1 MiB by default), and an access policy alone may take 256 KiB.
    static let maxBatchBytes = 512 * 1024

    /// The leading changes that fit in ``maxBatchBytes`` (at least one), each with its size.
    static func fit(_ changes: [(change: Mesh_V1_PeersUpdated, size: Int)]) -> [Mesh_V1_PeersUpdated] {
        var total = 0
        var n = 0
        for c in changes {
            total += c.size
            if n > 0 && total > maxBatchBytes { break }
            n += 1
        }
        return changes.prefix(n).map(\.change)
    }

    /// A stored change, and its size as sent: the stored payload plus the revision and commit time
    /// the relay sets (two varint fields, at most 22 bytes), so nothing is encoded only to be measured.
    static func sizedChange(_ row: Row) throws -> (change: Mesh_V1_PeersUpdated, size: Int) {
        let payload = try row.decode("payload", as: ByteA.self).bytes
        var c = try Mesh_V1_PeersUpdated(serializedBytes: payload)
        c.revision = UInt64(try row.decode("revision", as: Int64.self))
        c.committedAtMs = (try row.decode("created_at", as: Date.self)).unixMilliseconds
        return (c, payload.count + 22)
    }

    func send(tenant: UUID, changes: [Mesh_V1_PeersUpdated]) async throws(MeshError) -> Mesh_V1_IngestResponse {
        var req = Mesh_V1_IngestRequest()
        req.tenantID = tenant.lowercased
        req.changes = changes
        return try await ingest(req)
    }

    /// The tenant's whole state, streamed page by page so that no process holds a whole tenant: the
    /// revision R, the settings and the access policy first, then the nodes and the devices in pages of
    /// ``snapshotPageSize`` ordered by id, each sent as it is read; the last request says done. Pages are
    /// read after R, so they may already show changes after R: those changes are still undelivered
    /// and follow the snapshot, and since each carries a member's whole state, replaying them on top
    /// gives exactly the tenant at their revision (the argument of `FanoutClient.fullView`). Every
    /// row up to R counts as delivered afterwards.
    public func sendSnapshot(tenant: UUID) async throws -> Mesh_V1_IngestResponse {
        guard let trow = try await store.query("SELECT \(PostgresProvisionStore.tenantColumns) FROM tenants WHERE id = $1", tenant).first else {
            throw MeshError.notFound("unknown tenant")
        }
        let t = try PostgresProvisionStore.tenant(trow)
        // Read after R like the pages: a later policy change is in the outbox and follows the snapshot.
        var policy = Mesh_V1_PolicySet()
        policy.version = t.policyVersion
        policy.rules = try PostgresProvisionStore.rules(try await store.query(PostgresProvisionStore.rulesQuery, tenant))
        var resp = Mesh_V1_IngestResponse()
        var page: [Mesh_V1_Member] = []
        var sent = 0, pages: UInt32 = 0
        let id = UUID().lowercased
        func flush(done: Bool) async throws {
            var req = Mesh_V1_IngestRequest()
            req.tenantID = tenant.lowercased
            req.snapshot = true
            req.snapshotID = id
            req.snapshotPage = pages
            pages += 1
            req.snapshotRevision = t.revision
            req.snapshotSettings = t.settings
            req.snapshotMembers = page
            // The policy rides on the last request, which makes the snapshot the view (FanoutSvc).
            if done { req.snapshotPolicy = policy }
            req.snapshotDone = done
            resp = try await ingest(req)
            sent += page.count
            page.removeAll(keepingCapacity: true)
        }
        let zero = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        var after = zero
        while true {
            let rows = try await store.query("""
                SELECT \(PostgresProvisionStore.nodeColumns) FROM nodes WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3
                """, tenant, after, snapshotPageSize)
            for row in rows {
                page.append(try PostgresProvisionStore.node(row).member)
                if page.count == snapshotPageSize { try await flush(done: false) }
            }
            guard rows.count == snapshotPageSize, let last = rows.last else { break }
            after = try last.decode("id", as: UUID.self)
        }
        after = zero
        while true {
            let rows = try await store.query("""
                SELECT \(PostgresProvisionStore.deviceColumns) FROM devices WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3
                """, tenant, after, snapshotPageSize)
            for row in rows {
                page.append(try PostgresProvisionStore.device(row).member())
                if page.count == snapshotPageSize { try await flush(done: false) }
            }
            guard rows.count == snapshotPageSize, let last = rows.last else { break }
            after = try last.decode("id", as: UUID.self)
        }
        try await flush(done: true)
        logger.notice("sent the tenant's whole state", metadata: ["tenant.id": "\(tenant.lowercased)", "members": "\(sent)", "revision": "\(t.revision)"])
        try await store.query("UPDATE outbox SET delivered_at = now() WHERE tenant_id = $1 AND delivered_at IS NULL AND revision <= $2",
                              tenant, Int64(t.revision))
        return resp
    }

    /// Tenants with changes nobody delivered for a second.
    func overdueTenants() async throws -> [UUID] {
        try await store.query("""
            SELECT DISTINCT tenant_id FROM outbox WHERE delivered_at IS NULL AND created_at < now() - interval '1 second'
            """).map { try $0.decode("tenant_id") }
    }

    /// Deletes delivered changes older than `retention` (FanoutSvc keeps its own copy for nodes).
    func prune(retention: Duration) async throws -> Int {
        try await store.query("""
            DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < now() - make_interval(secs => $1) RETURNING revision
            """, retention.seconds).count
    }

    func take() async -> Set<UUID> {
        while true {
            let got = pending.withLock { p -> Set<UUID> in
                defer { p.set.removeAll() }
                return p.set
            }
            if !got.isEmpty || Task.isCancelled { return got }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = pending.withLock { p -> Bool in
                        if !p.set.isEmpty || Task.isCancelled { return true }
                        p.waiter = c
                        return false
                    }
                    if now { c.resume() }
                }
            } onCancel: {
                let w = pending.withLock { p -> CheckedContinuation<Void, Never>? in
                    defer { p.waiter = nil }
                    return p.waiter
                }
                w?.resume()
            }
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    var ticks = 0
                    while !Task.isCancelled {
                        if let overdue = try? await self.overdueTenants() { overdue.forEach(self.changed) }
                        ticks += 1
                        if ticks % 3600 == 0, let n = try? await self.prune(retention: .seconds(86400)), n > 0 {
                            self.logger.info("pruned delivered changes", metadata: ["count": "\(n)"])
                        }
                        try? await Task.sleep(for: self.sweepInterval)
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        let tenants = await self.take()
                        await withDiscardingTaskGroup { g in
                            let now = ContinuousClock.now
                            let due = self.pausedUntil.withLock { p in tenants.filter { p[$0].map { $0 <= now } ?? true } }
                            for t in due {
                                g.addTask {
                                    do {
                                        try await self.relay(tenant: t)
                                        self.pausedUntil.withLock { _ = $0.removeValue(forKey: t) }
                                    } catch {
                                        self.pausedUntil.withLock { $0[t] = .now + self.retryAfterFailure }
                                        self.logger.warning("relaying changes failed; will retry", metadata: ["tenant.id": "\(t.lowercased)",
                                                                                                            "error": "\(error)"])
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

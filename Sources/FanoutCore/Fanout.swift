import Foundation
import Logging
import MeshBus
import MeshDomain
import MeshNet
import MeshProto
import MeshStore
import ServiceStore
import Metrics
import ServiceLifecycle

/// FanoutSvc's settings.
public struct FanoutConfiguration: Sendable {
    /// Stored changes older than this are pruned (nodes that fall further behind do a full sync).
    public var retention: Duration
    /// Members per SyncFromCP page when the node asks for no size, and the most it may ask for.
    public var defaultPageSize: Int
    public var maxPageSize: Int

    public init(retention: Duration = .seconds(7 * 86400), defaultPageSize: Int = 2000, maxPageSize: Int = 4000) {
        self.retention = retention
        self.defaultPageSize = defaultPageSize
        self.maxPageSize = maxPageSize
    }
}

/// FanoutSvc's copy of every tenant's mesh, fed by ProvisionSvc's outbox relay, and the fan-out:
/// one `PeersUpdated` per change on `mesh.v1.peers.updated.<tenant>`.
///
/// Ordering: an ingest stores a tenant's changes and publishes them while holding the tenant's row
/// lock, in revision order, and records the newest revision published in the same transaction. So
/// whichever replica ingests, nodes see a tenant's changes once and in order; a change stored but not
/// published (a replica died between) goes out when the relay sends it again. A batch that would
/// leave a gap is refused with the revision it must start at.
///
/// Cost per change is constant: a change carries the member's whole state, so nothing is recomputed
/// from the tenant's other members.
public final class Fanout: Sendable {
    let store: Store
    let bus: BusConnection
    public let configuration: FanoutConfiguration
    let logger: Logger
    private let published = Counter(label: "mesh_fanout_published_total")
    private let lag = Metrics.Timer(label: "mesh_fanout_commit_to_publish_seconds")

    public init(store: Store, bus: BusConnection, configuration: FanoutConfiguration, logger: Logger) {
        self.store = store
        self.bus = bus
        self.configuration = configuration
        self.logger = logger
    }

    /// The highest revision a tenant can reach (revisions are stored as PostgreSQL bigint).
    static let maxRevision = UInt64(Int64.max)

    /// Stores and publishes a tenant's changes (or loads a snapshot).
    public func ingest(_ req: Mesh_V1_IngestRequest) async throws(MeshError) -> Mesh_V1_IngestResponse {
        guard let tenant = UUID(text: req.tenantID) else { throw .invalidArgument(field: "tenant_id", message: "tenant_id must be a UUID") }
        if req.snapshot { return try await loadSnapshot(req, tenant: tenant) }
        let changes = req.changes
        for (i, c) in changes.enumerated() {
            guard c.tenantID == req.tenantID || c.tenantID.isEmpty else {
                throw .invalidArgument(field: "changes", message: "every change must belong to the request's tenant")
            }
            // Revisions are stored as PostgreSQL bigint: one beyond Int64.max is refused, not trapped on.
            guard c.revision > 0, c.revision <= Self.maxRevision, i == 0 || c.revision == changes[i - 1].revision + 1 else {
                throw .invalidArgument(field: "changes", message: "changes must have consecutive revisions above 0 (and at most \(Self.maxRevision))")
            }
            guard c.change != nil else { throw .invalidArgument(field: "changes", message: "a change must upsert, remove or set something") }
            if case .upsert(let m) = c.change, UUID(text: m.id) == nil {
                throw .invalidArgument(field: "changes", message: "a member id must be a UUID")
            }
            if case .remove(let r) = c.change, UUID(text: r.id) == nil {
                throw .invalidArgument(field: "changes", message: "a member id must be a UUID")
            }
        }
        let subject = MeshSubjects.peersUpdated(tenant: tenant.lowercased)
        let bus = self.bus
        let result: (revision: UInt64, expected: UInt64, sent: [Int64])
        do {
            result = try await store.write { tx in
                let r = try tx.batch([
                    Statement("INSERT INTO tenant_views (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING", tenant),
                    Statement("SELECT revision, published_revision, rebuilding FROM tenant_views WHERE tenant_id = $1 FOR UPDATE", tenant),
                ])
                let row = r[1].rows[0]
                var revision = UInt64(try row.decode("revision", as: Int64.self))
                let publishedThrough = UInt64(try row.decode("published_revision", as: Int64.self))
                if try row.decode("rebuilding", as: Bool.self) { return (revision, revision + 1, []) }
                let fresh = changes.filter { $0.revision > revision }
                if let first = fresh.first, first.revision != revision + 1 { return (revision, revision + 1, []) }
                var writes: [Statement] = []
                for c in fresh {
                    var stored = c
                    stored.tenantID = tenant.lowercased
                    writes += try Self.apply(stored, tenant: tenant)
                    writes.append(Statement("INSERT INTO changes (tenant_id, revision, payload) VALUES ($1, $2, $3)",
                                            tenant, Int64(c.revision), ByteA(try stored.serializedBytes())))
                    revision = c.revision
                }
                // Publish what no replica published yet, in order, while holding the tenant's lock.
                var sent: [Int64] = []
                for c in changes where c.revision > publishedThrough {
                    var out = c
                    out.tenantID = tenant.lowercased
                    try bus.publish(subject, try out.serializedBytes())
                    sent.append(c.committedAtMs)
                }
                if !sent.isEmpty {
                    // Only record what nats-server has acknowledged (PING/PONG after the publishes).
                    try bus.flushBlocking(timeout: .seconds(5))
                    writes.append(Statement("UPDATE tenant_views SET published_revision = $2 WHERE tenant_id = $1",
                                            tenant, Int64(changes.last!.revision)))
                }
                writes.append(Statement("UPDATE tenant_views SET revision = $2 WHERE tenant_id = $1", tenant, Int64(revision)))
                try tx.batch(writes)
                return (revision, 0, sent)
            }
        } catch {
            throw map(error)
        }
        published.increment(by: result.sent.count)
        let now = Date().unixMilliseconds
        for at in result.sent where at > 0 { lag.recordMilliseconds(max(0, now - at)) }
        var resp = Mesh_V1_IngestResponse()
        resp.revision = result.revision
        resp.expectedRevision = result.expected
        return resp
    }

    /// The statements that make one change part of the stored view.
    static func apply(_ c: Mesh_V1_PeersUpdated, tenant: UUID) throws -> [Statement] {
        switch c.change {
        case .upsert(let m):
            return [Statement("""
                INSERT INTO members (tenant_id, member_id, revision, payload) VALUES ($1, $2, $3, $4)
                ON CONFLICT (tenant_id, member_id) DO UPDATE SET revision = EXCLUDED.revision, payload = EXCLUDED.payload
                """, tenant, UUID(text: m.id)!, Int64(c.revision), ByteA(try m.serializedBytes()))]
        case .remove(let r):
            return [Statement("DELETE FROM members WHERE tenant_id = $1 AND member_id = $2", tenant, UUID(text: r.id)!)]
        case .settings(let s):
            return [Statement("UPDATE tenant_views SET settings = $2 WHERE tenant_id = $1", tenant, ByteA(try s.serializedBytes()))]
        case .policy(let p):
            return [Statement("UPDATE tenant_views SET policy = $2 WHERE tenant_id = $1", tenant, ByteA(try p.serializedBytes()))]
        case nil:
            return []
        }
    }

    /// A snapshot: the tenant's whole state over one or more requests. The first (page 0) replaces
    /// every member; sync is refused (unavailable) until the last one sets the revision. A page other
    /// than the first must belong to the snapshot in progress (same `snapshot_id`), otherwise it is
    /// refused with `failedPrecondition`: when two senders stream the same tenant, the one that
    /// started last wins and the other stops, and no view is ever made of both halves.
    func loadSnapshot(_ req: Mesh_V1_IngestRequest, tenant: UUID) async throws(MeshError) -> Mesh_V1_IngestResponse {
        let members = req.snapshotMembers
        guard req.snapshotRevision <= Self.maxRevision else {
            throw .invalidArgument(field: "snapshot_revision", message: "snapshot_revision must be at most \(Self.maxRevision)")
        }
        guard members.allSatisfy({ UUID(text: $0.id) != nil }) else {
            throw .invalidArgument(field: "snapshot_members", message: "a member id must be a UUID")
        }
        do {
            try await store.write { tx in
                let r = try tx.batch([
                    Statement("INSERT INTO tenant_views (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING", tenant),
                    Statement("SELECT rebuilding, rebuild_id FROM tenant_views WHERE tenant_id = $1 FOR UPDATE", tenant),
                ])
                let rebuilding = try r[1].rows[0].decode("rebuilding", as: Bool.self)
                let current = try r[1].rows[0].decode("rebuild_id", as: String.self)
                var writes: [Statement] = []
                let starts = req.snapshotID.isEmpty ? !rebuilding : req.snapshotPage == 0
                if starts {
                    writes.append(Statement("DELETE FROM members WHERE tenant_id = $1", tenant))
                    writes.append(Statement("UPDATE tenant_views SET rebuilding = true, rebuild_id = $2 WHERE tenant_id = $1",
                                            tenant, req.snapshotID))
                } else if !req.snapshotID.isEmpty && (!rebuilding || current != req.snapshotID) {
                    throw MeshError.failedPrecondition("snapshot \(req.snapshotID) is not the one in progress for this tenant")
                }
                for m in members {
                    writes.append(Statement("""
                        INSERT INTO members (tenant_id, member_id, revision, payload) VALUES ($1, $2, $3, $4)
                        ON CONFLICT (tenant_id, member_id) DO UPDATE SET revision = EXCLUDED.revision, payload = EXCLUDED.payload
                        """, tenant, UUID(text: m.id)!, Int64(req.snapshotRevision), ByteA(try m.serializedBytes())))
                }
                if req.snapshotDone {
                    writes.append(Statement("""
                        UPDATE tenant_views SET rebuilding = false, revision = $2, published_revision = greatest(published_revision, $2),
                          settings = $3, policy = $4 WHERE tenant_id = $1
                        """, tenant, Int64(req.snapshotRevision), ByteA(try req.snapshotSettings.serializedBytes()),
                        ByteA(try req.snapshotPolicy.serializedBytes())))
                    writes.append(Statement("DELETE FROM changes WHERE tenant_id = $1", tenant))
                }
                try tx.batch(writes)
            }
        } catch {
            throw map(error)
        }
        logger.notice("loaded a tenant snapshot", metadata: ["tenant.id": "\(tenant.lowercased)", "members": "\(members.count)",
                                                             "revision": "\(req.snapshotRevision)", "done": "\(req.snapshotDone)"])
        var resp = Mesh_V1_IngestResponse()
        resp.revision = req.snapshotDone ? req.snapshotRevision : 0
        return resp
    }

    /// Deletes stored changes older than the retention (members and settings stay).
    public func prune() async throws -> Int {
        try await store.query("DELETE FROM changes WHERE stored_at < now() - make_interval(secs => $1) RETURNING revision",
                              Double(configuration.retention.components.seconds)).count
    }

    /// A failed publish is `unavailable`; storage errors go through ServiceStore's one mapping.
    func map(_ error: any Error) -> MeshError {
        if let e = error as? BusError {
            logger.warning("publishing failed", metadata: ["error": "\(e)"])
            return .unavailable("message bus unavailable")
        }
        return .fromStore(error, logger: logger)
    }
}

/// Prunes stored changes now and then.
public struct FanoutPruner: Service {
    let fanout: Fanout

    public init(fanout: Fanout) { self.fanout = fanout }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(3600))
                if let n = try? await fanout.prune(), n > 0 {
                    fanout.logger.info("pruned stored changes", metadata: ["count": "\(n)"])
                }
            }
        }
    }
}

import Foundation
import Logging
import MeshBus
import MeshDomain
import MeshNet
import MeshProto
import MeshStore
import ServiceKit

/// SyncFromCP from FanoutSvc's own copy of the tenant: a node's view in pages, the changes after a
/// revision (catch-up), and the tenant's newest revision. Nothing here reads another service's
/// tables, and no request loads a whole tenant into memory.
public struct MeshDirectory: Sendable {
    let store: Store
    let configuration: FanoutConfiguration
    let logger: Logger

    public init(store: Store, configuration: FanoutConfiguration, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
    }

    /// One page of members (ordered by id, after `after`), with the settings and the revision (and,
    /// on the first page, the access policy), read in one snapshot. `notFound` when the node is not a member of the tenant (it was removed).
    public func sync(tenant: UUID, node: UUID, after: UUID?, pageSize: Int) async throws(MeshError) -> Mesh_V1_SyncResponse {
        let limit = pageSize <= 0 ? configuration.defaultPageSize : min(pageSize, configuration.maxPageSize)
        do {
            return try await store.read(isolation: .repeatableRead) { tx in
                let r = try tx.batch([
                    Statement("SELECT revision, settings, rebuilding, policy FROM tenant_views WHERE tenant_id = $1", tenant),
                    Statement("SELECT 1 AS x FROM members WHERE tenant_id = $1 AND member_id = $2", tenant, node),
                    Statement("""
                        SELECT member_id, payload FROM members WHERE tenant_id = $1 AND member_id > $2 ORDER BY member_id LIMIT $3
                        """, tenant, after ?? UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), limit + 1),
                ])
                guard let t = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
                if try t.decode("rebuilding", as: Bool.self) { throw MeshError.unavailable("the tenant's view is being rebuilt; try again") }
                guard !r[1].rows.isEmpty else { throw MeshError.notFound("unknown node") }
                var resp = Mesh_V1_SyncResponse()
                resp.tenantID = tenant.lowercased
                resp.revision = UInt64(try t.decode("revision", as: Int64.self))
                resp.settings = try Mesh_V1_TenantSettings(serializedBytes: try t.decode("settings", as: ByteA.self).bytes)
                // The policy rides on the first page only (it may be large; later pages replay changes).
                if after == nil {
                    resp.policy = try Mesh_V1_PolicySet(serializedBytes: try t.decode("policy", as: ByteA.self).bytes)
                }
                let rows = r[2].rows
                for row in rows.prefix(limit) {
                    resp.members.append(try Mesh_V1_Member(serializedBytes: try row.decode("payload", as: ByteA.self).bytes))
                }
                if rows.count > limit, let last = resp.members.last { resp.nextMemberID = last.id }
                return resp
            }
        } catch let e as MeshError {
            throw e
        } catch {
            logger.error("sync failed", metadata: ["tenant.id": "\(tenant.lowercased)", "node.id": "\(node.lowercased)", "error": "\(error)"])
            throw MeshError.unavailable("database unavailable")
        }
    }

    /// The stored changes after `after`, oldest first; `tooOld` when some of them were pruned.
    public func changes(tenant: UUID, after: UInt64, limit: Int) async throws(MeshError) -> Mesh_V1_ChangesResponse {
        let n = limit <= 0 ? 1000 : min(limit, 2000)
        do {
            return try await store.read(isolation: .repeatableRead) { tx in
                let r = try tx.batch([
                    Statement("SELECT revision FROM tenant_views WHERE tenant_id = $1", tenant),
                    Statement("SELECT min(revision) AS low FROM changes WHERE tenant_id = $1", tenant),
                    Statement("SELECT payload FROM changes WHERE tenant_id = $1 AND revision > $2 ORDER BY revision LIMIT $3",
                              tenant, Int64(after), n),
                ])
                guard let t = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
                var resp = Mesh_V1_ChangesResponse()
                resp.tenantID = tenant.lowercased
                resp.revision = UInt64(try t.decode("revision", as: Int64.self))
                let low = try r[1].rows.first?.decodeIfPresent("low", as: Int64.self)
                if resp.revision > after && (low.map { UInt64($0) > after + 1 } ?? true) {
                    resp.tooOld = true
                    return resp
                }
                resp.changes = try r[2].rows.map { try Mesh_V1_PeersUpdated(serializedBytes: try $0.decode("payload", as: ByteA.self).bytes) }
                return resp
            }
        } catch let e as MeshError {
            throw e
        } catch {
            throw MeshError.unavailable("database unavailable")
        }
    }

    /// The tenant's newest revision (0 for a tenant FanoutSvc has not heard of).
    public func revision(tenant: UUID) async throws(MeshError) -> UInt64 {
        do {
            guard let row = try await store.query("SELECT revision FROM tenant_views WHERE tenant_id = $1", tenant).first else {
                throw MeshError.notFound("unknown tenant")
            }
            return UInt64(try row.decode("revision", as: Int64.self))
        } catch let e as MeshError {
            throw e
        } catch {
            throw MeshError.unavailable("database unavailable")
        }
    }
}

/// FanoutSvc's request endpoints.
public enum FanoutService {
    public static func endpoints(fanout: Fanout, directory: MeshDirectory) -> [ServiceEndpoint] {
        [
            .proto("ingest", subject: MeshSubjects.fanoutIngest) { (r: Mesh_V1_IngestRequest, _) in
                try await fanout.ingest(r)
            },
            .proto("sync", subject: MeshSubjects.syncWildcard) { (r: Mesh_V1_SyncRequest, raw) in
                let (t, n) = try scoped(raw.subject, tenant: r.tenantID, node: r.nodeID)
                var after: UUID?
                if !r.afterMemberID.isEmpty {
                    guard let a = UUID(text: r.afterMemberID) else {
                        throw MeshError.invalidArgument(field: "after_member_id", message: "after_member_id must be a member id")
                    }
                    after = a
                }
                return try await directory.sync(tenant: t, node: n, after: after, pageSize: Int(r.pageSize))
            },
            .proto("changes", subject: MeshSubjects.changesWildcard) { (r: Mesh_V1_ChangesRequest, raw) in
                let (t, _) = try scoped(raw.subject, tenant: r.tenantID, node: r.nodeID)
                // Revisions are PostgreSQL bigints: one beyond Int64.max cannot exist (and is refused, not trapped on).
                guard r.afterRevision <= UInt64(Int64.max) else {
                    throw MeshError.invalidArgument(field: "after_revision", message: "after_revision must be at most \(Int64.max)")
                }
                return try await directory.changes(tenant: t, after: r.afterRevision, limit: Int(r.limit))
            },
            .proto("revision", subject: MeshSubjects.revisionWildcard) { (r: Mesh_V1_RevisionRequest, raw) in
                // A node may only publish its own tenant's subject, so the body must name that tenant.
                guard raw.subject.split(separator: ".").last == Substring(r.tenantID.lowercased()) else {
                    throw MeshError.permissionDenied("revision subject does not match the request")
                }
                guard let t = UUID(text: r.tenantID) else {
                    throw MeshError.invalidArgument(field: "tenant_id", message: "tenant_id must be a UUID")
                }
                var resp = Mesh_V1_RevisionResponse()
                resp.tenantID = t.lowercased
                resp.revision = try await directory.revision(tenant: t)
                return resp
            },
        ]
    }

    /// The subject names the tenant and node (so bus permissions can scope it); it must agree with
    /// the body.
    static func scoped(_ subject: String, tenant: String, node: String) throws(MeshError) -> (UUID, UUID) {
        let parts = subject.split(separator: ".")
        guard parts.count == 6, parts[4] == Substring(tenant.lowercased()), parts[5] == Substring(node.lowercased()) else {
            throw .permissionDenied("subject does not match the request")
        }
        guard let t = UUID(text: tenant), let n = UUID(text: node) else {
            throw .invalidArgument(field: "tenant_id", message: "tenant_id and node_id must be UUIDs")
        }
        return (t, n)
    }
}

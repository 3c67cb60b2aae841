import Foundation
import Logging
import MeshBus
import MeshCore
import MeshNet
import MeshProto
import MeshStore

/// SyncFromCP: a node's full peer list at a consistent revision, and the tenant's newest revision.
/// The gateway's `GET /cp/api/v1/mesh/peers/:node_id` reads the same source through this endpoint.
public struct PeerDirectory: Sendable {
    let store: Store
    let configuration: FanoutConfiguration
    let logger: Logger

    public init(store: Store, configuration: FanoutConfiguration, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
    }

    /// Every peer of the tenant except the node itself, read in one REPEATABLE READ snapshot together
    /// with the revision, so the list is exactly the state after that revision.
    public func sync(tenant: UUID, node: UUID) async throws(MeshError) -> Mesh_V1_SyncResponse {
        let domain = configuration.meshDomain, keepalive = configuration.nodeKeepalive
        do {
            return try await store.read(isolation: .repeatableRead) { tx in
                guard let t = try tx.queryFirst("SELECT revision, ipv4_prefix, ipv6_prefix FROM tenants WHERE id = $1", tenant) else {
                    throw MeshError.notFound("unknown tenant")
                }
                var resp = Mesh_V1_SyncResponse()
                resp.tenantID = tenant.lowercased
                resp.revision = UInt64(try t.decode("revision", as: Int64.self))
                resp.ipv4Prefix = try t.decode("ipv4_prefix")
                resp.ipv6Prefix = try t.decode("ipv6_prefix")
                var foundSelf = false
                for (i, r) in try tx.query("""
                    SELECT id, public_key, ipv4, ipv6, slug, endpoint FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id
                    """, tenant).enumerated() {
                    let id: UUID = try r.decode("id")
                    var p = Mesh_V1_Peer()
                    p.id = id.lowercased
                    p.kind = .node
                    p.publicKey = try r.decode("public_key")
                    let v4: String = try r.decode("ipv4"), v6: String = try r.decode("ipv6")
                    p.meshIps = [v4, v6]
                    p.allowedIps = ["\(v4)/32", "\(v6)/128"]
                    p.dnsName = "\(try r.decode("slug", as: String.self)).\(domain)"
                    p.endpoint = try r.decode("endpoint")
                    p.persistentKeepalive = UInt32(keepalive)
                    p.hub = i == 0
                    if id == node {
                        resp.self_p = p
                        foundSelf = true
                    } else {
                        resp.peers.append(p)
                    }
                }
                guard foundSelf else { throw MeshError.notFound("unknown node") }
                for r in try tx.query("SELECT id, public_key, ipv4, ipv6, slug FROM devices WHERE tenant_id = $1 ORDER BY created_at, id", tenant) {
                    var p = Mesh_V1_Peer()
                    p.id = (try r.decode("id", as: UUID.self)).lowercased
                    p.kind = .device
                    p.publicKey = try r.decode("public_key")
                    let v4: String = try r.decode("ipv4"), v6: String = try r.decode("ipv6")
                    p.meshIps = [v4, v6]
                    p.allowedIps = ["\(v4)/32", "\(v6)/128"]
                    p.dnsName = "\(try r.decode("slug", as: String.self)).\(domain)"
                    resp.peers.append(p)
                }
                return resp
            }
        } catch let e as MeshError {
            throw e
        } catch {
            logger.error("sync failed", metadata: ["tenant.id": "\(tenant.lowercased)", "node.id": "\(node.lowercased)", "error": "\(error)"])
            throw MeshError.unavailable("database unavailable")
        }
    }

    /// The tenant's newest revision.
    public func revision(tenant: UUID) async throws(MeshError) -> UInt64 {
        do {
            guard let row = try await store.query("SELECT revision FROM tenants WHERE id = $1", tenant).first else {
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
    public static func endpoints(_ directory: PeerDirectory) -> [ServiceEndpoint] {
        [
            .proto("sync", subject: MeshSubjects.syncWildcard) { (r: Mesh_V1_SyncRequest, raw) in
                // The subject names the tenant and node (so bus permissions can scope it); it must
                // agree with the body.
                let parts = raw.subject.split(separator: ".")
                guard parts.count == 6, parts[4] == Substring(r.tenantID.lowercased()), parts[5] == Substring(r.nodeID.lowercased()) else {
                    throw MeshError.permissionDenied("sync subject does not match the request")
                }
                guard let t = UUID(text: r.tenantID), let n = UUID(text: r.nodeID) else {
                    throw MeshError.invalidArgument(field: "tenant_id", message: "tenant_id and node_id must be UUIDs")
                }
                return try await directory.sync(tenant: t, node: n)
            },
            .proto("revision", subject: MeshSubjects.revisionWildcard) { (r: Mesh_V1_RevisionRequest, raw) in
                // As for sync: a node may only publish its own tenant's subject, so the body must name that tenant.
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
}

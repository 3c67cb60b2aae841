import Foundation
import Logging
import MeshBus
import MeshDomain
import ServiceKit
import MeshNet
import MeshProto
import MeshStore
import ServiceLifecycle

/// AllocatorSvc on the bus: decodes requests, validates ids, calls ``Allocator``, encodes replies.
/// Every error goes back typed (``MeshError``); garbage bytes get `invalidArgument`.
public enum AllocatorService {
    /// The bus endpoints (queue group "q", so replicas share the load).
    public static func endpoints(_ allocator: Allocator, logger: Logger) -> [ServiceEndpoint] {
        [
            .proto("tenant", subject: MeshSubjects.allocatorTenant) { (req: Mesh_V1_EnsureTenantRequest, _) in
                let (p, existing) = try await allocator.ensureTenant(try uuid(req.tenantID, "tenant_id"))
                var r = Mesh_V1_EnsureTenantResponse()
                r.prefixes = p.proto
                r.existing = existing
                return r
            },
            .proto("allocate", subject: MeshSubjects.allocatorAllocate) { (req: Mesh_V1_AllocateRequest, _) in
                let tenant = try uuid(req.tenantID, "tenant_id"), owner = try uuid(req.ownerID, "owner_id")
                var requested: IPv4Address?
                if !req.requestedIpv4.isEmpty {
                    guard let a = IPv4Address(req.requestedIpv4) else {
                        throw MeshError.invalidArgument(field: "requested_ipv4", message: "requested_ipv4 is not an IPv4 address")
                    }
                    requested = a
                }
                let (lease, existing) = try await allocator.allocate(tenant: tenant, owner: owner, kind: req.kind, requested: requested)
                var r = Mesh_V1_AllocateResponse()
                r.lease = lease.proto
                r.existing = existing
                if let p = try await allocator.prefixes(tenant) { r.prefixes = p.proto }
                return r
            },
            .proto("release", subject: MeshSubjects.allocatorRelease) { (req: Mesh_V1_ReleaseRequest, _) in
                let result = try await allocator.release(tenant: try uuid(req.tenantID, "tenant_id"), owner: try uuid(req.ownerID, "owner_id"),
                                                         neverPublished: req.neverPublished)
                var r = Mesh_V1_ReleaseResponse()
                if let result {
                    r.released = true
                    r.quarantined = result.quarantined
                    r.availableAtMs = result.availableAt.unixMilliseconds
                }
                return r
            },
            .proto("lease", subject: MeshSubjects.allocatorLease) { (req: Mesh_V1_GetLeaseRequest, _) in
                guard let lease = try await allocator.lease(tenant: try uuid(req.tenantID, "tenant_id"), owner: try uuid(req.ownerID, "owner_id")) else {
                    throw MeshError.notFound("no lease for that owner")
                }
                var r = Mesh_V1_GetLeaseResponse()
                r.lease = lease.proto
                return r
            },
            .proto("usage", subject: MeshSubjects.allocatorUsage) { (req: Mesh_V1_UsageRequest, _) in
                let (p, used, quarantined) = try await allocator.usage(tenant: try uuid(req.tenantID, "tenant_id"))
                var r = Mesh_V1_UsageResponse()
                r.prefixes = p.proto
                r.capacity = UInt32(p.capacity)
                r.inUse = UInt32(used)
                r.quarantined = UInt32(quarantined)
                return r
            },
        ]
    }
}

extension Lease {
    var proto: Mesh_V1_Lease {
        var l = Mesh_V1_Lease()
        l.tenantID = tenantID.lowercasedText
        l.ownerID = ownerID.lowercasedText
        l.kind = kind
        l.ipv4 = ipv4.description
        l.ipv6 = ipv6.description
        l.createdAtMs = createdAt.unixMilliseconds
        return l
    }
}

/// Parses a UUID field, or throws `invalidArgument` naming it.
func uuid(_ text: String, _ field: String) throws(MeshError) -> UUID {
    guard let u = UUID(text: text) else { throw .invalidArgument(field: field, message: "\(field) must be a UUID") }
    return u
}

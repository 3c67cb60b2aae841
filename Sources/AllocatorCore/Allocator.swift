import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto
import MeshStore
import ServiceStore
import Synchronization

/// What happens when every tenant-sized block of the pool is taken.
public enum PrefixPolicy: String, Sendable, CaseIterable {
    /// Hand out unique blocks while they last, then reuse them round-robin. Tenants are isolated
    /// meshes (separate interfaces, separate peers), so two tenants sharing 100.64.7.0/16 never see
    /// each other. The default; with 100.64.0.0/10 it serves any number of tenants, the first 64
    /// with unique blocks.
    case uniqueThenShared = "unique-then-shared"
    /// Never reuse a block; fail with `poolExhausted` when the pool is used up.
    case unique
}

/// AllocatorSvc's settings.
public struct AllocatorConfiguration: Sendable {
    /// The IPv4 pool tenant prefixes come from.
    public var pool: IPPrefix
    /// The tenant prefix length (16 in production; tests use small prefixes).
    public var tenantPrefixLength: UInt8
    public var policy: PrefixPolicy
    /// How long a released, published address waits before reuse.
    public var quarantine: Duration

    public init(pool: IPPrefix = IPPrefix("100.64.0.0/10")!, tenantPrefixLength: UInt8 = 16,
                policy: PrefixPolicy = .uniqueThenShared, quarantine: Duration = .seconds(300)) {
        self.pool = pool.network
        self.tenantPrefixLength = tenantPrefixLength
        self.policy = policy
        self.quarantine = quarantine
    }

    /// Checks the settings make sense together.
    public func validate() throws(MeshError) {
        guard case .v4 = pool.address else { throw .invalidArgument(field: "pool", message: "the pool must be an IPv4 prefix") }
        guard tenantPrefixLength >= pool.length, tenantPrefixLength >= 8, tenantPrefixLength <= 28 else {
            throw .invalidArgument(field: "tenant_prefix_length", message: "tenant prefix length must be within the pool and between 8 and 28")
        }
    }

    /// Tenant-sized blocks in the pool.
    public var slots: Int64 { Int64(1) << Int64(tenantPrefixLength - pool.length) }
}

/// A tenant's prefixes, as the allocator hands them out.
public struct TenantPrefixes: Sendable, Equatable {
    public var tenantID: UUID
    public var ipv4: IPPrefix
    public var ipv6: IPPrefix
    /// Hosts below this number are for nodes; the rest for devices.
    public var nodeBlock: Int

    /// The IPv4 and IPv6 address of host number `host`.
    public func addresses(host: Int) -> (IPv4Address, IPv6Address) {
        guard case .v4(let net) = ipv4.address, case .v6(let net6) = ipv6.address else { fatalError("prefix families") }
        return (IPv4Address(net.value + UInt32(host)), net6.adding(UInt64(host)))
    }

    /// The host number of an IPv4 address inside the prefix, or nil.
    public func host(of address: IPv4Address) -> Int? {
        guard ipv4.contains(.v4(address)), case .v4(let net) = ipv4.address else { return nil }
        return Int(address.value - net.value)
    }

    /// Usable hosts in the prefix (without network and broadcast).
    public var capacity: Int { (1 << (32 - Int(ipv4.length))) - 2 }

    /// The CIDRs that hold device addresses (hosts `nodeBlock...` to the end of the prefix),
    /// IPv4 then IPv6.
    public var deviceRanges: [IPPrefix] {
        let size = 1 << (32 - Int(ipv4.length))
        let (first4, first6) = addresses(host: nodeBlock)
        let (last4, last6) = addresses(host: size - 1)
        return IPPrefix.summarize(first4, last4) + IPPrefix.summarize(first6, last6)
    }

    /// The CIDRs that hold node addresses (hosts `0..<nodeBlock`), IPv4 then IPv6.
    public var nodeRanges: [IPPrefix] {
        let (first4, first6) = addresses(host: 0)
        let (last4, last6) = addresses(host: nodeBlock - 1)
        return IPPrefix.summarize(first4, last4) + IPPrefix.summarize(first6, last6)
    }

    var proto: Mesh_V1_TenantPrefixes {
        var p = Mesh_V1_TenantPrefixes()
        p.tenantID = tenantID.lowercasedText
        p.ipv4Prefix = ipv4.description
        p.ipv6Prefix = ipv6.description
        p.deviceRanges = deviceRanges.map(\.description)
        p.nodeRanges = nodeRanges.map(\.description)
        return p
    }
}

/// One owner's lease.
public struct Lease: Sendable, Equatable {
    public var tenantID: UUID
    public var ownerID: UUID
    public var kind: Mesh_V1_PeerKind
    public var host: Int
    public var ipv4: IPv4Address
    public var ipv6: IPv6Address
    public var createdAt: Date
}

/// The allocation rules. State lives only in PostgreSQL; any number of replicas may run this at
/// once, and the database's constraints keep them honest. Tenant prefixes never change once
/// assigned, so they are cached in memory.
public final class Allocator: Sendable {
    let store: Store
    public let configuration: AllocatorConfiguration
    let logger: Logger
    private let prefixCache = Mutex<[UUID: TenantPrefixes]>([:])

    public init(store: Store, configuration: AllocatorConfiguration, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
    }

    /// Returns the tenant's prefixes, assigning them on first use. Idempotent.
    public func ensureTenant(_ tenantID: UUID) async throws(MeshError) -> (TenantPrefixes, existing: Bool) {
        if let p = try await prefixes(tenantID) { return (p, true) }
        let c = configuration
        for _ in 0..<8 {
            do {
                let inserted: Bool = try await store.write { tx in
                    if try tx.queryFirst("SELECT 1 AS x FROM tenant_prefixes WHERE tenant_id = $1", tenantID) != nil { return false }
                    let slot = try tx.queryFirst("SELECT nextval('tenant_slot_seq') AS s")!.decode("s", as: Int64.self)
                    if c.policy == .unique && slot >= c.slots {
                        throw MeshError.poolExhausted("every /\(c.tenantPrefixLength) of \(c.pool) is taken and the policy is unique")
                    }
                    guard case .v4(let poolNet) = c.pool.address else { throw MeshError.internal("pool family") }
                    let size = Int64(1) << Int64(32 - c.tenantPrefixLength)
                    let network = Int64(poolNet.value) + (slot % c.slots) * size
                    let nodeBlock = max(Int(size >> 4), 4)
                    try tx.execute("""
                        INSERT INTO tenant_prefixes (tenant_id, v4_network, v4_length, v6_prefix, node_block, next_device_host, slot)
                        VALUES ($1, $2, $3, $4, $5, $5, $6)
                        """, tenantID, network, Int(c.tenantPrefixLength), Self.randomULA().description, nodeBlock, slot)
                    return true
                }
                guard let p = try await prefixes(tenantID) else { throw MeshError.internal("tenant prefixes vanished") }
                if inserted {
                    logger.info("tenant prefixes assigned", metadata: ["tenant.id": "\(tenantID)", "ipv4": "\(p.ipv4)", "ipv6": "\(p.ipv6)"])
                }
                return (p, !inserted)
            } catch let e as MeshError {
                throw e
            } catch StoreError.uniqueViolation(let constraint) where constraint.contains("v6_prefix") || constraint.contains("pkey") {
                // A ULA collision (1 in 2^40) or a concurrent first use: try again.
                continue
            } catch {
                throw storeError(error, tenantID)
            }
        }
        throw MeshError.internal("could not assign tenant prefixes")
    }

    /// The tenant's prefixes, or nil if it has none yet.
    public func prefixes(_ tenantID: UUID) async throws(MeshError) -> TenantPrefixes? {
        if let p = prefixCache.withLock({ $0[tenantID] }) { return p }
        let row: Row?
        do {
            row = try await store.query("SELECT v4_network, v4_length, v6_prefix, node_block FROM tenant_prefixes WHERE tenant_id = $1", tenantID).first
        } catch {
            throw storeError(error, tenantID)
        }
        guard let row else { return nil }
        do {
            let p = TenantPrefixes(
                tenantID: tenantID,
                ipv4: IPPrefix(.v4(IPv4Address(UInt32(try row.decode("v4_network", as: Int64.self)))), length: UInt8(try row.decode("v4_length", as: Int.self)))!,
                ipv6: IPPrefix(try row.decode("v6_prefix", as: String.self))!,
                nodeBlock: try row.decode("node_block", as: Int.self))
            prefixCache.withLock { $0[tenantID] = p }
            return p
        } catch {
            throw MeshError.internal("corrupt tenant prefix row")
        }
    }

    /// Allocates (or returns the existing) addresses of an owner. `requested` asks for a specific
    /// IPv4 address inside the tenant prefix.
    public func allocate(tenant: UUID, owner: UUID, kind: Mesh_V1_PeerKind, requested: IPv4Address? = nil) async throws(MeshError) -> (Lease, existing: Bool) {
        guard kind == .device || kind == .node else { throw .invalidArgument(field: "kind", message: "kind must be device or node") }
        guard let p = try await prefixes(tenant) else { throw .notFound("unknown tenant") }
        var requestedHost: Int?
        if let requested {
            guard let h = p.host(of: requested) else {
                throw .invalidArgument(field: "requested_ipv4", message: "\(requested) is outside the tenant prefix \(p.ipv4)")
            }
            requestedHost = h
        }
        let row: Row
        do {
            guard let r = try await store.query("SELECT host, existing, created_at FROM mesh_allocate($1, $2, $3, $4)",
                                                tenant, owner, kind.key, requestedHost).first else {
                throw MeshError.internal("allocation returned nothing")
            }
            row = r
        } catch {
            throw storeError(error, tenant, requested: requested)
        }
        do {
            let host = try row.decode("host", as: Int.self)
            let (v4, v6) = p.addresses(host: host)
            let lease = Lease(tenantID: tenant, ownerID: owner, kind: kind, host: host, ipv4: v4, ipv6: v6,
                              createdAt: try row.decode("created_at", as: Date.self))
            return (lease, try row.decode("existing", as: Bool.self))
        } catch {
            throw MeshError.internal("corrupt allocation row")
        }
    }

    /// Releases an owner's addresses. They wait out the quarantine unless `neverPublished` (the
    /// owner's service says no node or config ever saw them). Returns nil when the owner held none.
    public func release(tenant: UUID, owner: UUID, neverPublished: Bool = false) async throws(MeshError) -> (quarantined: Bool, availableAt: Date)? {
        let seconds = Double(configuration.quarantine.components.seconds)
        do {
            guard let row = try await store.query("""
                SELECT host, quarantined, available_at FROM mesh_release($1, $2, make_interval(secs => $3), $4)
                """, tenant, owner, seconds, neverPublished).first else { return nil }
            return (try row.decode("quarantined", as: Bool.self), try row.decode("available_at", as: Date.self))
        } catch {
            throw storeError(error, tenant)
        }
    }

    /// An owner's current lease, if any.
    public func lease(tenant: UUID, owner: UUID) async throws(MeshError) -> Lease? {
        guard let p = try await prefixes(tenant) else { throw .notFound("unknown tenant") }
        do {
            guard let row = try await store.query("SELECT host, kind, created_at FROM leases WHERE tenant_id = $1 AND owner_id = $2",
                                                  tenant, owner).first else { return nil }
            let host = try row.decode("host", as: Int.self)
            let (v4, v6) = p.addresses(host: host)
            return Lease(tenantID: tenant, ownerID: owner, kind: Mesh_V1_PeerKind(key: try row.decode("kind")) ?? .unspecified, host: host,
                         ipv4: v4, ipv6: v6, createdAt: try row.decode("created_at"))
        } catch {
            throw storeError(error, tenant)
        }
    }

    /// How full the tenant's prefix is.
    public func usage(tenant: UUID) async throws(MeshError) -> (TenantPrefixes, inUse: Int, quarantined: Int) {
        guard let p = try await prefixes(tenant) else { throw .notFound("unknown tenant") }
        do {
            let row = try await store.query("""
                SELECT (SELECT count(*) FROM leases WHERE tenant_id = $1) AS used,
                       (SELECT count(*) FROM free_hosts WHERE tenant_id = $1 AND available_at > now()) AS quarantined
                """, tenant).first!
            return (p, try row.decode("used"), try row.decode("quarantined"))
        } catch {
            throw storeError(error, tenant)
        }
    }

    static func randomULA() -> IPPrefix {
        // RFC 4193: fd00::/8 followed by a 40-bit random global ID makes the /48.
        var rng = SystemRandomNumberGenerator()
        let globalID = rng.next() & 0xff_ffff_ffff
        let high = (UInt64(0xfd) << 56) | (globalID << 16)
        return IPPrefix(.v6(IPv6Address(high: high, low: 0)), length: 48)!
    }

    /// The allocator's own refusals (SQLSTATE `MA00x` from `mesh_allocate`) as domain errors; every
    /// other failure goes through ServiceStore's one mapping.
    func storeError(_ error: any Error, _ tenant: UUID?, requested: IPv4Address? = nil) -> MeshError {
        switch error {
        case StoreError.server(let state, let message) where state.hasPrefix("MA"):
            switch state {
            case "MA001": return .poolExhausted("the tenant's address pool is exhausted (\(message))")
            case "MA002": return .conflict("\(requested.map { "\($0)" } ?? "the address") is already in use")
            case "MA003": return .invalidArgument(field: "requested_ipv4", message: "\(requested.map { "\($0)" } ?? "the address") is outside the \(message.replacingOccurrences(of: "address outside the ", with: ""))")
            case "MA004": return .notFound("unknown tenant")
            case "MA005": return .conflict(message)
            case "MA006": return .conflict("\(requested.map { "\($0)" } ?? "the address") is quarantined after a release; \(message.replacingOccurrences(of: "address ", with: ""))")
            default: return .internal("allocation failed")
            }
        default:
            return .fromStore(error, logger: logger, metadata: ["tenant.id": "\(tenant.map { "\($0)" } ?? "-")"])
        }
    }
}

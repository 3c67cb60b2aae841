#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import HashTreeCollections
import Logging
import MeshNet
import Synchronization

/// How the mesh zone describes itself: its origin, TTLs and the fields of its SOA and NS records.
public struct MeshDNSZoneConfiguration: Sendable, Hashable {
    /// The zone's apex, e.g. `quazzar.mesh.`.
    public var origin: DNSName
    /// TTL of A and AAAA answers. Short, so a removed or renamed peer stops resolving in caches quickly.
    public var recordTTL: UInt32
    /// How long resolvers may cache NXDOMAIN and NODATA (the SOA MINIMUM and the authority SOA's TTL).
    public var negativeTTL: UInt32
    /// The SOA MNAME and the apex NS target.
    public var nameServer: DNSName
    /// The SOA RNAME (mailbox with `@` as the first dot).
    public var hostmaster: DNSName
    /// SOA REFRESH. The zone has no secondaries; the timers only need to be sane for tools that check them.
    public var refresh: UInt32
    /// SOA RETRY.
    public var retry: UInt32
    /// SOA EXPIRE.
    public var expire: UInt32
    /// Addresses published for ``nameServer`` when the record set has none of its own for that name.
    public var nameServerAddresses: [IPAddress]

    /// The default domain for mesh names.
    public static let defaultOrigin = "quazzar.mesh"

    /// Builds a configuration; `nameServer` defaults to `ns.<origin>` and `hostmaster` to `hostmaster.<origin>`.
    public init(origin: String = MeshDNSZoneConfiguration.defaultOrigin, recordTTL: UInt32 = 10,
                negativeTTL: UInt32 = 10, nameServer: String? = nil, hostmaster: String? = nil,
                refresh: UInt32 = 3600, retry: UInt32 = 600, expire: UInt32 = 86400,
                nameServerAddresses: [IPAddress] = []) throws(DNSNameError) {
        let originName = try DNSName(origin)
        self.origin = originName
        self.recordTTL = recordTTL
        self.negativeTTL = negativeTTL
        self.nameServer = try nameServer.map { text throws(DNSNameError) in try DNSName(text) }
            ?? DNSName.relative("ns", to: originName)
        self.hostmaster = try hostmaster.map { text throws(DNSNameError) in try DNSName(text) }
            ?? DNSName.relative("hostmaster", to: originName)
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.nameServerAddresses = nameServerAddresses
    }
}

extension DNSName {
    /// `label.origin`, falling back to the origin itself if the result would be too long.
    static func relative(_ label: String, to origin: DNSName) -> DNSName {
        (try? DNSName(label)).flatMap { $0.appending(origin) } ?? origin
    }
}

/// One name of the mesh and its addresses, as the node learns them from its peer list.
public struct MeshDNSRecord: Hashable, Sendable {
    /// A device slug or node name relative to the zone (`laptop-3f2a`), or an absolute name inside the zone
    /// (`laptop-3f2a.quazzar.mesh` or `laptop-3f2a.quazzar.mesh.`).
    public var name: String
    /// Mesh addresses; IPv4 ones become A records, IPv6 ones AAAA records.
    public var addresses: [IPAddress]

    /// Creates a record.
    public init(name: String, addresses: [IPAddress]) {
        self.name = name
        self.addresses = addresses
    }
}

/// A record that an update could not take, and why.
public struct MeshDNSRejectedRecord: Error, Hashable, Sendable {
    /// The name as given.
    public var name: String
    /// A short human-readable reason.
    public var reason: String
}

/// The outcome of a zone update: rejected records are reported rather than failing the whole update, so
/// one bad device name cannot stop every other name from resolving.
public struct MeshDNSZoneUpdate: Hashable, Sendable {
    /// How many names the zone holds after the update.
    public var nameCount: Int
    /// Records left out of the update.
    public var rejected: [MeshDNSRejectedRecord]
}

/// The addresses of one name, sorted so answers and exports are deterministic.
struct MeshDNSEntry: Hashable, Sendable {
    var ipv4: [IPv4Address] = []
    var ipv6: [IPv6Address] = []

    mutating func add(_ addresses: [IPAddress]) {
        for address in addresses {
            switch address {
            case .v4(let a): ipv4.append(a)
            case .v6(let a): ipv6.append(a)
            }
        }
        ipv4 = Array(Set(ipv4)).sorted()
        ipv6 = Array(Set(ipv6)).sorted()
    }

    var recordCount: Int { ipv4.count + ipv6.count }
}

/// An immutable view of the zone at one revision. Copying it is cheap (it shares storage), so the server
/// takes one per query and never holds the zone's lock while answering. The maps are persistent hash
/// trees: an update while a query holds a copy copies only the path it changes, not the whole zone
/// (with a plain dictionary, every upsert next to a running query copied all 50,000 names).
public struct MeshDNSZoneSnapshot: Sendable {
    /// The zone configuration in force.
    public let configuration: MeshDNSZoneConfiguration
    /// Names (lower-cased keys) and their addresses.
    var entries: TreeDictionary<DNSName, MeshDNSEntry>
    /// How many names lie strictly below each ancestor inside the zone; an ancestor that is not itself a
    /// name is an empty non-terminal and answers NODATA rather than NXDOMAIN (RFC 8020).
    var descendants: TreeDictionary<DNSName, Int>
    /// How many A and AAAA records the zone holds; kept by ``insert(_:_:)`` and ``delete(_:)``, because
    /// the node reports it with every state answer and counting 50,000 names each time cost more than
    /// the answer.
    public private(set) var recordCount = 0
    /// The revision the caller supplied with the last update; it is the SOA serial.
    public internal(set) var revision: UInt32
    /// When the last update was applied; nil before the first.
    public internal(set) var lastUpdate: Date?

    init(configuration: MeshDNSZoneConfiguration) {
        self.configuration = configuration
        entries = [:]
        descendants = [:]
        revision = 0
        lastUpdate = nil
    }

    /// The zone's apex.
    public var origin: DNSName { configuration.origin }

    /// How many names the zone holds (the apex counts only if it has addresses).
    public var nameCount: Int { entries.count }

    /// The SOA data at this revision.
    public var soa: DNSSOA {
        DNSSOA(mname: configuration.nameServer, rname: configuration.hostmaster, serial: revision,
               refresh: configuration.refresh, retry: configuration.retry, expire: configuration.expire,
               minimum: configuration.negativeTTL)
    }

    /// The addresses of `name` (any case, absolute), or nil when the zone has no such name.
    public func addresses(of name: DNSName) -> [IPAddress]? {
        guard let entry = entries[name] else { return nil }
        return entry.ipv4.map { .v4($0) } + entry.ipv6.map { .v6($0) }
    }

    /// Every name and its addresses, sorted by name.
    public var records: [(name: DNSName, addresses: [IPAddress])] {
        entries.keys.sorted { $0.description < $1.description }.map { ($0, addresses(of: $0) ?? []) }
    }

    mutating func insert(_ name: DNSName, _ addresses: [IPAddress]) {
        if entries[name] == nil {
            var ancestor = name.parent
            while ancestor.isSubdomain(of: origin) {
                descendants[ancestor, default: 0] += 1
                if ancestor == origin { break }
                ancestor = ancestor.parent
            }
        }
        let before = entries[name]?.recordCount ?? 0
        entries[name, default: MeshDNSEntry()].add(addresses)
        recordCount += entries[name]!.recordCount - before
    }

    mutating func delete(_ name: DNSName) -> Bool {
        guard let gone = entries.removeValue(forKey: name) else { return false }
        recordCount -= gone.recordCount
        var ancestor = name.parent
        while ancestor.isSubdomain(of: origin) {
            let remaining = (descendants[ancestor] ?? 1) - 1
            descendants[ancestor] = remaining > 0 ? remaining : nil
            if ancestor == origin { break }
            ancestor = ancestor.parent
        }
        return true
    }

    /// Adds the configured name-server addresses unless the record set already publishes that name.
    mutating func addNameServerAddresses() {
        let ns = configuration.nameServer
        guard !configuration.nameServerAddresses.isEmpty, ns.isSubdomain(of: origin), entries[ns] == nil else {
            return
        }
        insert(ns.lowercased, configuration.nameServerAddresses)
    }

    /// Turns a caller's name into an absolute name inside the zone, or explains why it cannot be one.
    func absoluteName(_ text: String) -> Result<DNSName, MeshDNSRejectedRecord> {
        func reject(_ reason: String) -> Result<DNSName, MeshDNSRejectedRecord> {
            .failure(MeshDNSRejectedRecord(name: text, reason: reason))
        }
        let parsed: DNSName
        do {
            parsed = try DNSName(text)
        } catch {
            return reject("not a valid DNS name (\(error))")
        }
        guard !parsed.isRoot else { return reject("empty name") }
        // Hosts files and resolvers expect host names: letters, digits, '-' and '_' (service labels).
        for label in parsed.labels {
            guard label.allSatisfy({ b in
                DNSName.fold(b) >= UInt8(ascii: "a") && DNSName.fold(b) <= UInt8(ascii: "z")
                    || b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") || b == UInt8(ascii: "-")
                    || b == UInt8(ascii: "_")
            }) else { return reject("labels may hold only letters, digits, '-' and '_'") }
        }
        let absolute: DNSName
        if text.hasSuffix(".") || parsed.isSubdomain(of: origin) {
            absolute = parsed
        } else if let joined = parsed.appending(origin) {
            absolute = joined
        } else {
            return reject("longer than 255 bytes with the zone appended")
        }
        guard absolute.isSubdomain(of: origin) else { return reject("outside the zone \(origin)") }
        return .success(absolute.lowercased)
    }
}

/// The mesh zone: the names of a tenant's devices and nodes and their mesh addresses.
///
/// Updates replace an immutable snapshot under a short lock, so they are atomic and synchronous: once
/// `replace`, `upsert` or `remove` returns, every later query sees the new data. Queries never wait for
/// more than the pointer swap. Safe to call from any actor or thread.
public final class MeshDNSZone: Sendable {
    private let logger: Logger
    private let state: Mutex<MeshDNSZoneSnapshot>

    /// Creates an empty zone at revision 0.
    public init(configuration: MeshDNSZoneConfiguration, logger: Logger) {
        self.logger = logger
        var initial = MeshDNSZoneSnapshot(configuration: configuration)
        initial.addNameServerAddresses()
        state = Mutex(initial)
    }

    /// The zone's configuration now (its origin can change with ``replace(records:revision:configuration:)``).
    public var configuration: MeshDNSZoneConfiguration { state.withLock { $0.configuration } }

    /// The current data; cheap to take and safe to keep.
    public func snapshot() -> MeshDNSZoneSnapshot {
        state.withLock { $0 }
    }

    /// Replaces every name at once, e.g. with the peer list of a PeersUpdated message.
    ///
    /// Records with the same name are merged. Records that are not valid names inside the zone are
    /// skipped, logged and returned in ``MeshDNSZoneUpdate/rejected``; the rest still take effect.
    /// - Parameter revision: becomes the SOA serial; pass the peer-list revision so serials follow it.
    @discardableResult
    public func replace(records: [MeshDNSRecord], revision: UInt32) -> MeshDNSZoneUpdate {
        replace(records: records, revision: revision, configuration: configuration)
    }

    /// Replaces every name and the zone's configuration at once (a tenant whose mesh domain changed).
    @discardableResult
    public func replace(records: [MeshDNSRecord], revision: UInt32, configuration: MeshDNSZoneConfiguration) -> MeshDNSZoneUpdate {
        var next = MeshDNSZoneSnapshot(configuration: configuration)
        var rejected: [MeshDNSRejectedRecord] = []
        for record in records {
            switch next.absoluteName(record.name) {
            case .success(let name): next.insert(name, record.addresses)
            case .failure(let why): rejected.append(why)
            }
        }
        next.addNameServerAddresses()
        next.revision = revision
        next.lastUpdate = Date()
        let nameCount = next.nameCount
        state.withLock { $0 = next }
        log(rejected)
        logger.debug("mesh DNS zone replaced", metadata: [
            "dns.zone": "\(configuration.origin)", "dns.revision": "\(revision)", "dns.names": "\(nameCount)",
        ])
        return MeshDNSZoneUpdate(nameCount: nameCount, rejected: rejected)
    }

    /// Adds a name, or replaces the addresses of an existing one.
    @discardableResult
    public func upsert(_ record: MeshDNSRecord, revision: UInt32) -> MeshDNSZoneUpdate {
        let update = state.withLock { snapshot -> MeshDNSZoneUpdate in
            switch snapshot.absoluteName(record.name) {
            case .success(let name):
                _ = snapshot.delete(name)
                snapshot.insert(name, record.addresses)
                snapshot.revision = revision
                snapshot.lastUpdate = Date()
                return MeshDNSZoneUpdate(nameCount: snapshot.nameCount, rejected: [])
            case .failure(let why):
                return MeshDNSZoneUpdate(nameCount: snapshot.nameCount, rejected: [why])
            }
        }
        log(update.rejected)
        return update
    }

    /// Removes a name; returns false when the zone did not hold it (the revision is still recorded).
    @discardableResult
    public func remove(name: String, revision: UInt32) -> Bool {
        state.withLock { snapshot -> Bool in
            snapshot.revision = revision
            snapshot.lastUpdate = Date()
            guard case .success(let absolute) = snapshot.absoluteName(name) else { return false }
            let removed = snapshot.delete(absolute)
            // The configured name-server addresses come back if the peer that shadowed them left.
            snapshot.addNameServerAddresses()
            return removed
        }
    }

    private func log(_ rejected: [MeshDNSRejectedRecord]) {
        for record in rejected {
            logger.warning("mesh DNS record rejected", metadata: [
                "dns.zone": "\(configuration.origin)", "dns.name": "\(record.name)", "dns.reason": "\(record.reason)",
            ])
        }
    }
}

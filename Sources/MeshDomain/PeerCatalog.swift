import HashTreeCollections
import MeshProto

/// The routing rules of a tenant's mesh: which WireGuard peers each node holds and which peers a
/// device's config lists, with their AllowedIPs. Every peer anywhere is built here, by pure
/// functions of the tenant's members and settings, so a delta and a full sync cannot disagree.
/// docs/routing.md explains the rules and proves that they need no config to change when a node
/// joins.
///
/// - A device config lists the tenant's hub, which carries the whole tenant prefix (IPv4 /16 and
///   IPv6 /48), and up to ``TenantDefaults/configMaxNodes`` − 1 other nodes, each with its own /32
///   and /128. WireGuard picks the longest prefix: listed nodes are reached directly, everything
///   else in the tenant (nodes that join later, other devices) through the hub.
/// - A node holds every other node as a peer with its /32 and /128; the hub's peer also carries
///   the tenant prefix, so a node reaches anything it does not hold directly through the hub.
/// - A node holds a device as its own peer when the device's config lists that node. Any other node
///   reaches the device through the hub of the device's config: when that is the current hub, its
///   prefix already covers the device; when the hub has changed since the config was made, the
///   device's /32 and /128 ride on the old hub's peer ("routed through"), as long as that node lives.
/// - A device that is not active (suspended, expired) or a tenant whose mesh is off: no node holds
///   or routes the device.
public enum PeerCatalog {
    // MARK: What a node holds

    /// The peer node `viewer` holds for member `m`, or nil when it holds none.
    ///
    /// - Parameter routedThrough: for a node member, the devices whose traffic rides on it
    ///   (``routedThrough(_:seenBy:settings:isNode:)`` says which); ignored for devices.
    public static func peer(for m: Mesh_V1_Member, seenBy viewer: String, settings: Mesh_V1_TenantSettings,
                            routedThrough: some Collection<Mesh_V1_Member> = [Mesh_V1_Member]()) -> Mesh_V1_Peer? {
        guard m.id != viewer else { return nil }
        switch m.kind {
        case .node:
            var p = basePeer(m, settings: settings)
            p.endpoint = m.endpoint
            p.persistentKeepalive = settings.nodeKeepalive
            p.hub = m.id == settings.hubNodeID
            if p.hub && viewer != settings.hubNodeID {
                p.allowedIps += tenantPrefixes(settings)
            }
            for d in routedThrough.sorted(by: { $0.id < $1.id }) {
                p.allowedIps += hostRoutes(d)
            }
            return p
        case .device:
            guard holdsDirectly(m, seenBy: viewer, settings: settings) else { return nil }
            return basePeer(m, settings: settings)
        default:
            return nil
        }
    }

    /// Whether `viewer` holds device `d` as its own peer: the device is in the mesh and its config
    /// lists the viewer.
    public static func holdsDirectly(_ d: Mesh_V1_Member, seenBy viewer: String, settings: Mesh_V1_TenantSettings) -> Bool {
        deviceInMesh(d, settings: settings) && configLists(d, node: viewer)
    }

    /// Whether `d` is a device whose config lists `node` (in the mesh or not).
    public static func configLists(_ d: Mesh_V1_Member, node: String) -> Bool {
        d.kind == .device && d.configNodeIds.contains(node)
    }

    /// Whether a device takes part in the mesh at all.
    public static func deviceInMesh(_ d: Mesh_V1_Member, settings: Mesh_V1_TenantSettings) -> Bool {
        d.active && settings.meshEnabled
    }

    /// The node whose peer carries device `d`'s addresses for `viewer` as an explicit route, or nil
    /// when none is needed (the viewer holds the device, or the current hub's prefix covers it) or
    /// none is possible (the device is out of the mesh, or the hub of its config is gone).
    public static func routedThrough(_ d: Mesh_V1_Member, seenBy viewer: String, settings: Mesh_V1_TenantSettings,
                                     isNode: (String) -> Bool) -> String? {
        // Through the current hub, the tenant prefix on its peer covers the device, except on the hub
        // itself (a hub always lists itself in the configs it makes, so that case does not arise).
        // Most devices' configs name the current hub: that test comes first, as the cheapest way out
        // of a delta that every node of a large tenant evaluates.
        let via = d.configHubID
        guard d.kind == .device, via != settings.hubNodeID, !via.isEmpty, via != viewer, deviceInMesh(d, settings: settings),
              !configLists(d, node: viewer), isNode(via) else { return nil }
        return via
    }

    /// Every peer `viewer` holds, ordered by member id: the full computation, which a delta must
    /// always agree with.
    public static func peers(seenBy viewer: String, settings: Mesh_V1_TenantSettings,
                             members: some Collection<Mesh_V1_Member>) -> [Mesh_V1_Peer] {
        var nodes = Set<String>()
        for m in members where m.kind == .node { nodes.insert(m.id) }
        var through: [String: [Mesh_V1_Member]] = [:]
        for m in members where m.kind == .device {
            if let via = routedThrough(m, seenBy: viewer, settings: settings, isNode: nodes.contains) {
                through[via, default: []].append(m)
            }
        }
        // Build the (few) peers, then sort them: sorting every member of a large tenant cost more
        // than everything else here.
        var out = members.compactMap { peer(for: $0, seenBy: viewer, settings: settings, routedThrough: through[$0.id] ?? []) }
        out.sort { $0.id < $1.id }
        return out
    }

    /// The same peers as ``peers(seenBy:settings:members:)``, read through a table's indexes: the
    /// nodes, the devices whose config lists the viewer (`listing`, which ``MeshState`` keeps), and
    /// the devices whose config names a hub that is not the current one (the only ones that can be
    /// routed through a node). At 10,000 nodes and 50,000 devices this touches about a sixth of the
    /// members.
    public static func peers(seenBy viewer: String, settings: Mesh_V1_TenantSettings, table: MemberTable,
                             listing: TreeSet<String>) -> [Mesh_V1_Peer] {
        let isNode = { (id: String) in table.nodeIDs.contains(id) }
        var through: [String: [Mesh_V1_Member]] = [:]
        for (hub, ids) in table.configHubs where hub != settings.hubNodeID && hub != viewer && isNode(hub) {
            for id in ids {
                guard let d = table[id], let via = routedThrough(d, seenBy: viewer, settings: settings, isNode: isNode) else { continue }
                through[via, default: []].append(d)
            }
        }
        var out: [Mesh_V1_Peer] = []
        out.reserveCapacity(table.nodeIDs.count)
        for id in table.nodeIDs {
            if let n = table[id], let p = peer(for: n, seenBy: viewer, settings: settings, routedThrough: through[id] ?? []) { out.append(p) }
        }
        for id in listing {
            if let d = table[id], let p = peer(for: d, seenBy: viewer, settings: settings) { out.append(p) }
        }
        out.sort { $0.id < $1.id }
        return out
    }

    /// The names the mesh DNS of a node serves: every member in the mesh (a device out of the mesh
    /// has no name), as `(dns name, IPv4, IPv6)`.
    public static func isNamed(_ m: Mesh_V1_Member, settings: Mesh_V1_TenantSettings) -> Bool {
        m.kind == .node || (m.kind == .device && deviceInMesh(m, settings: settings))
    }

    // MARK: What a device's config lists

    /// One `[Peer]` of a device config.
    public struct ConfigPeer: Sendable, Equatable {
        public var node: Mesh_V1_Member
        public var isHub: Bool
        public var allowedIPs: [String]
    }

    /// The nodes a new device config lists, hub first, then the oldest other nodes up to `maxNodes`
    /// in all. `nodesByAge` must be ordered oldest first. Empty when the tenant has no hub.
    public static func deviceConfig(nodesByAge: [Mesh_V1_Member], settings: Mesh_V1_TenantSettings, maxNodes: Int) -> [ConfigPeer] {
        guard let hub = nodesByAge.first(where: { $0.id == settings.hubNodeID }) else { return [] }
        var out = [ConfigPeer(node: hub, isHub: true, allowedIPs: hostRoutes(hub) + tenantPrefixes(settings))]
        for n in nodesByAge where n.id != hub.id && out.count < max(1, maxNodes) {
            out.append(ConfigPeer(node: n, isHub: false, allowedIPs: hostRoutes(n)))
        }
        return out
    }

    /// A node as a device config recorded it.
    public struct ListedNode: Sendable, Equatable, Codable {
        public var id: String
        public var name: String
        public var endpoint: String
        public var publicKey: String

        public init(id: String, name: String, endpoint: String, publicKey: String) {
            self.id = id
            self.name = name
            self.endpoint = endpoint
            self.publicKey = publicKey
        }
    }

    /// A change of the mesh that a device's static config cannot follow.
    public enum ConfigChange: Sendable, Equatable {
        case nodeRemoved(name: String)
        case nodeMoved(name: String, endpoint: String)
        case hubChanged(from: String, to: String)

        /// Why a config that lists the changed node, as its hub or as another node, is outdated by
        /// this change, or nil when it is not. (After a hub change, a config whose hub is the old hub
        /// keeps working while that node lives, but routes through it: it is outdated.)
        public func reason(listedAsHub: Bool) -> String? {
            switch self {
            case .nodeRemoved(let n): listedAsHub ? "its hub \(n) was removed" : "node \(n) was removed"
            case .nodeMoved(let n, let e): listedAsHub ? "its hub \(n) moved to \(e)" : "node \(n) moved to \(e)"
            case .hubChanged(let from, let to): listedAsHub ? "the tenant's hub changed from \(from) to \(to)" : nil
            }
        }
    }

    // MARK: Pieces

    /// A member's own /32 and /128.
    public static func hostRoutes(_ m: Mesh_V1_Member) -> [String] {
        ["\(m.ipv4)/32", "\(m.ipv6)/128"]
    }

    /// The tenant's whole prefixes (IPv4, IPv6).
    public static func tenantPrefixes(_ s: Mesh_V1_TenantSettings) -> [String] {
        [s.ipv4Prefix, s.ipv6Prefix].filter { !$0.isEmpty }
    }

    static func basePeer(_ m: Mesh_V1_Member, settings: Mesh_V1_TenantSettings) -> Mesh_V1_Peer {
        var p = Mesh_V1_Peer()
        p.id = m.id
        p.kind = m.kind
        p.publicKey = m.publicKey
        p.meshIps = [m.ipv4, m.ipv6]
        p.allowedIps = hostRoutes(m)
        p.dnsName = MeshName.dnsName(slug: m.slug, domain: settings.domain)
        return p
    }
}

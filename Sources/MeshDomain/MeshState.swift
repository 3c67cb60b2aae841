import HashTreeCollections
import MeshProto

/// A tenant's members with the indexes a node's view needs, independent of which node looks at
/// them. Every map is a persistent hash tree (`TreeDictionary`): a copy shares all storage and a
/// change copies only the path it touches, so a view of 50,000 members costs nothing to copy, and
/// many views (simulated nodes, a transition's "after") can share one decoded table.
public struct MemberTable: Sendable {
    /// Every member by id.
    public private(set) var members: TreeDictionary<String, Mesh_V1_Member> = [:]
    /// Device ids by the hub of their config: where a device may need to be routed through.
    private(set) var byConfigHub: TreeDictionary<String, TreeSet<String>> = [:]
    /// Member ids by public key (what a node's interface reports peers by).
    public private(set) var byKey: TreeDictionary<String, String> = [:]
    /// The ids of the members that are nodes.
    public private(set) var nodeIDs: TreeSet<String> = []
    /// Every node that a device's config has listed since the table was built (one that no config
    /// lists any more stays): a view whose node is not here holds no device as its own peer, and
    /// need not scan the members for them. Most nodes of a large tenant are never listed.
    public private(set) var listedNodes: TreeSet<String> = []

    public init() {}

    public init(_ members: some Sequence<Mesh_V1_Member>) {
        for m in members { put(m) }
    }

    public var count: Int { members.count }

    public subscript(id: String) -> Mesh_V1_Member? { members[id] }

    /// Adds or replaces a member (its whole state).
    public mutating func put(_ m: Mesh_V1_Member) {
        if let old = members[m.id] {
            if old.kind == .device, !old.configHubID.isEmpty, old.configHubID != m.configHubID || m.kind != .device {
                byConfigHub[old.configHubID]?.remove(m.id)
            }
            if old.kind == .node, m.kind != .node { nodeIDs.remove(m.id) }
            if old.publicKey != m.publicKey, byKey[old.publicKey] == m.id { byKey[old.publicKey] = nil }
        }
        members[m.id] = m
        if m.kind == .device { for n in m.configNodeIds where !listedNodes.contains(n) { listedNodes.insert(n) } }
        if m.kind == .device && !m.configHubID.isEmpty { byConfigHub[m.configHubID, default: []].insert(m.id) }
        if m.kind == .node { nodeIDs.insert(m.id) }
        if !m.publicKey.isEmpty { byKey[m.publicKey] = m.id }
    }

    /// Removes a member.
    public mutating func drop(_ id: String) {
        guard let old = members.removeValue(forKey: id) else { return }
        if old.kind == .device, !old.configHubID.isEmpty { byConfigHub[old.configHubID]?.remove(id) }
        if old.kind == .node { nodeIDs.remove(id) }
        if byKey[old.publicKey] == id { byKey[old.publicKey] = nil }
    }

    /// The ids of devices whose config's hub is `node`.
    func devices(withConfigHub node: String) -> TreeSet<String> { byConfigHub[node] ?? [] }

    /// The ids of the devices whose config lists `node` (a scan of every member unless no config
    /// ever listed it: a view keeps the set of its own node, ``MeshState/listing``, and follows it
    /// through its changes).
    public func devices(listing node: String) -> TreeSet<String> {
        var out = TreeSet<String>()
        guard listedNodes.contains(node) else { return out }
        for (id, m) in members where PeerCatalog.configLists(m, node: node) { out.insert(id) }
        return out
    }

    /// The hubs that device configs name, with the devices of each.
    var configHubs: TreeDictionary<String, TreeSet<String>> { byConfigHub }
}

/// A node's view of its tenant at a revision: the settings and every member, with an index so that
/// a change costs what it touches, not the size of the tenant. The peers come from ``PeerCatalog``
/// alone: ``peers()`` is the full computation and ``Transition/peer(for:)`` the incremental one,
/// and both call ``PeerCatalog/peer(for:seenBy:settings:routedThrough:)``.
///
/// A change is applied in two steps, so that whoever holds the state can change it only after the
/// WireGuard interface accepted the new peers: ``prepare(_:)`` works out the new state of what the
/// change touches without changing anything, and ``commit(_:)`` makes it the state.
///
/// The members live in a ``MemberTable`` of persistent maps: copying a state is O(1) and a change
/// copies O(log n) of it, which is what keeps ``peers(after:)`` and many views of one tenant cheap.
public struct MeshState: Sendable {
    /// The node this view belongs to.
    public let viewer: String
    public private(set) var revision: UInt64
    public private(set) var settings: Mesh_V1_TenantSettings
    /// Every member and its indexes.
    public private(set) var table: MemberTable
    /// Every member by id.
    public var members: TreeDictionary<String, Mesh_V1_Member> { table.members }
    /// The tenant's access policy (docs/policies.md); it never changes a peer.
    public private(set) var policy: Mesh_V1_PolicySet
    /// The devices whose config lists the viewer: the devices it holds as its own peers. Only the
    /// viewer's set is ever read, so the view keeps that one (found once, when the view is made, and
    /// followed through each change) instead of the table keeping one set per node that configs list:
    /// those were eight more index updates in every device's change, on every node.
    public private(set) var listing: TreeSet<String>

    /// A view from a full list of members.
    public init(viewer: String, revision: UInt64, settings: Mesh_V1_TenantSettings, members: some Sequence<Mesh_V1_Member>,
                policy: Mesh_V1_PolicySet = Mesh_V1_PolicySet()) {
        self.init(viewer: viewer, revision: revision, settings: settings, table: MemberTable(members), policy: policy)
    }

    /// A view over a table that is already built (shared, not copied).
    public init(viewer: String, revision: UInt64, settings: Mesh_V1_TenantSettings, table: MemberTable,
                policy: Mesh_V1_PolicySet = Mesh_V1_PolicySet()) {
        self.viewer = viewer
        self.revision = revision
        self.settings = settings
        self.table = table
        self.policy = policy
        self.listing = table.devices(listing: viewer)
    }

    /// An empty view (before the first sync).
    public init(viewer: String) {
        self.init(viewer: viewer, revision: 0, settings: Mesh_V1_TenantSettings(), table: MemberTable())
    }

    /// This node's own member entry, once known.
    public var this: Mesh_V1_Member? { members[viewer] }

    /// Every peer the viewer holds (the full computation, through the table's indexes: it touches the
    /// nodes and the devices the viewer holds or routes, not every member).
    public func peers() -> [Mesh_V1_Peer] {
        PeerCatalog.peers(seenBy: viewer, settings: settings, table: table, listing: listing)
    }

    /// The peer the viewer holds for member `id`, or nil.
    public func peer(for id: String) -> Mesh_V1_Peer? {
        Overlay(base: self).peer(for: id)
    }

    // MARK: Changes

    /// What a change does to the view: the peers it alters, before and after. Nothing is changed
    /// until ``MeshState/commit(_:)``.
    public struct Transition: Sendable {
        fileprivate var next: Next
        /// The revision of the change.
        public let revision: UInt64
        /// True when this node itself was removed from the mesh.
        public let removesViewer: Bool
        /// For a change that touches few members: the peers of those members before and after
        /// (nil: no peer). Nil for a change that touches everything (new settings): compare
        /// ``MeshState/peers()`` with ``MeshState/peers(after:)`` then.
        public let touched: [String: (before: Mesh_V1_Peer?, after: Mesh_V1_Peer?)]?

        fileprivate enum Next: Sendable {
            case member(id: String, value: Mesh_V1_Member?)
            case whole(MeshState)
            case policy(Mesh_V1_PolicySet)
            case nothing
        }
    }

    /// Works out a change (an upsert, a removal, new settings or a new policy) without applying it.
    public func prepare(_ change: Mesh_V1_PeersUpdated) -> Transition {
        let id: String, value: Mesh_V1_Member?
        switch change.change {
        case .upsert(let m):
            id = m.id
            value = m
        case .remove(let r):
            id = r.id
            value = nil
        case .settings(let s):
            var whole = self
            whole.settings = s
            return Transition(next: .whole(whole), revision: change.revision, removesViewer: false, touched: nil)
        case .policy(let p):
            return Transition(next: .policy(p), revision: change.revision, removesViewer: false, touched: [:])
        case nil:
            return Transition(next: .nothing, revision: change.revision, removesViewer: false, touched: [:])
        }
        let before = Overlay(base: self), after = Overlay(base: self, changed: id, value: value)
        // The member itself, and the nodes it is routed through before and after.
        var ids: Set<String> = [id]
        if let old = table[id], let via = before.via(old) { ids.insert(via) }
        if let value, let via = after.via(value) { ids.insert(via) }
        var touched: [String: (before: Mesh_V1_Peer?, after: Mesh_V1_Peer?)] = [:]
        for i in ids { touched[i] = (before.peer(for: i), after.peer(for: i)) }
        return Transition(next: .member(id: id, value: value), revision: change.revision,
                          removesViewer: value == nil && id == viewer, touched: touched)
    }

    /// Every peer after `t`.
    public func peers(after t: Transition) -> [Mesh_V1_Peer] {
        switch t.next {
        case .whole(let s): return s.peers()
        case .nothing, .policy: return peers()
        case .member:
            var copy = self
            copy.commit(t)
            return copy.peers()
        }
    }

    /// Makes `t` the state.
    public mutating func commit(_ t: Transition) {
        switch t.next {
        case .whole(let s): self = s
        case .member(let id, let value):
            let listed = value.map { PeerCatalog.configLists($0, node: viewer) } ?? false
            if listed != (table[id].map { PeerCatalog.configLists($0, node: viewer) } ?? false) {
                if listed { listing.insert(id) } else { listing.remove(id) }
            }
            if let value { table.put(value) } else { table.drop(id) }
        case .policy(let p): policy = p
        case .nothing: break
        }
        revision = max(revision, t.revision)
    }

    /// The state read through at most one pending member change, without copying anything.
    private struct Overlay {
        let base: MeshState
        var changed: String? = nil
        var value: Mesh_V1_Member? = nil

        func member(_ id: String) -> Mesh_V1_Member? { id == changed ? value : base.table[id] }
        func isNode(_ id: String) -> Bool { member(id)?.kind == .node }

        func via(_ d: Mesh_V1_Member) -> String? {
            PeerCatalog.routedThrough(d, seenBy: base.viewer, settings: base.settings, isNode: isNode)
        }

        func peer(for id: String) -> Mesh_V1_Peer? {
            guard let m = member(id) else { return nil }
            return PeerCatalog.peer(for: m, seenBy: base.viewer, settings: base.settings, routedThrough: routed(through: m))
        }

        /// The devices whose addresses ride on node `n`'s peer for the viewer.
        func routed(through n: Mesh_V1_Member) -> [Mesh_V1_Member] {
            // By the rules, nothing is routed through the current hub explicitly: skip its (large) set.
            guard n.kind == .node, n.id != base.settings.hubNodeID else { return [] }
            var ids = base.table.devices(withConfigHub: n.id)
            if let changed {
                ids.remove(changed)
                if let value, value.kind == .device, value.configHubID == n.id { ids.insert(changed) }
            }
            return ids.compactMap(member).filter { via($0) == n.id }
        }
    }
}

import MeshNet
import MeshProto
import MeshWireGuard

/// What the control plane wants a node's interface to hold for one peer.
public struct DesiredPeer: Hashable, Sendable {
    public var publicKey: WireGuardKey
    /// Sorted, so that two equal sets compare equal.
    public var allowedIPs: [IPPrefix]
    /// Set for node peers (devices roam, so their endpoint is learned from their packets).
    public var endpoint: HostPort?
    public var persistentKeepalive: UInt16

    public init(publicKey: WireGuardKey, allowedIPs: [IPPrefix], endpoint: HostPort?, persistentKeepalive: UInt16) {
        self.publicKey = publicKey
        self.allowedIPs = allowedIPs.sorted()
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
    }

    /// Builds the desired state from a protobuf peer; nil if the peer is malformed (bad key or
    /// prefix), which the caller logs and skips.
    public init?(_ peer: Mesh_V1_Peer) {
        guard let key = WireGuardKey(base64: peer.publicKey) else { return nil }
        var prefixes: [IPPrefix] = []
        for a in peer.allowedIps {
            guard let p = IPPrefix(a), p.isNetwork else { return nil }
            prefixes.append(p)
        }
        var endpoint: HostPort?
        if !peer.endpoint.isEmpty {
            guard let hp = HostPort(peer.endpoint) else { return nil }
            endpoint = hp
        }
        self.init(publicKey: key, allowedIPs: prefixes, endpoint: endpoint, persistentKeepalive: UInt16(clamping: peer.persistentKeepalive))
    }
}

/// The difference between the peers an interface holds and the peers it should hold, as a pure
/// value: computing it touches nothing, so it is tested exhaustively on its own, and applying it is
/// a thin step that sends only the difference (never "replace all peers", which would reset every
/// session and made wireguard-go's memory grow).
///
/// Endpoints: a peer that is added gets its configured endpoint. Against the live device
/// (``init(current:desired:)``) the live endpoint of an existing peer wins, because WireGuard
/// updates it from authenticated packets (a node behind NAT, a roaming phone). Between two desired
/// states (``init(from:to:)``, a change from the control plane) an endpoint is set only when the
/// control plane changed it.
public struct PeerDiff: Equatable, Sendable {
    /// Peers to create.
    public var add: [DesiredPeer] = []
    /// Existing peers whose allowed IPs or keepalive must change.
    public var update: [DesiredPeer] = []
    /// Peers to remove.
    public var remove: [WireGuardKey] = []

    public init() {}

    public init(add: [DesiredPeer], update: [DesiredPeer], remove: [WireGuardKey]) {
        self.add = add
        self.update = update
        self.remove = remove
    }

    /// Whether there is nothing to do.
    public var isEmpty: Bool { add.isEmpty && update.isEmpty && remove.isEmpty }

    /// The full comparison of what is live against what is desired.
    public init(current: [WireGuardPeer], desired: [DesiredPeer]) {
        var live: [WireGuardKey: WireGuardPeer] = [:]
        for p in current { live[p.publicKey] = p }
        var wanted = Set<WireGuardKey>()
        for d in desired.sorted(by: { $0.publicKey < $1.publicKey }) {
            guard wanted.insert(d.publicKey).inserted else { continue }
            if let l = live[d.publicKey] {
                if l.allowedIPs.sorted() != d.allowedIPs || l.persistentKeepaliveInterval != d.persistentKeepalive {
                    var u = d
                    u.endpoint = nil  // the live endpoint wins
                    update.append(u)
                }
            } else {
                add.append(d)
            }
        }
        remove = current.map(\.publicKey).filter { !wanted.contains($0) }.sorted()
    }

    /// The difference between two desired states of the same peers (a change the control plane made):
    /// new keys are added, gone keys removed, and a peer whose allowed IPs, keepalive or configured
    /// endpoint changed is updated (with the endpoint only when that changed).
    public init(from old: [DesiredPeer], to new: [DesiredPeer]) {
        var before: [WireGuardKey: DesiredPeer] = [:]
        for p in old { before[p.publicKey] = p }
        var wanted = Set<WireGuardKey>()
        for d in new.sorted(by: { $0.publicKey < $1.publicKey }) {
            guard wanted.insert(d.publicKey).inserted else { continue }
            if let b = before[d.publicKey] {
                guard b != d else { continue }
                var u = d
                if b.endpoint == d.endpoint { u.endpoint = nil }
                update.append(u)
            } else {
                add.append(d)
            }
        }
        remove = old.map(\.publicKey).filter { !wanted.contains($0) }.sorted()
    }

    /// The WireGuard changes that carry out this diff: adds with endpoint, updates that replace
    /// allowed IPs (update-only, so a peer removed meanwhile is not re-created), removals.
    public var configs: [WireGuardPeerConfig] {
        var out: [WireGuardPeerConfig] = []
        for d in add {
            out.append(WireGuardPeerConfig(publicKey: d.publicKey, endpoint: d.endpoint, persistentKeepaliveInterval: d.persistentKeepalive,
                                           replaceAllowedIPs: true, allowedIPs: d.allowedIPs))
        }
        for d in update {
            out.append(WireGuardPeerConfig(publicKey: d.publicKey, updateOnly: true, endpoint: d.endpoint,
                                           persistentKeepaliveInterval: d.persistentKeepalive, replaceAllowedIPs: true, allowedIPs: d.allowedIPs))
        }
        for k in remove { out.append(.removing(k)) }
        return out
    }
}

import MeshNet

/// Which control channel serves a WireGuard device.
public enum WireGuardBackendKind: String, Sendable, Hashable, CustomStringConvertible {
    /// The in-kernel module, driven over generic netlink.
    case kernel
    /// A userspace implementation (wireguard-go, boringtun), driven over its UAPI unix socket.
    case userspace

    public var description: String { rawValue }
}

/// A point in time as WireGuard reports it: seconds and nanoseconds since the Unix epoch.
public struct WireGuardTimestamp: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    public var seconds: Int64
    /// Nanoseconds past `seconds`, 0..<1_000_000_000.
    public var nanoseconds: Int64

    /// Creates a timestamp.
    public init(seconds: Int64, nanoseconds: Int64) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// The zero timestamp, which WireGuard uses for "never".
    public static let never = WireGuardTimestamp(seconds: 0, nanoseconds: 0)

    /// True when this is the zero timestamp.
    public var isNever: Bool { seconds == 0 && nanoseconds == 0 }

    public var description: String { "\(seconds).\(nanoseconds)" }

    public static func < (l: Self, r: Self) -> Bool { (l.seconds, l.nanoseconds) < (r.seconds, r.nanoseconds) }
}

/// The state of one WireGuard interface, as read back from the kernel or the userspace daemon.
public struct WireGuardDevice: Hashable, Sendable {
    /// The interface name, e.g. `wg-quazzar0`.
    public var name: String
    /// The backend that produced this reading.
    public var backend: WireGuardBackendKind
    /// The private key, nil when none is set.
    public var privateKey: WireGuardKey?
    /// The public key derived from the private key, nil when no private key is set.
    public var publicKey: WireGuardKey?
    /// The UDP listen port (0 when not bound yet).
    public var listenPort: UInt16
    /// The firewall mark on outgoing packets, 0 when off.
    public var firewallMark: UInt32
    /// Every peer. Order is whatever the backend reports; compare with ``normalized()``.
    public var peers: [WireGuardPeer]

    /// Creates a device reading.
    public init(name: String, backend: WireGuardBackendKind, privateKey: WireGuardKey? = nil,
                publicKey: WireGuardKey? = nil, listenPort: UInt16 = 0, firewallMark: UInt32 = 0,
                peers: [WireGuardPeer] = []) {
        self.name = name
        self.backend = backend
        self.privateKey = privateKey
        self.publicKey = publicKey
        self.listenPort = listenPort
        self.firewallMark = firewallMark
        self.peers = peers
    }

    /// The same reading with peers sorted by public key and each peer's allowed IPs sorted, so two
    /// readings of the same state compare equal whichever backend produced them.
    public func normalized() -> WireGuardDevice {
        var copy = self
        copy.peers = peers.map { p in
            var p = p
            p.allowedIPs.sort()
            return p
        }.sorted { $0.publicKey < $1.publicKey }
        return copy
    }
}

/// One peer of a device, as read back.
public struct WireGuardPeer: Hashable, Sendable {
    /// The peer's public key, which identifies it.
    public var publicKey: WireGuardKey
    /// The preshared key, nil when none (all-zero) is set.
    public var presharedKey: WireGuardKey?
    /// The current endpoint, nil when unknown.
    public var endpoint: HostPort?
    /// Seconds between keepalives, 0 when off.
    public var persistentKeepaliveInterval: UInt16
    /// The last completed handshake, ``WireGuardTimestamp/never`` when none.
    public var lastHandshake: WireGuardTimestamp
    /// Bytes received from the peer.
    public var receiveBytes: UInt64
    /// Bytes sent to the peer.
    public var transmitBytes: UInt64
    /// The prefixes routed to this peer.
    public var allowedIPs: [IPPrefix]
    /// The WireGuard protocol version in use (1 today).
    public var protocolVersion: Int

    /// Creates a peer reading.
    public init(publicKey: WireGuardKey, presharedKey: WireGuardKey? = nil, endpoint: HostPort? = nil,
                persistentKeepaliveInterval: UInt16 = 0, lastHandshake: WireGuardTimestamp = .never,
                receiveBytes: UInt64 = 0, transmitBytes: UInt64 = 0, allowedIPs: [IPPrefix] = [],
                protocolVersion: Int = 1) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
        self.lastHandshake = lastHandshake
        self.receiveBytes = receiveBytes
        self.transmitBytes = transmitBytes
        self.allowedIPs = allowedIPs
        self.protocolVersion = protocolVersion
    }
}

/// What a periodic reading needs of a peer: who it is and what it did, without its allowed IPs.
public struct WireGuardPeerActivity: Hashable, Sendable {
    /// The peer's public key, which identifies it.
    public var publicKey: WireGuardKey
    /// The current endpoint, nil when unknown.
    public var endpoint: HostPort?
    /// The last completed handshake, ``WireGuardTimestamp/never`` when none.
    public var lastHandshake: WireGuardTimestamp
    /// Bytes received from the peer.
    public var receiveBytes: UInt64
    /// Bytes sent to the peer.
    public var transmitBytes: UInt64

    /// Creates a peer activity reading.
    public init(publicKey: WireGuardKey, endpoint: HostPort? = nil, lastHandshake: WireGuardTimestamp = .never,
                receiveBytes: UInt64 = 0, transmitBytes: UInt64 = 0) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.lastHandshake = lastHandshake
        self.receiveBytes = receiveBytes
        self.transmitBytes = transmitBytes
    }

    /// The activity part of a full peer reading.
    public init(_ peer: WireGuardPeer) {
        self.init(publicKey: peer.publicKey, endpoint: peer.endpoint, lastHandshake: peer.lastHandshake,
                  receiveBytes: peer.receiveBytes, transmitBytes: peer.transmitBytes)
    }
}

/// A device's key, port and every peer's activity: the reading a node takes every second or so.
/// At 50,000 peers it is a few megabytes where a full reading (allowed IPs included) is several
/// times that.
public struct WireGuardActivityReading: Hashable, Sendable {
    /// The interface name.
    public var name: String
    /// The private key, nil when none is set.
    public var privateKey: WireGuardKey?
    /// The UDP listen port (0 when not bound yet).
    public var listenPort: UInt16
    /// Every peer, in the backend's order.
    public var peers: [WireGuardPeerActivity]

    /// Creates an activity reading.
    public init(name: String, privateKey: WireGuardKey?, listenPort: UInt16, peers: [WireGuardPeerActivity]) {
        self.name = name
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.peers = peers
    }

    /// The activity reading of a full reading.
    public init(_ device: WireGuardDevice) {
        self.init(name: device.name, privateKey: device.privateKey, listenPort: device.listenPort,
                  peers: device.peers.map(WireGuardPeerActivity.init))
    }
}

/// A change to a device. Every optional field left `nil` is left unchanged on the device;
/// "clear" is spelled with an explicit value (``WireGuardKey/zero``, port 0, mark 0).
public struct WireGuardConfig: Hashable, Sendable {
    /// New private key; ``WireGuardKey/zero`` removes it.
    public var privateKey: WireGuardKey?
    /// New listen port; 0 lets the backend choose.
    public var listenPort: UInt16?
    /// New firewall mark; 0 turns it off.
    public var firewallMark: UInt32?
    /// Remove every existing peer before applying ``peers``.
    public var replacePeers: Bool
    /// Per-peer changes, applied in order.
    public var peers: [WireGuardPeerConfig]
    /// Read the device first when ``peers`` has update-only entries, to report the ones that do not
    /// exist (``WireGuardConfigureReport/skippedUpdateOnlyPeers``). The read is a full dump: on
    /// 10,000 peers it costs tens of milliseconds and, with wireguard-go, megabytes of daemon garbage.
    /// Turn it off on hot paths that do not need the report.
    public var reportSkippedUpdateOnlyPeers: Bool

    /// Creates a change; the defaults change nothing.
    public init(privateKey: WireGuardKey? = nil, listenPort: UInt16? = nil, firewallMark: UInt32? = nil,
                replacePeers: Bool = false, peers: [WireGuardPeerConfig] = [], reportSkippedUpdateOnlyPeers: Bool = true) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.firewallMark = firewallMark
        self.replacePeers = replacePeers
        self.peers = peers
        self.reportSkippedUpdateOnlyPeers = reportSkippedUpdateOnlyPeers
    }
}

/// A change to one peer, identified by its public key.
public struct WireGuardPeerConfig: Hashable, Sendable {
    /// The peer to change (or create).
    public var publicKey: WireGuardKey
    /// Remove the peer; every other field is then ignored.
    public var remove: Bool
    /// Change the peer only if it already exists; never create it.
    /// See ``WireGuardConfigureReport/skippedUpdateOnlyPeers`` for how a missing peer is reported.
    public var updateOnly: Bool
    /// New preshared key; ``WireGuardKey/zero`` removes it.
    public var presharedKey: WireGuardKey?
    /// New endpoint; the host must be an IP address literal (no DNS here: callers resolve).
    public var endpoint: HostPort?
    /// New keepalive interval in seconds; 0 turns it off.
    public var persistentKeepaliveInterval: UInt16?
    /// Remove the peer's allowed IPs before adding ``allowedIPs``; with an empty list this clears them.
    public var replaceAllowedIPs: Bool
    /// Prefixes to add to the peer (or to set, with ``replaceAllowedIPs``).
    public var allowedIPs: [IPPrefix]

    /// Creates a peer change; the defaults create the peer if missing and change nothing else.
    public init(publicKey: WireGuardKey, remove: Bool = false, updateOnly: Bool = false,
                presharedKey: WireGuardKey? = nil, endpoint: HostPort? = nil,
                persistentKeepaliveInterval: UInt16? = nil, replaceAllowedIPs: Bool = false,
                allowedIPs: [IPPrefix] = []) {
        self.publicKey = publicKey
        self.remove = remove
        self.updateOnly = updateOnly
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
        self.replaceAllowedIPs = replaceAllowedIPs
        self.allowedIPs = allowedIPs
    }

    /// A change that removes the peer.
    public static func removing(_ publicKey: WireGuardKey) -> WireGuardPeerConfig {
        WireGuardPeerConfig(publicKey: publicKey, remove: true)
    }
}

/// What a configure call did beyond succeeding.
public struct WireGuardConfigureReport: Hashable, Sendable {
    /// Update-only peers that did not exist on the device, so neither backend touched them.
    /// Both the kernel and wireguard-go skip such peers silently; this library reads the device's
    /// peer list first (only when the change has update-only peers, and unless
    /// ``WireGuardConfig/reportSkippedUpdateOnlyPeers`` is off) so the caller learns of them.
    public var skippedUpdateOnlyPeers: [WireGuardKey]
    /// How many requests carried the change (netlink messages, or UAPI `set` operations).
    public var requestCount: Int

    /// Creates a report.
    public init(skippedUpdateOnlyPeers: [WireGuardKey] = [], requestCount: Int = 0) {
        self.skippedUpdateOnlyPeers = skippedUpdateOnlyPeers
        self.requestCount = requestCount
    }
}

/// Controls WireGuard devices through one backend. Both implementations speak the same model, so
/// a caller never needs to know which one it holds.
public protocol WireGuardBackend: Sendable {
    /// Which backend this is.
    var kind: WireGuardBackendKind { get }

    /// Names of the WireGuard devices this backend can see.
    func deviceNames() async throws(WireGuardError) -> [String]

    /// Reads every field of one device, every peer included.
    func device(named name: String) async throws(WireGuardError) -> WireGuardDevice

    /// Reads one device's key, listen port and every peer's activity, without allowed IPs. The
    /// default reads the whole device; a backend that can skip the rest on the way does.
    func activity(named name: String) async throws(WireGuardError) -> WireGuardActivityReading

    /// Applies a change to one device. Nothing is restarted and no file is written.
    @discardableResult
    func configure(device name: String, _ config: WireGuardConfig) async throws(WireGuardError) -> WireGuardConfigureReport
}

extension WireGuardBackend {
    public func activity(named name: String) async throws(WireGuardError) -> WireGuardActivityReading {
        WireGuardActivityReading(try await device(named: name))
    }
}

extension WireGuardConfig {
    /// Rejects what no backend can express, before anything is sent.
    func validate() throws(WireGuardError) {
        for peer in peers where !peer.remove {
            if let endpoint = peer.endpoint, endpoint.address == nil {
                throw .invalidConfiguration("endpoint \(endpoint) of peer \(peer.publicKey) is not an IP address literal")
            }
            for prefix in peer.allowedIPs where prefix.length > prefix.address.bitWidth {
                throw .invalidConfiguration("allowed IP \(prefix) of peer \(peer.publicKey) has a bad length")
            }
        }
    }

    /// The public keys of update-only peers, for the missing-peer check (empty when it is off).
    var updateOnlyKeys: [WireGuardKey] {
        guard reportSkippedUpdateOnlyPeers else { return [] }
        return peers.filter { $0.updateOnly && !$0.remove }.map(\.publicKey)
    }
}

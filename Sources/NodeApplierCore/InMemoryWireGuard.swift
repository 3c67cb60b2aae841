import HashTreeCollections
import MeshNet
import MeshWireGuard
import Synchronization

/// A WireGuard backend that keeps devices in memory, with the semantics of the real ones
/// (update-only skips missing peers, replace-allowed-ips, an allowed IP moves to the peer that
/// claims it last). For unit tests of the agent's logic and for simulating many nodes in one
/// process in benchmarks; the tests that prove the mesh works use real WireGuard.
///
/// A device is kept in persistent maps (peers by key, and which peer owns each allowed IP), so a
/// one-peer change costs O(log n) whatever the device holds, and devices made with
/// ``init(sharing:device:as:recordCalls:)`` share one device's storage until they change it (many
/// simulated nodes that restarted with the same peers on their interfaces).
public final class InMemoryWireGuard: WireGuardBackend, Sendable {
    public var kind: WireGuardBackendKind { .userspace }

    /// One device's state.
    struct Device: Sendable {
        var name: String
        var privateKey: WireGuardKey?
        var listenPort: UInt16 = 0
        var peers: TreeDictionary<WireGuardKey, WireGuardPeer> = [:]
        /// The peer that holds each allowed IP.
        var owner: TreeDictionary<IPPrefix, WireGuardKey> = [:]

        var reading: WireGuardDevice {
            WireGuardDevice(name: name, backend: .userspace, privateKey: privateKey, listenPort: listenPort, peers: Array(peers.values))
        }

        mutating func removePeer(_ key: WireGuardKey) {
            guard let old = peers.removeValue(forKey: key) else { return }
            for a in old.allowedIPs where owner[a] == key { owner[a] = nil }
        }

        mutating func apply(_ pc: WireGuardPeerConfig, report: inout WireGuardConfigureReport) {
            if pc.remove {
                removePeer(pc.publicKey)
                return
            }
            let existing = peers[pc.publicKey]
            if existing == nil && pc.updateOnly {
                report.skippedUpdateOnlyPeers.append(pc.publicKey)
                return
            }
            var peer = existing ?? WireGuardPeer(publicKey: pc.publicKey)
            if let e = pc.endpoint { peer.endpoint = e }
            if let k = pc.persistentKeepaliveInterval { peer.persistentKeepaliveInterval = k }
            if pc.replaceAllowedIPs {
                for a in peer.allowedIPs where owner[a] == pc.publicKey { owner[a] = nil }
                peer.allowedIPs = []
            }
            for a in pc.allowedIPs where !peer.allowedIPs.contains(a) {
                // An allowed IP belongs to one peer: claiming it takes it from the other.
                if let other = owner[a], other != pc.publicKey { peers[other]?.allowedIPs.removeAll { $0 == a } }
                owner[a] = pc.publicKey
                peer.allowedIPs.append(a)
            }
            peers[pc.publicKey] = peer
        }
    }

    private let devices: Mutex<[String: Device]>
    private let recordCalls: Bool
    /// Every configure call, for tests that check what was sent (unless made with `recordCalls: false`).
    public let calls = Mutex<[WireGuardConfig]>([])

    public init(devices names: [String] = [], recordCalls: Bool = true) {
        var d: [String: Device] = [:]
        for n in names { d[n] = Device(name: n) }
        devices = Mutex(d)
        self.recordCalls = recordCalls
    }

    /// A backend with one device, `name`, holding what `other`'s device `device` holds now; the two
    /// share storage until either changes.
    public init(sharing other: InMemoryWireGuard, device: String, as name: String, recordCalls: Bool = false) {
        var d = other.devices.withLock { $0[device] } ?? Device(name: device)
        d.name = name
        devices = Mutex([name: d])
        self.recordCalls = recordCalls
    }

    public func deviceNames() async throws(WireGuardError) -> [String] { devices.withLock { Array($0.keys).sorted() } }

    public func device(named name: String) async throws(WireGuardError) -> WireGuardDevice {
        // Copy the persistent maps under the lock (O(1)); build the reading outside it.
        guard let d = devices.withLock({ $0[name] }) else { throw .deviceNotFound(name) }
        return d.reading
    }

    /// How many peers device `name` holds (without building a reading).
    public func peerCount(device name: String) -> Int { devices.withLock { $0[name]?.peers.count ?? 0 } }

    @discardableResult
    public func configure(device name: String, _ config: WireGuardConfig) async throws(WireGuardError) -> WireGuardConfigureReport {
        if recordCalls { calls.withLock { $0.append(config) } }
        return try devices.withLock { (all: inout [String: Device]) throws(WireGuardError) -> WireGuardConfigureReport in
            guard var d = all.removeValue(forKey: name) else { throw .deviceNotFound(name) }
            var report = WireGuardConfigureReport(requestCount: 1)
            if let k = config.privateKey { d.privateKey = k }
            if let p = config.listenPort { d.listenPort = p }
            if config.replacePeers {
                d.peers = [:]
                d.owner = [:]
            }
            for pc in config.peers { d.apply(pc, report: &report) }
            all[name] = d
            return report
        }
    }

    /// Marks a handshake (and traffic) on a peer, as if it had happened on the wire.
    public func simulateHandshake(device name: String, peer key: WireGuardKey, at seconds: Int64, rx: UInt64, tx: UInt64) {
        devices.withLock { all in
            guard var d = all.removeValue(forKey: name) else { return }
            if var p = d.peers[key] {
                p.lastHandshake = WireGuardTimestamp(seconds: seconds, nanoseconds: 0)
                p.receiveBytes = rx
                p.transmitBytes = tx
                d.peers[key] = p
            }
            all[name] = d
        }
    }
}

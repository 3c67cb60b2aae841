import MeshNet
import MeshWireGuard
import Synchronization

/// A WireGuard backend that keeps devices in memory, with the semantics of the real ones
/// (update-only skips missing peers, replace-allowed-ips, an allowed IP moves to the peer that
/// claims it last). For unit tests of the agent's logic and for simulating many nodes in one
/// process in benchmarks; the tests that prove the mesh works use real WireGuard.
public final class InMemoryWireGuard: WireGuardBackend, Sendable {
    public var kind: WireGuardBackendKind { .userspace }
    private let devices = Mutex<[String: WireGuardDevice]>([:])
    /// Every configure call, for tests that check what was sent.
    public let calls = Mutex<[WireGuardConfig]>([])

    public init(devices names: [String] = []) {
        devices.withLock { d in for n in names { d[n] = WireGuardDevice(name: n, backend: .userspace) } }
    }

    public func deviceNames() async throws(WireGuardError) -> [String] { devices.withLock { Array($0.keys).sorted() } }

    public func device(named name: String) async throws(WireGuardError) -> WireGuardDevice {
        guard let d = devices.withLock({ $0[name] }) else { throw .deviceNotFound(name) }
        return d
    }

    @discardableResult
    public func configure(device name: String, _ config: WireGuardConfig) async throws(WireGuardError) -> WireGuardConfigureReport {
        calls.withLock { $0.append(config) }
        return try devices.withLock { (all: inout [String: WireGuardDevice]) throws(WireGuardError) -> WireGuardConfigureReport in
            guard var d = all[name] else { throw .deviceNotFound(name) }
            var report = WireGuardConfigureReport(requestCount: 1)
            if let k = config.privateKey { d.privateKey = k }
            if let p = config.listenPort { d.listenPort = p }
            if config.replacePeers { d.peers = [] }
            for pc in config.peers {
                let i = d.peers.firstIndex { $0.publicKey == pc.publicKey }
                if pc.remove {
                    if let i { d.peers.remove(at: i) }
                    continue
                }
                if i == nil && pc.updateOnly {
                    report.skippedUpdateOnlyPeers.append(pc.publicKey)
                    continue
                }
                var peer = i.map { d.peers[$0] } ?? WireGuardPeer(publicKey: pc.publicKey)
                if let e = pc.endpoint { peer.endpoint = e }
                if let k = pc.persistentKeepaliveInterval { peer.persistentKeepaliveInterval = k }
                if pc.replaceAllowedIPs { peer.allowedIPs = [] }
                for a in pc.allowedIPs where !peer.allowedIPs.contains(a) {
                    // An allowed IP belongs to one peer: claiming it takes it from the other.
                    for j in d.peers.indices where d.peers[j].publicKey != pc.publicKey { d.peers[j].allowedIPs.removeAll { $0 == a } }
                    peer.allowedIPs.append(a)
                }
                if let i { d.peers[i] = peer } else { d.peers.append(peer) }
            }
            all[name] = d
            return report
        }
    }

    /// Marks a handshake (and traffic) on a peer, as if it had happened on the wire.
    public func simulateHandshake(device name: String, peer key: WireGuardKey, at seconds: Int64, rx: UInt64, tx: UInt64) {
        devices.withLock { all in
            guard var d = all[name], let i = d.peers.firstIndex(where: { $0.publicKey == key }) else { return }
            d.peers[i].lastHandshake = WireGuardTimestamp(seconds: seconds, nanoseconds: 0)
            d.peers[i].receiveBytes = rx
            d.peers[i].transmitBytes = tx
            all[name] = d
        }
    }
}

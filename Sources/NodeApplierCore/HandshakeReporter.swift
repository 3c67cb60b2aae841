import Foundation
import Logging
import MeshDomain
import MeshProto
import MeshWireGuard
import Synchronization

/// Reads the device every interval and reports only what changed since the last reading: a new
/// handshake, a changed endpoint, changed counters. ProvisionSvc turns the reports into device
/// status (online within a second or two of the first handshake) and traffic totals.
public struct HandshakeReporter: Sendable {
    let agent: NodeAgent
    let wg: any WireGuardBackend
    let interval: Duration
    let logger: Logger
    let publish: @Sendable (Mesh_V1_HandshakeReport) async -> Void
    let resend = ResendFlag()

    /// Set after a bus reconnect: reports sent just before an outage may never have arrived, and
    /// only changes are reported, so the next reading reports every peer.
    final class ResendFlag: Sendable {
        let flag = Mutex(false)
    }

    /// Makes the next reading report every peer, not only what changed.
    public func reportEverythingNext() { resend.flag.withLock { $0 = true } }

    public init(agent: NodeAgent, backend: any WireGuardBackend, interval: Duration, logger: Logger,
                publish: @escaping @Sendable (Mesh_V1_HandshakeReport) async -> Void) {
        self.agent = agent
        self.wg = backend
        self.interval = interval
        self.logger = logger
        self.publish = publish
    }

    struct Seen: Equatable {
        var handshake: WireGuardTimestamp
        var rx: UInt64
        var tx: UInt64
        var endpoint: String
    }

    /// Reports changes until cancelled.
    public func run() async {
        var last: [WireGuardKey: Seen] = [:]
        while !Task.isCancelled {
            if resend.flag.withLock({ f in defer { f = false }; return f }) { last = [:] }
            if let device = try? await wg.device(named: agent.interface) {
                let (report, now) = Self.changes(device: device, last: last, agent: agent)
                last = now
                if !report.peers.isEmpty { await publish(report) }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// The report of what changed between `last` and `device`, and the new reading.
    static func changes(device: WireGuardDevice, last: [WireGuardKey: Seen], agent: NodeAgent) -> (Mesh_V1_HandshakeReport, [WireGuardKey: Seen]) {
        var now: [WireGuardKey: Seen] = [:]
        var report = Mesh_V1_HandshakeReport()
        report.tenantID = agent.identity.tenantID
        report.nodeID = agent.identity.nodeID
        report.observedAtMs = Date().unixMilliseconds
        var changed: [WireGuardPeer] = []
        for p in device.peers {
            let seen = Seen(handshake: p.lastHandshake, rx: p.receiveBytes, tx: p.transmitBytes, endpoint: p.endpoint?.description ?? "")
            now[p.publicKey] = seen
            guard last[p.publicKey] != seen else { continue }
            // Nothing to say about a peer that never handshook and never moved a byte.
            if last[p.publicKey] == nil && p.lastHandshake.isNever && p.receiveBytes == 0 && p.transmitBytes == 0 { continue }
            changed.append(p)
        }
        let known = agent.identities(ofKeys: changed.map(\.publicKey.base64))
        report.peers = changed.map { PeerStatsMapping.stats($0, known: known[$0.publicKey.base64]) }
        return (report, now)
    }
}

/// WireGuard peer readings as protobuf.
enum PeerStatsMapping {
    static func stats(_ p: WireGuardPeer, known: (id: String, dnsName: String)?) -> Mesh_V1_PeerStats {
        var s = Mesh_V1_PeerStats()
        s.publicKey = p.publicKey.base64
        s.endpoint = p.endpoint?.description ?? ""
        s.lastHandshakeMs = p.lastHandshake.isNever ? 0 : p.lastHandshake.seconds * 1000 + p.lastHandshake.nanoseconds / 1_000_000
        s.rxBytes = p.receiveBytes
        s.txBytes = p.transmitBytes
        s.allowedIps = p.allowedIPs.map(\.description)
        s.persistentKeepalive = UInt32(p.persistentKeepaliveInterval)
        if let known {
            s.peerID = known.id
            s.dnsName = known.dnsName
        }
        return s
    }
}

import Foundation
import Logging
import MeshDomain
import MeshProto
import MeshNet
import MeshWireGuard
import Synchronization

/// Reads the device every interval and reports only what changed since the last reading: a new
/// handshake, a changed endpoint, changed counters. ProvisionSvc turns the reports into device
/// status (online within a second or two of the first handshake) and traffic totals.
///
/// Each reading is a dump of the whole interface, and while wireguard-go dumps it no peer change can
/// go in, so the reporter keeps to a duty cycle: it waits at least ``interval`` between readings, and
/// at least ``idleFactor`` times as long as the last reading took, so the interface is free for changes
/// at least 80% of the time. A few thousand peers read in milliseconds and the interval rules; 50,000
/// take wireguard-go alone 170–290 ms to dump (docs/benchmarks.md, "Scale"), and the reporter then
/// reads every second and a half or so. Its readings also serve the interface watch and the node's
/// state (``InterfaceReadings``).
public struct HandshakeReporter: Sendable {
    /// The reporter waits at least this many times as long as its last reading took.
    public static let idleFactor = 4
    let agent: NodeAgent
    let wg: any WireGuardBackend
    let readings: InterfaceReadings
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

    public init(agent: NodeAgent, backend: any WireGuardBackend, readings: InterfaceReadings, interval: Duration, logger: Logger,
                publish: @escaping @Sendable (Mesh_V1_HandshakeReport) async -> Void) {
        self.agent = agent
        self.wg = backend
        self.readings = readings
        self.interval = interval
        self.logger = logger
        self.publish = publish
    }

    struct Seen: Equatable {
        var handshake: WireGuardTimestamp
        var rx: UInt64
        var tx: UInt64
        var endpoint: HostPort?
    }

    /// The last reading of every peer, kept from one reading to the next and updated in place (at
    /// 50,000 peers a second map built per reading would hold several megabytes more at each peak).
    struct LastSeen {
        var peers: [WireGuardKey: (seen: Seen, round: Bool)] = [:]
        /// Flips every reading: an entry left with the other value was not in this reading.
        var round = false
    }

    /// Reports changes until cancelled.
    public func run() async {
        var last = LastSeen()
        while !Task.isCancelled {
            if resend.flag.withLock({ f in defer { f = false }; return f }) { last = LastSeen() }
            let started = ContinuousClock.now
            do {
                // Only the activity: the allowed IPs are skipped as the reply is read.
                let reading = try await wg.activity(named: agent.interface)
                readings.record(privateKey: reading.privateKey, listenPort: reading.listenPort)
                let report = Self.changes(reading: reading, last: &last, agent: agent)
                if !report.peers.isEmpty { await publish(report) }
                if reading.peers.count >= HeapRelease.largeReading { HeapRelease.now() }
            } catch {
                readings.recordFailure(error)
            }
            try? await Task.sleep(for: Self.pause(interval: interval, lastReading: ContinuousClock.now - started))
        }
    }

    /// How long to wait after a reading that took `lastReading`: the interval, or ``idleFactor`` times
    /// the reading, whichever is longer.
    static func pause(interval: Duration, lastReading: Duration) -> Duration {
        max(interval, lastReading * idleFactor)
    }

    /// The report of what changed between `last` and `reading`; `last` becomes the new reading.
    static func changes(reading: WireGuardActivityReading, last: inout LastSeen, agent: NodeAgent) -> Mesh_V1_HandshakeReport {
        var report = Mesh_V1_HandshakeReport()
        report.tenantID = agent.identity.tenantID
        report.nodeID = agent.identity.nodeID
        report.observedAtMs = Date().unixMilliseconds
        last.round.toggle()
        let round = last.round
        var changed: [WireGuardPeerActivity] = []
        // Sized once for the whole reading: the first reading after a start would otherwise grow the
        // map by doubling, holding each old table beside the new one.
        if last.peers.capacity < reading.peers.count { last.peers.reserveCapacity(reading.peers.count) }
        for p in reading.peers {
            let seen = Seen(handshake: p.lastHandshake, rx: p.receiveBytes, tx: p.transmitBytes, endpoint: p.endpoint)
            let before = last.peers.updateValue((seen, round), forKey: p.publicKey)?.seen
            guard before != seen else { continue }
            // Nothing to say about a peer that never handshook and never moved a byte.
            if before == nil && p.lastHandshake.isNever && p.receiveBytes == 0 && p.transmitBytes == 0 { continue }
            changed.append(p)
        }
        // Peers gone since the last reading are forgotten (a peer that comes back is new again).
        if last.peers.count > reading.peers.count {
            let gone = last.peers.compactMap { $0.value.round == round ? nil : $0.key }
            for key in gone { last.peers[key] = nil }
        }
        let known = agent.identities(ofKeys: changed.map(\.publicKey.base64))
        report.peers = changed.map { PeerStatsMapping.stats($0, known: known[$0.publicKey.base64]) }
        return report
    }
}

/// WireGuard peer readings as protobuf.
enum PeerStatsMapping {
    /// A report's entry: who the peer is and what it did. The report leaves the allowed IPs and the
    /// keepalive out (the control plane stores only these fields); the node's state has them.
    static func stats(_ p: WireGuardPeerActivity, known: (id: String, dnsName: String)?) -> Mesh_V1_PeerStats {
        var s = Mesh_V1_PeerStats()
        s.publicKey = p.publicKey.base64
        s.endpoint = p.endpoint?.description ?? ""
        s.lastHandshakeMs = p.lastHandshake.isNever ? 0 : p.lastHandshake.seconds * 1000 + p.lastHandshake.nanoseconds / 1_000_000
        s.rxBytes = p.receiveBytes
        s.txBytes = p.transmitBytes
        if let known {
            s.peerID = known.id
            s.dnsName = known.dnsName
        }
        return s
    }

    /// The node's state's entry: the report's fields, and the allowed IPs and the keepalive.
    static func stats(_ p: WireGuardPeer, known: (id: String, dnsName: String)?) -> Mesh_V1_PeerStats {
        var s = stats(WireGuardPeerActivity(p), known: known)
        s.allowedIps = p.allowedIPs.map(\.description)
        s.persistentKeepalive = UInt32(p.persistentKeepaliveInterval)
        return s
    }
}

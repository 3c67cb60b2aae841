import Foundation
import Logging
import MeshDomain
import MeshProto
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
        var endpoint: String
    }

    /// Reports changes until cancelled.
    public func run() async {
        var last: [WireGuardKey: Seen] = [:]
        while !Task.isCancelled {
            if resend.flag.withLock({ f in defer { f = false }; return f }) { last = [:] }
            let started = ContinuousClock.now
            do {
                let device = try await wg.device(named: agent.interface)
                readings.record(device)
                let (report, now) = Self.changes(device: device, last: last, agent: agent)
                last = now
                if !report.peers.isEmpty { await publish(report) }
                if device.peers.count >= HeapRelease.largeReading { HeapRelease.now() }
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

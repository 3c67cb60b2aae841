import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto
import MeshTestSupport
import MeshWireGuard
@testable import NodeApplierCore
import Synchronization
import Testing

/// An interface that counts its full readings and can be made to fail them.
final class CountingWireGuard: WireGuardBackend, Sendable {
    let inner: InMemoryWireGuard
    let reads = Mutex(0)
    let failing = Mutex(false)

    init(_ inner: InMemoryWireGuard) { self.inner = inner }

    var kind: WireGuardBackendKind { inner.kind }
    func deviceNames() async throws(WireGuardError) -> [String] { try await inner.deviceNames() }
    func device(named name: String) async throws(WireGuardError) -> WireGuardDevice {
        reads.withLock { $0 += 1 }
        if failing.withLock({ $0 }) { throw .deviceNotFound(name) }
        return try await inner.device(named: name)
    }
    func configure(device name: String, _ config: WireGuardConfig) async throws(WireGuardError) -> WireGuardConfigureReport {
        try await inner.configure(device: name, config)
    }
}

@Suite(.timeLimit(.minutes(2))) struct InterfaceReadingsTests {
    static let nodeKey = WireGuardKey(bytes: [UInt8](repeating: 7, count: 32))!

    /// One bad reading is not a lost interface; two in a row are, failed or without the node's key;
    /// a good reading clears it.
    @Test func twoBadReadingsInARowMakeTheInterfaceLost() {
        let r = InterfaceReadings(privateKey: Self.nodeKey.base64)
        #expect(r.listenPort == nil && r.lost == nil)
        r.record(privateKey: Self.nodeKey, listenPort: 51820)
        #expect(r.listenPort == 51820 && r.lost == nil)
        r.recordFailure(WireGuardError.deviceNotFound("wg0"))
        #expect(r.lost == nil)
        r.recordFailure(WireGuardError.deviceNotFound("wg0"))
        #expect(r.lost?.contains("cannot be read") == true)
        r.record(privateKey: Self.nodeKey, listenPort: 51820)
        #expect(r.lost == nil)
        // wireguard-go restarted: the interface is there, without the node's key.
        r.record(privateKey: nil, listenPort: 51820)
        #expect(r.lost == nil)
        r.record(privateKey: WireGuardKey(bytes: [UInt8](repeating: 9, count: 32))!, listenPort: 51820)
        #expect(r.lost == "it no longer holds the node's key")
    }

    /// The reporter reports what changed since its last reading and nothing else; a peer that left
    /// and came back is new again; a peer that never handshook and never moved a byte is not news.
    @Test func reporterReportsOnlyChanges() async throws {
        let (_, _, _, agent, _) = try await makeNode()
        func key(_ i: UInt8) -> WireGuardKey { WireGuardKey(bytes: [UInt8](repeating: i, count: 32))! }
        func peer(_ i: UInt8, handshake: Int64 = 0, rx: UInt64 = 0, endpoint: String? = nil) -> WireGuardPeerActivity {
            WireGuardPeerActivity(publicKey: key(i), endpoint: endpoint.flatMap { HostPort($0) },
                                  lastHandshake: WireGuardTimestamp(seconds: handshake, nanoseconds: 0), receiveBytes: rx)
        }
        func reading(_ peers: WireGuardPeerActivity...) -> WireGuardActivityReading {
            WireGuardActivityReading(name: "wg0", privateKey: Self.nodeKey, listenPort: 51820, peers: peers)
        }
        var last = HandshakeReporter.LastSeen()
        func reported(_ r: WireGuardActivityReading) -> [String] {
            HandshakeReporter.changes(reading: r, last: &last, agent: agent).peers.map(\.publicKey)
        }
        let a = peer(1, handshake: 1_700_000_000, rx: 10, endpoint: "198.18.0.1:51820"), b = peer(2)
        #expect(reported(reading(a, b)) == [key(1).base64])
        #expect(reported(reading(a, b)).isEmpty)
        let a2 = peer(1, handshake: 1_700_000_000, rx: 20, endpoint: "198.18.0.1:51820")
        #expect(reported(reading(a2)) == [key(1).base64])
        #expect(last.peers.count == 1, "b left and is forgotten")
        // b back with nothing to say: still nothing; then its first handshake.
        #expect(reported(reading(a2, b)).isEmpty)
        #expect(reported(reading(a2, peer(2, handshake: 1_700_000_100))) == [key(2).base64])
        // a roams: a new endpoint alone is a change.
        #expect(reported(reading(peer(1, handshake: 1_700_000_000, rx: 20, endpoint: "198.18.0.9:4000"), peer(2, handshake: 1_700_000_100))) == [key(1).base64])
        // a leaves and comes back with the same figures: reported again (it is new to the reporter).
        #expect(reported(reading(peer(2, handshake: 1_700_000_100))).isEmpty)
        let back = reported(reading(peer(1, handshake: 1_700_000_000, rx: 20, endpoint: "198.18.0.9:4000"), peer(2, handshake: 1_700_000_100)))
        #expect(back == [key(1).base64])
        let stats = HandshakeReporter.changes(reading: reading(a), last: &last, agent: agent).peers
        #expect(stats.count == 1 && stats[0].rxBytes == 10 && stats[0].endpoint == "198.18.0.1:51820"
                && stats[0].lastHandshakeMs == 1_700_000_000_000 && stats[0].allowedIps.isEmpty)
    }

    /// The reporter waits its interval, or four times its last reading, whichever is longer.
    @Test func reporterKeepsToItsDutyCycle() {
        #expect(HandshakeReporter.pause(interval: .seconds(1), lastReading: .milliseconds(3)) == .seconds(1))
        #expect(HandshakeReporter.pause(interval: .seconds(1), lastReading: .milliseconds(250)) == .seconds(1))
        #expect(HandshakeReporter.pause(interval: .seconds(1), lastReading: .milliseconds(400)) == .milliseconds(1600))
        #expect(HandshakeReporter.pause(interval: .milliseconds(10), lastReading: .seconds(2)) == .seconds(8))
    }

    /// The node's state answer reads nothing from the interface (a dump of a 50,000-peer interface
    /// holds wireguard-go's configuration lock for ~200 ms): its peer count is the agent's, its listen
    /// port the reporter's last reading, and it is active only while the readings are good.
    /// An agent over a counted in-memory interface that holds the node's key, with a fake control plane.
    func makeNode(_ cp: FakeCP = FakeCP()) async throws -> (InMemoryWireGuard, CountingWireGuard, NodeIdentity, NodeAgent, Logger) {
        let mem = InMemoryWireGuard(devices: ["wg0"])
        try await mem.configure(device: "wg0", WireGuardConfig(privateKey: Self.nodeKey, listenPort: 51820))
        let wg = CountingWireGuard(mem)
        var reg = Mesh_V1_RegisterNodeResponse()
        reg.node.id = "self"
        reg.node.tenantID = "t1"
        reg.node.ipv4 = "100.64.0.1"
        reg.node.ipv6 = "fd00::1"
        let identity = NodeIdentity(registration: reg)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let agent = NodeAgent(identity: identity, interface: "wg0", backend: wg, logger: logger) { () async throws(MeshError) in cp.response() }
        return (mem, wg, identity, agent, logger)
    }

    @Test func stateAnswersReadNothingFromTheInterface() async throws {
        let cp = FakeCP()
        cp.peers.withLock { $0 = [peer(1), peer(2)] }
        cp.revision.withLock { $0 = 4 }
        let (mem, wg, identity, agent, logger) = try await makeNode(cp)
        let loop = Task { await agent.run() }
        defer { loop.cancel() }
        _ = try await refresh(agent, "start")
        let config = NodeConfiguration(name: "n", stateDirectory: "/nonexistent", interface: "wg0", dnsPort: 0)
        let readings = InterfaceReadings(privateKey: Self.nodeKey.base64)
        let control = NodeControl(agent: agent, backend: wg, readings: readings,
                                  config: config, dns: MeshDNSWiring(config: config, identity: identity, logger: logger))

        // Before any reading the node does not claim an interface it has not seen.
        var st = try await control.state()
        #expect(!st.active && st.revision == 4)
        let reporter = HandshakeReporter(agent: agent, backend: wg, readings: readings, interval: .seconds(3600), logger: logger) { _ in }
        let reporting = Task { await reporter.run() }
        try await waitUntil("the reporter's first reading", timeout: .seconds(30)) { readings.listenPort != nil }
        reporting.cancel()
        let readsBefore = wg.reads.withLock { $0 }
        for _ in 0..<50 { st = try await control.state() }
        #expect(wg.reads.withLock { $0 } == readsBefore, "state answers must not read the interface")
        #expect(st.active && st.listenPort == 51820 && st.peerCount == 2 && st.revision == 4)
        // The peer count follows the agent's accepted changes, with the revision.
        agent.submit(update(5, added: peer(3)))
        try await waitUntil("the agent applied revision 5", timeout: .seconds(30)) { agent.revision == 5 }
        st = try await control.state()
        #expect(st.peerCount == 3 && st.revision == 5 && mem.peerCount(device: "wg0") == 3)
        // Two failed readings: the interface counts as lost, and the node no longer says it is active.
        readings.recordFailure(WireGuardError.deviceNotFound("wg0"))
        readings.recordFailure(WireGuardError.deviceNotFound("wg0"))
        st = try await control.state()
        #expect(!st.active)
    }

    /// The reporter's readings drive the interface watch (which has no backend of its own): a device
    /// that cannot be read any more stops the node (the watch throws).
    @Test func watchStopsTheNodeOnTheReportersFailedReadings() async throws {
        let (_, wg, _, agent, logger) = try await makeNode()
        let readings = InterfaceReadings(privateKey: Self.nodeKey.base64)
        let reporter = HandshakeReporter(agent: agent, backend: wg, readings: readings, interval: .milliseconds(20), logger: logger) { _ in }
        let reporting = Task { await reporter.run() }
        defer { reporting.cancel() }
        try await waitUntil("a good reading", timeout: .seconds(30)) { readings.listenPort != nil }
        #expect(readings.lost == nil)
        wg.failing.withLock { $0 = true }
        try await waitUntil("two failed readings", timeout: .seconds(30)) { readings.lost != nil }
        reporting.cancel()
        let watch = InterfaceWatch(readings: readings, interface: "wg0", interval: .milliseconds(20), logger: logger)
        await #expect(throws: MeshError.self) {
            try await withDeadline(.seconds(30), "the watch stops the node") { try await watch.run() }
        }
    }
}

import MeshNet
import MeshTestSupport
import MeshWireGuard
import NodeApplierCore
import Testing

func key(_ n: UInt8) -> WireGuardKey { WireGuardKey(bytes: [UInt8](repeating: n, count: 32))! }
func pfx(_ s: String) -> IPPrefix { IPPrefix(s)! }

func live(_ n: UInt8, _ ips: [String], keepalive: UInt16 = 0, endpoint: String? = nil) -> WireGuardPeer {
    var p = WireGuardPeer(publicKey: key(n))
    p.allowedIPs = ips.map(pfx)
    p.persistentKeepaliveInterval = keepalive
    p.endpoint = endpoint.flatMap(HostPort.init)
    return p
}

func want(_ n: UInt8, _ ips: [String], keepalive: UInt16 = 0, endpoint: String? = nil) -> DesiredPeer {
    DesiredPeer(publicKey: key(n), allowedIPs: ips.map(pfx), endpoint: endpoint.flatMap(HostPort.init), persistentKeepalive: keepalive)
}

@Suite(.timeLimit(.minutes(3)), .timeLimit(.minutes(3))) struct PeerDiffTests {
    @Test func emptyToEmpty() { #expect(PeerDiff(current: [], desired: []).isEmpty) }

    @Test func identicalIsEmptyWhateverTheOrder() {
        let cur = [live(1, ["10.0.0.1/32", "fd00::1/128"]), live(2, ["10.0.0.2/32"])]
        let des = [want(2, ["10.0.0.2/32"]), want(1, ["fd00::1/128", "10.0.0.1/32"])]
        #expect(PeerDiff(current: cur, desired: des).isEmpty)
    }

    @Test func addsRemovesAndUpdates() {
        let cur = [live(1, ["10.0.0.1/32"]), live(2, ["10.0.0.2/32"]), live(3, ["10.0.0.3/32"])]
        let des = [want(1, ["10.0.0.1/32"]), want(3, ["10.0.0.33/32"]), want(4, ["10.0.0.4/32"], keepalive: 25, endpoint: "192.0.2.4:51820")]
        let d = PeerDiff(current: cur, desired: des)
        #expect(d.add == [want(4, ["10.0.0.4/32"], keepalive: 25, endpoint: "192.0.2.4:51820")])
        #expect(d.update == [want(3, ["10.0.0.33/32"])])
        #expect(d.remove == [key(2)])
        let configs = d.configs
        #expect(configs.count == 3)
        let add = configs.first { $0.publicKey == key(4) }!
        #expect(!add.updateOnly && add.replaceAllowedIPs && add.endpoint?.description == "192.0.2.4:51820" && add.persistentKeepaliveInterval == 25)
        let upd = configs.first { $0.publicKey == key(3) }!
        #expect(upd.updateOnly && upd.replaceAllowedIPs && upd.endpoint == nil && upd.allowedIPs == [pfx("10.0.0.33/32")])
        #expect(configs.first { $0.publicKey == key(2) }!.remove)
    }

    @Test func keepaliveChangeIsAnUpdate() {
        let d = PeerDiff(current: [live(1, ["10.0.0.1/32"], keepalive: 0)], desired: [want(1, ["10.0.0.1/32"], keepalive: 25)])
        #expect(d.update.map(\.publicKey) == [key(1)])
    }

    @Test func liveEndpointWinsForExistingPeers() {
        // The node roamed (NAT); a full comparison must not reset it.
        let d = PeerDiff(current: [live(1, ["10.0.0.1/32"], endpoint: "198.51.100.9:40000")],
                         desired: [want(1, ["10.0.0.1/32"], endpoint: "192.0.2.1:51820")])
        #expect(d.isEmpty)
        // A change the control plane made sets it, and only then.
        let moved = PeerDiff(from: [want(1, ["10.0.0.1/32"], endpoint: "192.0.2.9:51820")],
                             to: [want(1, ["10.0.0.1/32"], endpoint: "192.0.2.1:51820")]).configs
        #expect(moved.first?.endpoint?.description == "192.0.2.1:51820" && moved.first?.updateOnly == true)
        let routes = PeerDiff(from: [want(1, ["10.0.0.1/32"], endpoint: "192.0.2.1:51820")],
                              to: [want(1, ["10.0.0.1/32", "10.1.0.0/16"], endpoint: "192.0.2.1:51820")]).configs
        #expect(routes.count == 1 && routes[0].endpoint == nil && routes[0].updateOnly, "a route change leaves a roamed endpoint alone")
    }

    @Test func duplicateDesiredKeysCountOnce() {
        let d = PeerDiff(current: [], desired: [want(1, ["10.0.0.1/32"]), want(1, ["10.0.0.1/32"])])
        #expect(d.add.count == 1)
    }

    @Test func removingEverything() {
        let d = PeerDiff(current: (1...50).map { live(UInt8($0), ["10.0.1.\($0)/32"]) }, desired: [])
        #expect(d.remove.count == 50 && d.add.isEmpty && d.update.isEmpty)
        #expect(d.configs.allSatisfy { $0.remove })
    }

    /// Random current/desired sets: applying the diff to an in-memory device gives exactly the
    /// desired peers, and a second diff is empty. Each case draws its sets from its own seed
    /// (printed, and in every failure; `MESH_TEST_SEED` replays a run).
    @Test(arguments: 0..<100)
    func applyingTheDiffConverges(_ index: Int) async throws {
        let seed = TestSeed.seed("PeerDiffTests.applyingTheDiffConverges.\(index)")
        var rng = SeededRandom(seed: seed)
        func randomPeers(_ n: Int) -> [DesiredPeer] {
            let keys = (0..<n).map { _ in UInt8.random(in: 1...60, using: &rng) }
            // Unique keys, in the order drawn (a Set's order would differ between runs).
            var seen = Set<UInt8>()
            return keys.filter { seen.insert($0).inserted }.map { k in
                want(k, ["10.0.\(Int.random(in: 0...3, using: &rng)).\(k)/32"], keepalive: Bool.random(using: &rng) ? 25 : 0)
            }
        }
        let wg = InMemoryWireGuard(devices: ["wg0"])
        let start = randomPeers(Int.random(in: 0...40, using: &rng))
        try await wg.configure(device: "wg0", WireGuardConfig(peers: PeerDiff(current: [], desired: start).configs))
        let target = randomPeers(Int.random(in: 0...40, using: &rng))
        let d = PeerDiff(current: try await wg.device(named: "wg0").peers, desired: target)
        try await wg.configure(device: "wg0", WireGuardConfig(peers: d.configs))
        let after = try await wg.device(named: "wg0").peers
        #expect(Set(after.map(\.publicKey)) == Set(target.map(\.publicKey)), "\(TestSeed.replay(seed))")
        #expect(PeerDiff(current: after, desired: target).isEmpty, "\(TestSeed.replay(seed))")
        // Peers present in both sets and unchanged were not touched.
        let untouched = Set(start).intersection(Set(target)).map(\.publicKey)
        #expect(Set(d.configs.map(\.publicKey)).isDisjoint(with: untouched), "\(TestSeed.replay(seed))")
    }
}

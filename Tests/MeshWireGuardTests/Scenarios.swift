import Foundation
import MeshNet
import Testing
@testable import MeshWireGuard

/// Scenarios run against real WireGuard, once per backend: wireguard-go on the host, the kernel
/// module inside the VM (scripts/vm-test.sh). Each compares the library's reading with what `wg`
/// (wireguard-tools) reports for the same device.
enum Scenarios {
    /// Two devices configured through the library handshake and carry IPv4 and IPv6 pings.
    static func handshakeAndPing(kernel: Bool) async throws {
        try await withLab(kernelA: kernel, kernelB: kernel) { lab in
            try await lab.connect(presharedKey: randomKey())
            let v4 = try await lab.ping(from: lab.a, to: lab.b.tunnelAddress.address)
            #expect(v4.status == 0, "IPv4 ping over the tunnel failed: \(v4.output)")
            let v6 = try await lab.ping(from: lab.b, to: lab.a.tunnelAddress6.address)
            #expect(v6.status == 0, "IPv6 ping over the tunnel failed: \(v6.output)")

            let d = try await lab.backend(lab.a).device(named: lab.a.interface)
            #expect(d.backend == (kernel ? .kernel : .userspace))
            let peer = try #require(d.peers.first)
            #expect(d.peers.count == 1)
            #expect(peer.publicKey == lab.b.keys.publicKey)
            #expect(!peer.lastHandshake.isNever)
            #expect(peer.receiveBytes > 0 && peer.transmitBytes > 0)
            #expect(peer.endpoint == HostPort(host: lab.b.underlayAddress.description, port: lab.b.listenPort))
            #expect(peer.protocolVersion == 1)
            let wg = try await lab.wgDump(lab.a)
            let ours = WGDump(from: d)
            #expect(ours.withoutCounters == wg.withoutCounters)
            // Counters only grow; ours were read first.
            #expect(wg.peers[0].rx >= ours.peers[0].rx && wg.peers[0].latestHandshake >= ours.peers[0].latestHandshake)

            // Addresses, MTU and state went through rtnetlink, not `ip`.
            let link = try await lab.a.links.link(named: lab.a.interface)
            #expect(link.mtu == 1380 && link.isUp)
            let addrs = try await lab.a.links.addresses(link: lab.a.interface)
            #expect(addrs.contains(lab.a.tunnelAddress) && addrs.contains(lab.a.tunnelAddress6))
        }
    }

    /// Every field set through the library reads back identically through the library and `wg`.
    static func readBackEveryField(kernel: Bool) async throws {
        try await withLab(kernelA: kernel) { lab in
            let s = lab.a
            let backend = lab.backend(s)
            let psk = randomKey()
            let peers = [
                WireGuardPeerConfig(publicKey: randomKey(), presharedKey: psk, endpoint: HostPort("198.18.7.9:51000"),
                                    persistentKeepaliveInterval: 25,
                                    allowedIPs: [IPPrefix("100.64.1.1/32")!, IPPrefix("100.65.0.0/16")!, IPPrefix("fd00:1::/64")!]),
                WireGuardPeerConfig(publicKey: randomKey(), endpoint: HostPort("[fd00:ab::1]:4242"),
                                    allowedIPs: [IPPrefix("100.64.1.2/32")!, IPPrefix("fd00::2/128")!]),
                WireGuardPeerConfig(publicKey: randomKey()),
            ]
            try await backend.configure(device: s.interface, WireGuardConfig(privateKey: s.keys.privateKey, listenPort: 43_210,
                                                                             firewallMark: 0x1234, replacePeers: true, peers: peers))
            let d = try await backend.device(named: s.interface)
            #expect(d.name == s.interface)
            #expect(d.privateKey == s.keys.privateKey)
            #expect(d.publicKey == s.keys.publicKey)
            #expect(d.listenPort == 43_210)
            #expect(d.firewallMark == 0x1234)
            let byKey = Dictionary(uniqueKeysWithValues: d.peers.map { ($0.publicKey, $0) })
            #expect(byKey.count == 3)
            for want in peers {
                let got = try #require(byKey[want.publicKey])
                #expect(got.presharedKey == want.presharedKey)
                #expect(got.endpoint == want.endpoint)
                #expect(got.persistentKeepaliveInterval == want.persistentKeepaliveInterval ?? 0)
                #expect(got.allowedIPs.sorted() == want.allowedIPs.sorted())
                #expect(got.lastHandshake.isNever && got.receiveBytes == 0 && got.transmitBytes == 0)
                #expect(got.protocolVersion == 1)
            }
            #expect(WGDump(from: d) == (try await lab.wgDump(s)))
            #expect(showconf(from: d) == (try await lab.wgShowconf(s)))
        }
    }

    /// update-only, remove, replace-allowed-ips, clearing and replace-peers behave as `wg` reports.
    static func peerFlagSemantics(kernel: Bool) async throws {
        try await withLab(kernelA: kernel) { lab in
            let s = lab.a
            let backend = lab.backend(s)
            let p1 = randomKey(), p2 = randomKey(), p3 = randomKey(), p4 = randomKey(), p5 = randomKey()
            func check(_ step: String, _ expected: [WireGuardKey: [String]]) async throws {
                let d = try await backend.device(named: s.interface)
                let wg = try await lab.wgDump(s)
                #expect(WGDump(from: d) == wg, "\(step): library and wg disagree")
                #expect(showconf(from: d) == (try await lab.wgShowconf(s)), "\(step): showconf differs")
                var got: [WireGuardKey: [String]] = [:]
                for p in d.peers { got[p.publicKey] = p.allowedIPs.map(\.description).sorted() }
                #expect(got == expected, "\(step)")
            }
            try await backend.configure(device: s.interface, WireGuardConfig(privateKey: s.keys.privateKey, replacePeers: true, peers: [
                WireGuardPeerConfig(publicKey: p1, presharedKey: randomKey(), persistentKeepaliveInterval: 10, allowedIPs: [IPPrefix("100.64.9.1/32")!]),
                WireGuardPeerConfig(publicKey: p2, allowedIPs: [IPPrefix("100.64.9.2/32")!]),
            ]))
            try await check("initial", [p1: ["100.64.9.1/32"], p2: ["100.64.9.2/32"]])

            // update-only on a missing peer: nothing created, and the report names it.
            var report = try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: p3, updateOnly: true, endpoint: HostPort("198.18.9.9:9"), allowedIPs: [IPPrefix("100.64.9.3/32")!]),
            ]))
            #expect(report.skippedUpdateOnlyPeers == [p3])
            try await check("update-only missing", [p1: ["100.64.9.1/32"], p2: ["100.64.9.2/32"]])

            // Without the check the same call says nothing, and still creates nothing.
            report = try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: p3, updateOnly: true, allowedIPs: [IPPrefix("100.64.9.3/32")!]),
            ], reportSkippedUpdateOnlyPeers: false))
            #expect(report.skippedUpdateOnlyPeers.isEmpty)
            try await check("update-only missing, unchecked", [p1: ["100.64.9.1/32"], p2: ["100.64.9.2/32"]])

            // update-only on an existing peer: prefixes are added, not replaced.
            report = try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: p1, updateOnly: true, endpoint: HostPort("198.18.9.1:1111"), allowedIPs: [IPPrefix("100.64.10.0/24")!]),
            ]))
            #expect(report.skippedUpdateOnlyPeers.isEmpty)
            try await check("update-only existing", [p1: ["100.64.10.0/24", "100.64.9.1/32"], p2: ["100.64.9.2/32"]])

            try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: p1, replaceAllowedIPs: true, allowedIPs: [IPPrefix("100.64.11.0/24")!, IPPrefix("fd00:11::/64")!]),
                WireGuardPeerConfig(publicKey: p2, replaceAllowedIPs: true, allowedIPs: []),
            ]))
            try await check("replace-allowed-ips", [p1: ["100.64.11.0/24", "fd00:11::/64"], p2: []])

            // A prefix belongs to one peer: giving it to p2 takes it from p1, on both implementations.
            try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: p2, allowedIPs: [IPPrefix("100.64.11.0/24")!]),
            ]))
            try await check("prefix moves", [p1: ["fd00:11::/64"], p2: ["100.64.11.0/24"]])

            // Remove an existing and a missing peer; clear a preshared key and a keepalive.
            try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                .removing(p2), .removing(p4),
                WireGuardPeerConfig(publicKey: p1, presharedKey: .zero, persistentKeepaliveInterval: 0),
            ]))
            try await check("remove", [p1: ["fd00:11::/64"]])
            let cleared = try await backend.device(named: s.interface).peers[0]
            #expect(cleared.presharedKey == nil && cleared.persistentKeepaliveInterval == 0)

            // nil leaves settings alone.
            try await backend.configure(device: s.interface, WireGuardConfig(listenPort: 40_001, firewallMark: 7))
            try await backend.configure(device: s.interface, WireGuardConfig(peers: [WireGuardPeerConfig(publicKey: p1)]))
            let kept = try await backend.device(named: s.interface)
            #expect(kept.listenPort == 40_001 && kept.firewallMark == 7 && kept.privateKey == s.keys.privateKey)
            #expect(kept.peers[0].allowedIPs == [IPPrefix("fd00:11::/64")!])

            // Clearing the device settings with explicit values.
            try await backend.configure(device: s.interface, WireGuardConfig(privateKey: .zero, firewallMark: 0,
                                                                             replacePeers: true, peers: [WireGuardPeerConfig(publicKey: p5)]))
            try await check("replace-peers", [p5: []])
            let bare = try await backend.device(named: s.interface)
            #expect(bare.privateKey == nil && bare.publicKey == nil && bare.firewallMark == 0)
        }
    }

    /// A large peer set goes in and comes back whole, identical to `wg show dump`.
    static func largePeerSet(kernel: Bool, count: Int) async throws {
        try await withLab(kernelA: kernel) { lab in
            let s = lab.a
            let peers = (0..<count).map { syntheticPeer($0, key: randomKey()) }
            let report = try await lab.backend(s).configure(device: s.interface, WireGuardConfig(privateKey: s.keys.privateKey, listenPort: 45_000,
                                                                                                replacePeers: true, peers: peers))
            if kernel { #expect(report.requestCount > 1, "a large set must be split into several netlink messages") }
            let d: WireGuardDevice
            if kernel {
                let (device, messages) = try await KernelBackend(namespacePath: s.namespacePath, logger: testLogger).dump(s.interface)
                #expect(messages > 1, "a large dump must arrive in several messages")
                d = device
            } else {
                d = try await lab.backend(s).device(named: s.interface)
            }
            #expect(d.peers.count == count)
            #expect(Set(d.peers.map(\.publicKey)) == Set(peers.map(\.publicKey)))
            // Every third peer has a persistent keepalive, so the daemon sends it handshake initiations
            // (148 bytes each, retried every 5 s) while the readings are taken: its transmit counter may
            // grow from one reading to the next. Everything else must be identical, and a later reading's
            // counters never below an earlier one's.
            let wg = try await lab.wgDump(s)
            #expect(wg.peers.count == count)
            let ours = WGDump(from: d)
            #expect(ours.withoutCounters == wg.withoutCounters)
            let wentBack = ours.peersGoingBack(in: wg)
            #expect(wentBack.isEmpty, "\(wentBack.count) peers' counters in wg's later reading are below ours, first: \(String(describing: wentBack.first))")
            // The periodic reading: the same key, port and peers' activity, without the allowed IPs
            // (userspace: streamed and skipped on the way; a reply this size spans many reads).
            // (Each reading lists the peers in the daemon's own order, which changes between readings.)
            let activity = try await lab.backend(s).activity(named: s.interface)
            #expect(activity.peers.count == count && activity.privateKey == s.keys.privateKey && activity.listenPort == 45_000)
            let expected = Dictionary(uniqueKeysWithValues: d.peers.map { ($0.publicKey, WireGuardPeerActivity($0)) })
            let mismatched = activity.peers.filter { a in
                guard let e = expected[a.publicKey] else { return true }
                return a.endpoint != e.endpoint || a.lastHandshake != e.lastHandshake
                    || a.receiveBytes < e.receiveBytes || a.transmitBytes < e.transmitBytes
            }
            #expect(mismatched.isEmpty, "\(mismatched.count) peers differ from the full reading, first: \(String(describing: mismatched.first))")
        }
    }

    /// Typed errors for missing and non-WireGuard devices and for refused input.
    static func typedErrors(kernel: Bool) async throws {
        try await withLab(kernelA: kernel) { lab in
            let s = lab.a
            let backend = lab.backend(s)
            let missing = Names.next("x")
            await #expect(throws: WireGuardError.deviceNotFound(missing)) { _ = try await backend.device(named: missing) }
            await #expect(throws: WireGuardError.deviceNotFound(missing)) {
                try await backend.configure(device: missing, WireGuardConfig(listenPort: 1))
            }
            await #expect(throws: WireGuardError.self) {
                try await backend.configure(device: s.interface, WireGuardConfig(peers: [
                    WireGuardPeerConfig(publicKey: randomKey(), endpoint: HostPort("example.com:1")),
                ]))
            }
            if kernel {
                // `lo` exists but is not a WireGuard device: the kernel answers EOPNOTSUPP.
                await #expect(throws: WireGuardError.deviceNotFound("lo")) { _ = try await backend.device(named: "lo") }
                await #expect(throws: WireGuardError.alreadyExists(s.interface)) {
                    try await s.links.createLink(named: s.interface, kind: "wireguard")
                }
            } else {
                // A line the daemon refuses comes back as errno=-22 (EINVAL).
                let uapi = UAPIBackend(logger: testLogger)
                let reply = try await uapi.rawExchange(device: s.interface, request: Array("set=1\nlisten_port=notanumber\n\n".utf8))
                #expect(throws: WireGuardError.invalidArgument(errno: EINVAL, operation: "set \(s.interface)")) {
                    try UAPIProtocol.parseSetReply(reply, device: s.interface)
                }
            }
        }
    }

    /// rtnetlink link management: lookup, MTU, up/down, addresses, create and delete.
    static func linkManagement(kernel: Bool) async throws {
        try await withLab(kernelA: kernel) { lab in
            let s = lab.a
            let links = s.links
            let link = try await links.link(named: s.interface)
            #expect(link.index > 0)
            #expect(link.kind == (kernel ? "wireguard" : "tun"))
            #expect(try await links.index(of: s.interface) == link.index)
            try await links.setMTU(1300, link: s.interface)
            try await links.setUp(true, link: s.interface)
            var now = try await links.link(named: s.interface)
            #expect(now.mtu == 1300 && now.isUp)
            try await links.setUp(false, link: s.interface)
            now = try await links.link(named: s.interface)
            #expect(!now.isUp)

            let v4 = IPPrefix("100.64.77.5/10")!, v6 = IPPrefix("fd00:77::5/64")!
            try await links.addAddress(v4, link: s.interface)
            try await links.addAddress(v4, link: s.interface)  // idempotent
            try await links.addAddress(v6, link: s.interface)
            var addrs = try await links.addresses(link: s.interface)
            #expect(addrs.contains(v4) && addrs.contains(v6))
            let ipView = try await sh(["ip", "-n", s.namespace, "addr", "show", "dev", s.interface]).output
            #expect(ipView.contains("100.64.77.5/10") && ipView.contains("fd00:77::5/64"))
            try await links.removeAddress(v4, link: s.interface)
            addrs = try await links.addresses(link: s.interface)
            #expect(!addrs.contains(v4) && addrs.contains(v6))

            #expect(try await links.links().contains { $0.name == s.interface })
            let missing = Names.next("x")
            await #expect(throws: WireGuardError.deviceNotFound(missing)) { _ = try await links.link(named: missing) }

            // Create and delete a link of our own: WireGuard where the kernel has it, veth otherwise.
            let extra = Names.next("x")
            try await links.createLink(named: extra, kind: kernel ? "wireguard" : "veth", mtu: 1400)
            let created = try await links.link(named: extra)
            #expect(created.mtu == 1400 && created.kind == (kernel ? "wireguard" : "veth"))
            if kernel {
                #expect(try await KernelBackend(namespacePath: s.namespacePath, logger: testLogger).deviceNames().contains(extra))
            }
            try await links.deleteLink(named: extra)
            await #expect(throws: WireGuardError.deviceNotFound(extra)) { _ = try await links.link(named: extra) }
        }
    }
}

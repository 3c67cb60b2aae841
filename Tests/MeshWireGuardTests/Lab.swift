import Foundation
import Logging
import MeshNet
@testable import MeshWireGuard

/// Two network namespaces joined by a veth pair (198.18.<n>.1 and .2, the benchmarking range), each
/// with one WireGuard interface served by wireguard-go or by the kernel module (chosen per side, so
/// a lab can also pit the two implementations against each other). Everything is removed by
/// ``cleanup()``, which ``withLab(kernelA:kernelB:_:)`` calls on every path.
final class Lab: @unchecked Sendable {
    struct Side {
        var namespace: String
        var namespacePath: String
        var interface: String
        var underlayAddress: IPv4Address
        var tunnelAddress: IPPrefix
        var tunnelAddress6: IPPrefix
        var keys: (privateKey: WireGuardKey, publicKey: WireGuardKey)
        var listenPort: UInt16
        var links: RouteNetlink
        var kernel: Bool
    }

    var a: Side
    var b: Side
    private var daemons: [WireGuardGoDaemon] = []
    private var namespaces: [String] = []

    init(kernelA: Bool, kernelB: Bool) {
        let subnet = UInt8(truncatingIfNeeded: Int(getpid()) &+ Int.random(in: 0...255))
        func side(_ host: UInt8, _ kernel: Bool) -> Side {
            let ns = Names.namespace()
            return Side(namespace: ns, namespacePath: "/run/netns/\(ns)", interface: Names.next("w"),
                        underlayAddress: IPv4Address(198, 18, subnet, host),
                        tunnelAddress: IPPrefix("100.64.\(subnet).\(host)/24")!,
                        tunnelAddress6: IPPrefix("fd00:\(String(subnet, radix: 16))::\(host)/64")!,
                        keys: makeKeyPair(), listenPort: 51820 + UInt16(host),
                        links: RouteNetlink(namespacePath: "/run/netns/\(ns)", logger: testLogger), kernel: kernel)
        }
        a = side(1, kernelA)
        b = side(2, kernelB)
    }

    func setUp() async throws {
        for s in [a, b] {
            try await sh(["ip", "netns", "add", s.namespace])
            namespaces.append(s.namespace)
            try await sh(["ip", "-n", s.namespace, "link", "set", "lo", "up"])
        }
        let vethA = Names.next("v"), vethB = Names.next("v")
        try await sh(["ip", "link", "add", vethA, "netns", a.namespace, "type", "veth", "peer", "name", vethB, "netns", b.namespace])
        try await sh(["ip", "-n", a.namespace, "addr", "add", "\(a.underlayAddress)/24", "dev", vethA])
        try await sh(["ip", "-n", b.namespace, "addr", "add", "\(b.underlayAddress)/24", "dev", vethB])
        try await sh(["ip", "-n", a.namespace, "link", "set", vethA, "up"])
        try await sh(["ip", "-n", b.namespace, "link", "set", vethB, "up"])
        for s in [a, b] {
            if s.kernel {
                try await s.links.createLink(named: s.interface, kind: "wireguard")
            } else {
                let d = try await WireGuardGoDaemon.start(interface: s.interface,
                                                          commandPrefix: ["ip", "netns", "exec", s.namespace], timeout: daemonStartDeadline)
                daemons.append(d)
            }
        }
    }

    /// The backend serving side `s`.
    func backend(_ s: Side) -> any WireGuardBackend {
        s.kernel ? KernelBackend(namespacePath: s.namespacePath, logger: testLogger) : UAPIBackend(logger: testLogger)
    }

    /// Keys, ports, each other as peers, tunnel addresses, MTU 1380, up.
    func connect(presharedKey: WireGuardKey? = nil) async throws {
        for (me, other) in [(a, b), (b, a)] {
            let peer = WireGuardPeerConfig(publicKey: other.keys.publicKey, presharedKey: presharedKey,
                                           endpoint: HostPort(host: other.underlayAddress.description, port: other.listenPort),
                                           replaceAllowedIPs: true,
                                           allowedIPs: [IPPrefix(host: other.tunnelAddress.address), IPPrefix(host: other.tunnelAddress6.address)])
            try await backend(me).configure(device: me.interface, WireGuardConfig(privateKey: me.keys.privateKey, listenPort: me.listenPort,
                                                                                  replacePeers: true, peers: [peer]))
            try await me.links.addAddress(me.tunnelAddress, link: me.interface)
            try await me.links.addAddress(me.tunnelAddress6, link: me.interface)
            try await me.links.setMTU(1380, link: me.interface)
            try await me.links.setUp(true, link: me.interface)
        }
    }

    func ping(from s: Side, to address: IPAddress) async throws -> (status: Int32, output: String) {
        try await sh(["ip", "netns", "exec", s.namespace, "ping", "-c", "2", "-i", "0.2", "-W", "3", address.description], check: false)
    }

    /// `wg show <if> dump`, run inside the side's namespace (the kernel device is only visible there).
    func wgDump(_ s: Side) async throws -> WGDump {
        try WGDump(parsing: try await sh(["ip", "netns", "exec", s.namespace, "wg", "show", s.interface, "dump"]).output)
    }

    /// `wg showconf <if>` inside the side's namespace, normalized.
    func wgShowconf(_ s: Side) async throws -> String {
        normalizeShowconf(try await sh(["ip", "netns", "exec", s.namespace, "wg", "showconf", s.interface]).output)
    }

    func cleanup() async {
        for d in daemons { await d.stop() }
        daemons.removeAll()
        for ns in namespaces.reversed() { _ = try? await sh(["ip", "netns", "del", ns], check: false) }
        namespaces.removeAll()
    }
}

/// Sets up a lab, runs `body`, and tears the lab down whether `body` succeeded or threw.
func withLab(kernelA: Bool = false, kernelB: Bool = false, _ body: (Lab) async throws -> Void) async throws {
    let lab = Lab(kernelA: kernelA, kernelB: kernelB)
    do {
        try await lab.setUp()
        try await body(lab)
    } catch {
        await lab.cleanup()
        throw error
    }
    await lab.cleanup()
}

/// Starts one standalone wireguard-go interface in the host namespace for tests that need no traffic.
func withDaemon(_ body: (String, UAPIBackend) async throws -> Void) async throws {
    let name = Names.next("w")
    let daemon = try await WireGuardGoDaemon.start(interface: name, timeout: daemonStartDeadline)
    do {
        try await body(name, UAPIBackend(logger: testLogger))
    } catch {
        await daemon.stop()
        throw error
    }
    await daemon.stop()
}

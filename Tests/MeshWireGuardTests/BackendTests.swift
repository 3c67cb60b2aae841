import Foundation
import MeshNet
import Testing
@testable import MeshWireGuard

/// Set to 1 by scripts/vm-test.sh inside the VM: the kernel suites must run there, and a kernel
/// without the module is then a failure, not a reason to skip.
let requireKernel = ProcessInfo.processInfo.environment["MESH_WG_REQUIRE_KERNEL"] == "1"

func kernelWireGuardAvailable() async -> Bool {
    await KernelBackend(logger: testLogger).isAvailable()
}

let userspaceReady = isRoot && hasExecutable("wireguard-go") && hasExecutable("wg") && hasExecutable("ip")

@Suite("UAPI backend against wireguard-go", .timeLimit(.minutes(10)), .serialized,
       .enabled(if: userspaceRuns, "needs root, wireguard-go, wg and ip"))
struct UAPIBackendTests {
    init() throws { try requireUserspace() }

    @Test func handshakeAndPing() async throws { try await Scenarios.handshakeAndPing(kernel: false) }
    @Test func readBackEveryField() async throws { try await Scenarios.readBackEveryField(kernel: false) }
    @Test func peerFlagSemanticsMatchWg() async throws { try await Scenarios.peerFlagSemantics(kernel: false) }
    /// 4,000 peers: a reply of about 1.4 MB, read in more than one piece and parsed in many windows.
    @Test func largePeerSetMatchesWgDump() async throws { try await Scenarios.largePeerSet(kernel: false, count: 4_000) }
    @Test func typedErrors() async throws { try await Scenarios.typedErrors(kernel: false) }
    @Test func linkManagementThroughRtnetlink() async throws { try await Scenarios.linkManagement(kernel: false) }

    @Test func listsDaemonSockets() async throws {
        try await withDaemon { name, backend async throws in
            let names = try await backend.deviceNames()
            #expect(names.contains(name))
            #expect(backend.hasSocket(for: name))
        }
    }

    /// The daemon rejects the first line it cannot apply and hangs up while a large request is
    /// still being written; the caller must get the daemon's errno, not EPIPE.
    @Test func daemonErrorWinsOverBrokenPipe() async throws {
        try await withDaemon { first, backend async throws in
            try await withDaemon { second, _ async throws in
                let port = UInt16(30_000 + Int(getpid() % 20_000))
                try await backend.configure(device: first, WireGuardConfig(listenPort: port))
                let big = WireGuardConfig(listenPort: port, replacePeers: true, peers: (0..<20_000).map { syntheticPeer($0, key: randomKey()) })
                await #expect(throws: WireGuardError.uapi(errno: EADDRINUSE, operation: "set \(second)")) {
                    try await backend.configure(device: second, big)
                }
            }
        }
    }

    @Test func daemonStartFailsLoudlyForBadExecutable() async throws {
        await #expect(throws: WireGuardError.self) {
            _ = try await WireGuardGoDaemon.start(interface: Names.next("w"), executable: "/nonexistent/wireguard-go",
                                                  timeout: .seconds(2))
        }
    }

    @Test func daemonStopRemovesSocket() async throws {
        let name = Names.next("w")
        let daemon = try await WireGuardGoDaemon.start(interface: name, timeout: daemonStartDeadline)
        #expect(await daemon.isRunning())
        await daemon.stop()
        #expect(await !daemon.isRunning())
        #expect(!UAPIBackend(logger: testLogger).hasSocket(for: name))
    }
}

@Suite("Backend selection", .timeLimit(.minutes(10)), .serialized, .enabled(if: userspaceRuns, "needs root, wireguard-go, wg and ip"))
struct BackendSelectionTests {
    init() throws { try requireUserspace() }

    @Test func picksUserspaceForADaemonsInterface() async throws {
        try await withDaemon { name, _ in
            let backend = try await WireGuardBackendSelection.select(interface: name, logger: testLogger)
            #expect(backend.kind == .userspace)
            #expect(try await backend.device(named: name).name == name)
        }
    }

    @Test func namesBothBackendsWhenNeitherServes() async throws {
        let name = Names.next("x")
        if await kernelWireGuardAvailable() {
            // With the module loaded, the kernel serves any name (the caller creates the link).
            #expect(try await WireGuardBackendSelection.select(interface: name, logger: testLogger).kind == .kernel)
        } else {
            do {
                _ = try await WireGuardBackendSelection.select(interface: name, logger: testLogger)
                Issue.record("selection should fail")
            } catch {
                guard case .noBackend(let iface, let kernel, let userspace) = error else {
                    Issue.record("wrong error \(error)")
                    return
                }
                #expect(iface == name)
                #expect(kernel.contains("wireguard"))
                #expect(userspace.contains("/var/run/wireguard/\(name).sock"))
            }
        }
    }

    /// Without the module, creating a WireGuard link is a typed error; with it (in the VM), the
    /// link is created and removed.
    @Test func creatingAWireGuardLinkIsATypedErrorWithoutTheModule() async throws {
        let name = Names.next("x")
        let links = RouteNetlink(logger: testLogger)
        if await kernelWireGuardAvailable() {
            try await links.createLink(named: name)
            #expect(try await links.link(named: name).kind == "wireguard")
            try await links.deleteLink(named: name)
        } else {
            await #expect(throws: WireGuardError.netlink(errno: EOPNOTSUPP, operation: "create link \(name) (wireguard)")) {
                try await links.createLink(named: name)
            }
        }
    }
}

@Suite("Kernel backend (runs in the VM: scripts/vm-test.sh)", .timeLimit(.minutes(10)), .serialized,
       .enabled("needs the wireguard kernel module") {
           if requireKernel { return true }
           return isRoot ? await kernelWireGuardAvailable() : false
       })
struct KernelBackendTests {
    @Test func moduleIsPresent() async throws {
        #expect(await kernelWireGuardAvailable(), "generic netlink family \"wireguard\" missing")
    }

    @Test func handshakeAndPing() async throws { try await Scenarios.handshakeAndPing(kernel: true) }
    @Test func readBackEveryField() async throws { try await Scenarios.readBackEveryField(kernel: true) }
    @Test func peerFlagSemanticsMatchWg() async throws { try await Scenarios.peerFlagSemantics(kernel: true) }
    @Test func tenThousandPeersMatchWgDump() async throws { try await Scenarios.largePeerSet(kernel: true, count: 10_000) }
    @Test func typedErrors() async throws { try await Scenarios.typedErrors(kernel: true) }
    @Test func linkManagementThroughRtnetlink() async throws { try await Scenarios.linkManagement(kernel: true) }

    /// Tiny messages force every split path against the real kernel: many peers per message,
    /// one peer's prefixes spread over many messages, REPLACE_ALLOWEDIPS only on its first part.
    @Test func smallMessagesSplitCorrectly() async throws {
        try await withLab(kernelA: true) { lab in
            let s = lab.a
            var peers = (0..<200).map { syntheticPeer($0, key: randomKey()) }
            peers[3].allowedIPs = (0..<600).map { IPPrefix(.v4(IPv4Address(100, 100, UInt8($0 / 256), UInt8($0 % 256))), length: 32)! }
            let small = KernelBackend(namespacePath: s.namespacePath, maxMessageSize: 1024, logger: testLogger)
            // First give peer 3 a prefix that REPLACE_ALLOWEDIPS must remove exactly once.
            try await small.configure(device: s.interface, WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: peers[3].publicKey, allowedIPs: [IPPrefix("100.127.0.1/32")!]),
            ]))
            let report = try await small.configure(device: s.interface, WireGuardConfig(privateKey: s.keys.privateKey, replacePeers: true, peers: peers))
            #expect(report.requestCount > 10)
            let d = try await small.device(named: s.interface)
            #expect(d.peers.count == peers.count)
            let got = try #require(d.peers.first { $0.publicKey == peers[3].publicKey })
            #expect(got.allowedIPs.sorted() == peers[3].allowedIPs.sorted())
            // Counters of the keepalive peers may grow between the two readings (syntheticPeer).
            let ours = WGDump(from: d), wg = try await lab.wgDump(s)
            #expect(ours.withoutCounters == wg.withoutCounters)
            #expect(ours.peersGoingBack(in: wg).isEmpty)
        }
    }

    @Test func selectionPrefersKernelForKernelLinks() async throws {
        try await withLab(kernelA: true, kernelB: false) { lab in
            let kernelSide = try await WireGuardBackendSelection.select(interface: lab.a.interface, namespacePath: lab.a.namespacePath,
                                                                        logger: testLogger)
            #expect(kernelSide.kind == .kernel)
            let userSide = try await WireGuardBackendSelection.select(interface: lab.b.interface, namespacePath: lab.b.namespacePath,
                                                                      logger: testLogger)
            #expect(userSide.kind == .userspace)
        }
    }
}

/// The same operations on kernel WireGuard and on wireguard-go must read back the same, through
/// both backends and through `wg showconf`. Only possible where both exist: in the VM.
@Suite("Backend parity (kernel vs wireguard-go, in the VM)", .timeLimit(.minutes(10)), .serialized,
       .enabled("needs the wireguard kernel module and wireguard-go") {
           if requireKernel { return true }
           return userspaceReady ? await kernelWireGuardAvailable() : false
       })
struct ParityTests {
    @Test func sameOperationsSameState() async throws {
        try await withLab(kernelA: true, kernelB: false) { lab in
            let k = lab.a, u = lab.b
            let kb = lab.backend(k), ub = lab.backend(u)
            #expect(kb.kind == .kernel && ub.kind == .userspace)
            let priv = makeKeyPair().privateKey
            let keys = (0..<50).map { _ in randomKey() }
            var steps: [WireGuardConfig] = []
            steps.append(WireGuardConfig(privateKey: priv, listenPort: 47_000, firewallMark: 0x99, replacePeers: true,
                                         peers: keys.enumerated().map { syntheticPeer($0.offset, key: $0.element) }))
            steps.append(WireGuardConfig(peers: [
                WireGuardPeerConfig(publicKey: keys[0], updateOnly: true, presharedKey: randomKey(), allowedIPs: [IPPrefix("100.66.0.0/16")!]),
                WireGuardPeerConfig(publicKey: randomKey(), updateOnly: true, allowedIPs: [IPPrefix("100.67.0.0/16")!]),
                .removing(keys[1]), .removing(randomKey()),
                WireGuardPeerConfig(publicKey: keys[2], replaceAllowedIPs: true, allowedIPs: [IPPrefix("fd00:2::/48")!]),
                WireGuardPeerConfig(publicKey: keys[3], replaceAllowedIPs: true),
                WireGuardPeerConfig(publicKey: keys[4], endpoint: HostPort("[fd00::99]:99"), persistentKeepaliveInterval: 0),
            ]))
            steps.append(WireGuardConfig(firewallMark: 0, peers: [WireGuardPeerConfig(publicKey: keys[0], presharedKey: .zero)]))
            for (i, step) in steps.enumerated() {
                let rk = try await kb.configure(device: k.interface, step)
                let ru = try await ub.configure(device: u.interface, step)
                #expect(rk.skippedUpdateOnlyPeers == ru.skippedUpdateOnlyPeers, "step \(i)")
                var dk = try await kb.device(named: k.interface).normalized()
                var du = try await ub.device(named: u.interface).normalized()
                #expect(dk.backend == .kernel && du.backend == .userspace)
                dk.name = "x"; du.name = "x"
                dk.backend = .userspace
                // Whole readings, listen port included: both were given the same one. The counters are
                // each daemon's own traffic (the keepalive peers' handshake initiations, sent on each
                // daemon's own timers), so they are left out.
                #expect(dk.withoutCounters == du.withoutCounters, "step \(i): kernel and wireguard-go readings differ")
                #expect(dk.listenPort == 47_000, "step \(i): listen port \(dk.listenPort)")
                let ck = try await lab.wgShowconf(k), cu = try await lab.wgShowconf(u)
                #expect(ck == cu, "step \(i): wg showconf differs between kernel and wireguard-go")
                #expect(showconf(from: try await kb.device(named: k.interface)) == ck, "step \(i): library vs wg showconf (kernel)")
                #expect(showconf(from: try await ub.device(named: u.interface)) == cu, "step \(i): library vs wg showconf (userspace)")
            }
        }
    }

    /// A kernel peer and a wireguard-go peer, both configured through the library, talk to each other.
    @Test func kernelAndUserspaceInteroperate() async throws {
        try await withLab(kernelA: true, kernelB: false) { lab in
            try await lab.connect()
            let r = try await lab.ping(from: lab.a, to: lab.b.tunnelAddress.address)
            #expect(r.status == 0, "ping kernel -> wireguard-go failed: \(r.output)")
        }
    }
}

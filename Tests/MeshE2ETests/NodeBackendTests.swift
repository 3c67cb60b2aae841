import Foundation
import Logging
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import MeshWireGuard
import Testing

/// Set to 1 by scripts/vm-test.sh inside the VM: there the kernel has WireGuard, and its absence is
/// a failure, not a reason to skip.
let requireKernel = ProcessInfo.processInfo.environment["MESH_WG_REQUIRE_KERNEL"] == "1"
/// Set to 1 by scripts/vm-test.sh for its second run, after it unloaded the wireguard module.
let requireNoKernel = ProcessInfo.processInfo.environment["MESH_WG_REQUIRE_NO_KERNEL"] == "1"

func kernelHasWireGuard() async -> Bool {
    var logger = Logger(label: "test.kernel-check")
    logger.logLevel = .critical
    return await KernelBackend(logger: logger).isAvailable()
}

/// The NodeApplier daemon itself on kernel WireGuard: it creates the interface through netlink, and a
/// device (in a namespace of its own) handshakes and pings through it. Runs in the qemu VM of
/// `scripts/vm-test.sh`, whose kernel has the module, with the control plane, nats-server and
/// PostgreSQL inside the VM as well, after the VM's other kernel suites (they would compete for its
/// two emulated CPUs).
@Suite(.timeLimit(.minutes(15)), .serialized, .enabled("runs where the kernel has WireGuard: in the VM (scripts/vm-test.sh)") {
    if requireKernel { return true }
    guard TestEnvironment.isRoot && TestEnvironment.hasInfra else { return false }
    return await kernelHasWireGuard()
})
struct KernelNodeApplierTests {
    @Test func aNodeOnKernelWireGuardCarriesADevice() async throws {
        #expect(await kernelHasWireGuard(), "the kernel has no WireGuard (generic netlink family \"wireguard\")")
        // Everything runs under TCG emulation here: deadlines are long, and they only bound a regression.
        let lab = try await MeshLab.start("kernode")
        do {
            let node = try await lab.addNode("kern-alpha", environment: ["MESH_WG_BACKEND": "kernel"], timeout: .seconds(300))
            let device = try await lab.addDevice("kernel laptop")
            try await lab.waitConverged(timeout: .seconds(300))
            let state = try await NodeClient(bus: lab.cp.bus, timeout: .seconds(30)).state(nodeID: node.node!.id)
            #expect(state.backend == "kernel", "the node runs on \(state.backend)")
            // A kernel link, not a TUN device, and no wireguard-go in the node's namespace.
            let link = try await node.ns.exec(["ip", "-d", "link", "show", node.interface])
            #expect(link.contains("wireguard"), "\(link)")
            #expect(!processes(in: node.ns).contains { $0.contains("wireguard-go") }, "the node started wireguard-go")
            #expect(await lab.reaches(from: device.ns, node.node!.ipv4, count: 3, within: .seconds(120)), "device to its node over kernel WireGuard")
            #expect(await lab.reaches(from: node.ns, device.device.ipv4, count: 3, within: .seconds(120)), "node to the device over kernel WireGuard")
            #expect(try await deviceOnline(lab, within: .seconds(180)), "the node's handshake reports did not turn the device online")
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }
}

/// Where the kernel has no WireGuard, NodeApplier's automatic choice (`MESH_WG_BACKEND=auto`, the
/// default) starts wireguard-go by itself, and a device handshakes through it. Runs in the VM of
/// `scripts/vm-test.sh` after the kernel suites, once the VM has unloaded the wireguard module (so
/// it does not depend on the host's kernel), and by hand on any kernel without the module.
@Suite(.timeLimit(.minutes(15)), .serialized, .enabled("runs on a kernel without WireGuard: in the VM once the module is unloaded (scripts/vm-test.sh)") {
    if requireNoKernel { return true }
    guard TestEnvironment.isRoot && TestEnvironment.hasInfra && !requireKernel else { return false }
    return !(await kernelHasWireGuard())
})
struct WireGuardGoFallbackTests {
    @Test func withoutTheModuleNodeApplierStartsWireGuardGo() async throws {
        #expect(!(await kernelHasWireGuard()), "the kernel has WireGuard: the fallback cannot be shown here")
        let lab = try await MeshLab.start("fallback")
        do {
            let n1 = try await lab.addNode("fb-alpha", environment: ["MESH_WG_BACKEND": "auto"], timeout: .seconds(300))
            let device = try await lab.addDevice("fallback laptop")
            try await lab.waitConverged(timeout: .seconds(300))
            let state = try await NodeClient(bus: lab.cp.bus, timeout: .seconds(30)).state(nodeID: n1.node!.id)
            #expect(state.backend == "userspace", "the node runs on \(state.backend)")
            #expect(processes(in: n1.ns).contains { $0.contains("wireguard-go") && $0.contains(n1.interface) },
                    "no wireguard-go for \(n1.interface) in the node's namespace: \(processes(in: n1.ns))")
            #expect(n1.process?.log().contains("started wireguard-go") == true, "NodeApplier did not say it started wireguard-go")
            #expect(await lab.reaches(from: device.ns, n1.node!.ipv4, count: 3, within: .seconds(120)), "device to its node through the wireguard-go NodeApplier started")
            #expect(try await deviceOnline(lab, within: .seconds(180)), "the node's handshake report did not turn the device online")
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }
}

/// The command lines of the processes in a namespace.
func processes(in ns: NetNamespace) -> [String] {
    let pids = ((try? run("/usr/bin/env", ["ip", "netns", "pids", ns.name]).stdout) ?? "").split(separator: "\n")
    return pids.compactMap { pid in
        (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map { data in
            String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        }
    }
}

/// Waits (`within`) until every device of the lab's tenant is online.
func deviceOnline(_ lab: MeshLab, within: Duration = .seconds(60)) async throws -> Bool {
    let deadline = ContinuousClock.now + within
    while ContinuousClock.now < deadline {
        if try await lab.cp.client.listDevices(caller: lab.admin).allSatisfy(\.online) { return true }
        try await Task.sleep(for: .milliseconds(200))
    }
    return false
}

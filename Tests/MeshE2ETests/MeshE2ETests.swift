import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// The whole mesh with real WireGuard: the control plane, three nodes running NodeApplier with
/// wireguard-go in network namespaces, and two devices brought up from the configs they were given.
@Suite(.timeLimit(.minutes(15)), .enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "wg-quick", "ip", "dig", "ping"]), "needs root, wireguard-go, nats-server and PostgreSQL"), .serialized)
struct MeshE2ETests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "wg-quick", "ip", "dig", "ping"]) }

    @Test func meshConvergesRoutesAndSurvivesRestarts() async throws {
        let lab = try await MeshLab.start("e2e")
        let n1 = try await lab.addNode("alpha")
        let n2 = try await lab.addNode("beta")
        let n3 = try await lab.addNode("gamma")
        let a = try await lab.addDevice("Ann's laptop")
        let b = try await lab.addDevice("Bob's phone", type: .android)
        try await lab.waitConverged()
        // Every service and every node answers the NATS service protocol with its version.
        let pings = try await ServiceProcesses.ping(bus: lab.cp.bus, service: nil)
        for name in [MeshServiceName.allocator, MeshServiceName.provision, MeshServiceName.fanout] {
            #expect(pings.contains { $0.name == name && $0.version == MeshVersion.current }, "\(name) missing from $SRV.PING")
        }
        #expect(pings.filter { $0.name == MeshServiceName.nodeApplier }.count == 3)

        // Every node reaches every node and both devices, over IPv4 and IPv6.
        for from in lab.nodes {
            for to in lab.nodes where to !== from {
                #expect(await lab.reaches(from: from.ns, to.node!.ipv4), "\(from.name) -> \(to.name) v4")
                #expect(await lab.reaches(from: from.ns, to.node!.ipv6), "\(from.name) -> \(to.name) v6")
            }
            for d in [a, b] {
                // The device handshakes with each node on its own (keepalive), so a node can reach it.
                _ = await lab.reaches(from: d.ns, from.node!.ipv4, count: 1, within: .zero)
                #expect(await lab.reaches(from: from.ns, d.device.ipv4), "\(from.name) -> \(d.device.label) v4")
                #expect(await lab.reaches(from: from.ns, d.device.ipv6), "\(from.name) -> \(d.device.label) v6")
            }
        }
        // One device reaches the other through the hub node.
        #expect(n1.node!.hub)
        #expect(await lab.reaches(from: a.ns, b.device.ipv4), "device to device v4 through the hub")
        #expect(await lab.reaches(from: b.ns, a.device.ipv6), "device to device v6 through the hub")

        // Device status turns online after its first handshake (node reports -> ProvisionSvc).
        try await waitUntil("both devices online after their handshakes", interval: .milliseconds(100)) {
            try await lab.cp.client.listDevices(caller: lab.admin).allSatisfy(\.online)
        }

        // Mesh DNS: from a device, over the tunnel, every device and node name resolves (A and AAAA)
        // at every node's resolver.
        func dig(_ from: NetNamespace, _ server: String, _ name: String, _ type: String) async -> String {
            (try? await from.tryExec(["dig", "+short", "+time=1", "+tries=2", "@\(server)", name, type]).stdout)?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        }
        for n in lab.nodes {
            for d in [a, b] {
                #expect(await dig(a.ns, n.node!.ipv4, d.device.dnsName, "A") == d.device.ipv4, "\(d.device.dnsName) A at \(n.name)")
                #expect(await dig(a.ns, n.node!.ipv6, d.device.dnsName, "AAAA") == d.device.ipv6, "\(d.device.dnsName) AAAA at \(n.name)")
            }
            for m in lab.nodes {
                #expect(await dig(b.ns, n.node!.ipv4, m.node!.dnsName, "A") == m.node!.ipv4, "\(m.node!.dnsName) A at \(n.name)")
                #expect(await dig(b.ns, n.node!.ipv4, m.node!.dnsName, "AAAA") == m.node!.ipv6)
            }
        }
        let status = try await NodeClient(bus: lab.cp.bus, timeout: .seconds(60)).state(nodeID: n1.node!.id)
        #expect(status.dnsStatus.serving && status.dnsStatus.zone == "quazzar.mesh" && status.dnsStatus.recordCount >= 10)
        // A renamed device stops resolving under its old name, and resolves under the new one, on
        // every node (how fast is a figure: scripts/bench-latency.sh, docs/benchmarks.md).
        let renamed = try await lab.cp.client.renameDevice(caller: lab.admin, deviceID: a.device.id, label: "Ann's new laptop").device
        let renameStart = ContinuousClock.now
        try await waitUntil("the old name stops resolving and the new one resolves on every node", interval: .milliseconds(10)) {
            await lab.nodes.allSatisfy { n in
                guard await dig(b.ns, n.node!.ipv4, a.device.dnsName, "A").isEmpty else { return false }
                return await dig(b.ns, n.node!.ipv4, renamed.dnsName, "A") == a.device.ipv4
            }
        }
        print("figure: rename visible in DNS on every node after \(ContinuousClock.now - renameStart)")

        // Deleting a device removes it from every node.
        _ = try await lab.cp.client.deleteDevice(caller: lab.admin, deviceID: b.device.id)
        let deleteStart = ContinuousClock.now
        try await waitUntil("a deleted device stops resolving on every node", interval: .milliseconds(10)) {
            await lab.nodes.allSatisfy { await dig(a.ns, $0.node!.ipv4, b.device.dnsName, "A").isEmpty }
        }
        print("figure: delete visible in DNS on every node after \(ContinuousClock.now - deleteStart)")
        try await lab.waitConverged()
        for n in lab.nodes { #expect(!(try lab.livePeers(n)).contains(b.device.publicKey)) }

        // Kill NodeApplier (SIGKILL) and FanoutSvc mid-stream; keep provisioning; restart both.
        await n2.process!.kill9()
        let fanout = lab.cp.processes.last!
        let createdSoFar = TestCounter()
        async let churn: [Mesh_V1_Device] = {
            var made: [Mesh_V1_Device] = []
            for i in 0..<12 {
                made.append(try await lab.cp.client.createDevice(caller: lab.admin, label: "churn \(i)", type: .other).device)
                createdSoFar.increment()
            }
            return made
        }()
        // FanoutSvc dies mid-stream: after some of the creations, before the rest.
        try await waitUntil("a few creations made") { createdSoFar.value >= 3 }
        await fanout.kill9()
        let made = try await churn
        for d in made.prefix(4) { _ = try await lab.cp.client.deleteDevice(caller: lab.admin, deviceID: d.id) }
        // While n2's agent is down, its interface keeps working peers.
        #expect(await lab.reaches(from: n2.ns, n1.node!.ipv4), "n2's interface outlives its agent")
        let fanout2 = try await ServiceProcesses.start("FanoutSvc", natsURL: lab.cp.nats.url, databaseURL: lab.cp.db.url, bus: lab.cp.bus, logDir: lab.cp.logDir)
        try lab.startNodeProcess(n2)
        let took = try await lab.waitConverged()
        print("figure: converged \(took) after restarting NodeApplier and FanoutSvc")
        #expect(await lab.reaches(from: a.ns, n2.node!.ipv4), "a device still reaches the restarted node")
        #expect(await lab.reaches(from: n3.ns, a.device.ipv4))
        // Every control request reaches the restarted agent. The wireguard-go it left running must
        // not hold the killed agent's NATS connection open: the server would keep the dead agent's
        // subscriptions and hand it about half of the node's requests.
        let nodeClient = NodeClient(bus: lab.cp.bus, timeout: .seconds(10))
        var unanswered = 0
        for _ in 0..<20 where (try? await nodeClient.state(nodeID: n2.node!.id)) == nil { unanswered += 1 }
        #expect(unanswered == 0, "\(unanswered) of 20 state requests to the restarted node went unanswered")
        try await stopChecked(fanout2)
        try await lab.stop()
    }
}

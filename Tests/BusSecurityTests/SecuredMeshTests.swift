import Foundation
import MeshBusAuth
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// The real NodeApplier on the secured bus (TLS, per-service and per-node credentials): it enrolls
/// with the bootstrap identity, reconnects with its own key and the JWT ProvisionSvc signed, syncs,
/// tunnels, reports handshakes and answers the operator; removing it cuts it off.
@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "ip"]), "needs root, wireguard-go, nats-server and PostgreSQL"), .serialized)
struct SecuredMeshTests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "ip"]) }

    @Test func realNodesEnrollTunnelAndAreCutOffWhenRemoved() async throws {
        let lab = try await MeshLab.start("secmesh", secureBus: true)
        do {
            try await body(lab)
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func body(_ lab: MeshLab) async throws {
        let n1 = try await lab.addNode("sec-alpha")
        let n2 = try await lab.addNode("sec-beta")
        let device = try await lab.addDevice("secure laptop")
        try await lab.waitConverged()
        #expect(await lab.reaches(from: n1.ns, n2.node!.ipv4), "node to node over the tunnel")
        _ = await lab.reaches(from: device.ns, n1.node!.ipv4, count: 1, within: .zero)
        #expect(await lab.reaches(from: n1.ns, device.device.ipv4), "node to device over the tunnel")

        // The node keeps its own key (0600) and a JWT for it; the control plane never sent a seed.
        for n in [n1, n2] {
            let keyPath = n.stateDir.appendingPathComponent("bus.nk").path
            let attrs = try FileManager.default.attributesOfItem(atPath: keyPath)
            #expect((attrs[.posixPermissions] as? Int) == 0o600)
            let key = try NKeyPair(seed: try String(contentsOfFile: keyPath, encoding: .utf8), expecting: .user)
            let saved = try String(contentsOf: n.stateDir.appendingPathComponent("node.json"), encoding: .utf8)
            #expect(!saved.contains(key.seed))
            let json = try JSONDecoder().decode([String: JSONValue].self, from: Data(saved.utf8))
            let jwt = try #require(json["busUserJWT"]?.stringValue)
            #expect(try NatsJWT.decode(jwt)["sub"]?.stringValue == key.publicKey)
            #expect(n.process?.log().contains("Permissions Violation") == false, "\(n.name) hit a permission error:\n\(n.process?.log().suffix(3000) ?? "")")
        }

        // Handshake reports reach ProvisionSvc: the device turns online.
        try await waitUntil("handshake reports arrive and the device is online") {
            try await lab.cp.client.listDevices(caller: lab.admin).allSatisfy(\.online)
        }

        // Removing a node: its NodeApplier is disconnected and cannot answer any more.
        let nodes = NodeClient(bus: lab.cp.bus, timeout: .seconds(1))
        _ = try await nodes.state(nodeID: n2.node!.id)
        let start = ContinuousClock.now
        _ = try await lab.cp.client.deregisterNode(caller: lab.admin, nodeID: n2.node!.id)
        // It stops answering (how fast is a figure: scripts/bench-latency.sh, docs/benchmarks.md).
        try await waitUntil("the removed node stops answering on its control subject", interval: .milliseconds(20)) {
            if case .unavailable? = await meshError({ _ = try await nodes.state(nodeID: n2.node!.id) }) { return true }
            return false
        }
        let cut = ContinuousClock.now - start
        // Its NodeApplier, refused by the bus, stops with an error status (its supervisor would
        // start it again, and the bus would refuse it again).
        let removed = try #require(n2.process)
        removed.expectExit()
        try await waitUntil("the removed node's NodeApplier stops") { !removed.isRunning }
        #expect(removed.exitStatus != 0, "the removed node's NodeApplier exited \(String(describing: removed.exitStatus))")
        #expect(removed.log().contains("User Authentication Revoked"))
        SecuredBusTests.figure("revocation (real NodeApplier): deregister request to no responder on its control subject \(ms(cut))")
        // The remaining node still works.
        _ = try await nodes.state(nodeID: n1.node!.id)
    }
}

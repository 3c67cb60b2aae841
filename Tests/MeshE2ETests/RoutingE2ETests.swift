import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// Configs that never go stale (docs/routing.md), with real WireGuard: nodes running NodeApplier with
/// wireguard-go in namespaces, devices brought up from the exact configs they were given.
@Suite(.enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "wg-quick", "ip", "dig", "ping"]),
                 "needs root, wireguard-go, nats-server and PostgreSQL"), .serialized,
       .timeLimit(.minutes(10)))
struct RoutingE2ETests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "wg-quick", "ip", "dig", "ping"]) }

    func dig(_ from: NetNamespace, _ server: String, _ name: String, _ type: String) async -> String {
        (try? await from.tryExec(["dig", "+short", "+time=1", "+tries=3", "@\(server)", name, type]).stdout)?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// Pings until it answers or the deadline passes (the first packets start handshakes).
    func reaches(_ lab: MeshLab, from ns: NetNamespace, _ address: String, within: Duration = .seconds(60)) async -> Bool {
        await lab.reaches(from: ns, address, count: 1, within: within)
    }

    /// No interface holds an address twice: every node's and every device's.
    func checkNoAddressTwice(_ lab: MeshLab, devices: [(NetNamespace, String)], _ when: String) throws {
        var interfaces = lab.nodes.filter { $0.process?.isRunning == true }.map { ($0.ns, $0.interface, $0.name) }
        interfaces += devices.map { ($0.0, $0.1, $0.1) }
        for (ns, iface, name) in interfaces {
            let all = try MeshLab.allowedIPs(ns, iface).values.flatMap { $0 }
            #expect(Set(all).count == all.count, "\(when): \(name) holds an address twice: \(all.sorted())")
        }
    }

    @Test func oldConfigsReachNewNodesAndReissuedConfigsReplaceOldKeys() async throws {
        let lab = try await MeshLab.start("routing")
        do {
            try await run(lab)
        } catch {
            try? await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func run(_ lab: MeshLab) async throws {
        let alpha = try await lab.addNode("alpha")
        let beta = try await lab.addNode("beta")
        let early = try await lab.addDevice("Early laptop")
        #expect(Set(early.device.configNodeIds) == [alpha.node!.id, beta.node!.id])
        #expect(early.config.contains("AllowedIPs = \(alpha.node!.ipv4)/32, \(alpha.node!.ipv6)/128, \(lab.tenant.ipv4Prefix), \(lab.tenant.ipv6Prefix)"),
                "the hub carries the whole tenant prefix")

        // A node joins after the device was made: the device's config does not list it.
        let gamma = try await lab.addNode("gamma")
        try await lab.waitConverged()
        #expect(try lab.livePeers(gamma).contains(early.device.publicKey) == false, "gamma reaches the early device through the hub")
        for (address, what) in [(gamma.node!.ipv4, "v4"), (gamma.node!.ipv6, "v6")] {
            #expect(await reaches(lab, from: early.ns, address), "early device -> gamma \(what)")
        }
        for (address, what) in [(early.device.ipv4, "v4"), (early.device.ipv6, "v6")] {
            #expect(await reaches(lab, from: gamma.ns, address), "gamma -> early device \(what)")
        }
        // Its name resolves through the mesh DNS the device's config points at.
        #expect(await dig(early.ns, alpha.node!.ipv4, gamma.node!.dnsName, "A") == gamma.node!.ipv4)
        #expect(await dig(early.ns, alpha.node!.ipv4, gamma.node!.dnsName, "AAAA") == gamma.node!.ipv6)

        // A device made now lists gamma; it and the early device reach each other, both ways.
        let late = try await lab.addDevice("Late phone", type: .android)
        #expect(late.device.configNodeIds.contains(gamma.node!.id))
        try await lab.waitConverged()
        for (from, to) in [(late, early), (early, late)] {
            #expect(await reaches(lab, from: from.ns, to.device.ipv4), "\(from.device.label) -> \(to.device.label) v4")
            #expect(await reaches(lab, from: from.ns, to.device.ipv6), "\(from.device.label) -> \(to.device.label) v6")
        }
        try checkNoAddressTwice(lab, devices: [(early.ns, early.interface), (late.ns, late.interface)], "after gamma joined")

        // Re-issue the late device twice at once: exactly one key survives everywhere; its addresses stay.
        async let first = lab.cp.client.reissueDevice(caller: lab.admin, deviceID: late.device.id)
        async let second = lab.cp.client.reissueDevice(caller: lab.admin, deviceID: late.device.id)
        let issued = [try await first, try await second]
        #expect(issued.allSatisfy { $0.device.ipv4 == late.device.ipv4 && $0.device.ipv6 == late.device.ipv6 && $0.device.slug == late.device.slug })
        try await lab.waitConverged()
        let stored = try #require(try await lab.cp.client.listDevices(caller: lab.admin).first { $0.id == late.device.id })
        #expect(issued.contains { $0.device.publicKey == stored.publicKey })
        for n in lab.nodes {
            let held = try lab.livePeers(n)
            #expect(held.contains(stored.publicKey), "\(n.name) holds the surviving key")
            #expect(!held.contains(late.device.publicKey), "\(n.name) still holds the key before the re-issues")
            #expect(issued.filter { held.contains($0.device.publicKey) }.count == 1, "\(n.name) holds exactly one of the re-issued keys")
        }

        // The hub goes: the configs that routed through it are outdated, with the reason.
        _ = try await lab.cp.client.deregisterNode(caller: lab.admin, nodeID: alpha.node!.id)
        if let p = alpha.process { await p.terminate(timeout: .seconds(5)) }
        alpha.removed = true
        let devices = try await lab.cp.client.listDevices(caller: lab.admin)
        for d in devices {
            #expect(d.configOutdated && d.configOutdatedReason == "its hub alpha was removed", "\(d.label): \(d.configOutdatedReason)")
        }
        let hub = try #require(try await lab.cp.client.listNodes(caller: lab.admin).first { $0.hub })
        #expect(hub.id == beta.node!.id, "the next oldest node is the hub")

        // Re-issue the early device and bring the new config up: it reaches every node again, and its
        // old key no longer handshakes anywhere.
        let renewed = try await lab.cp.client.reissueDevice(caller: lab.admin, deviceID: early.device.id)
        #expect(!renewed.device.configOutdated && renewed.device.ipv4 == early.device.ipv4)
        #expect(renewed.config.contains("AllowedIPs = \(beta.node!.ipv4)/32, \(beta.node!.ipv6)/128, \(lab.tenant.ipv4Prefix)"))
        let tunnel = try lab.bringUp(config: renewed.config)
        try await lab.waitConverged()
        for n in [beta, gamma] {
            #expect(await reaches(lab, from: tunnel.ns, n.node!.ipv4), "re-issued device -> \(n.name) v4")
            #expect(await reaches(lab, from: tunnel.ns, n.node!.ipv6), "re-issued device -> \(n.name) v6")
            #expect(await reaches(lab, from: n.ns, early.device.ipv4), "\(n.name) -> re-issued device v4")
            #expect(!(try lab.livePeers(n)).contains(early.device.publicKey), "\(n.name) still holds the old key")
        }
        // The old config is dead: its interface gets no new handshake, and nothing answers it.
        try await early.ns.exec(["wg", "set", early.interface, "peer", try #require(beta.node?.publicKey), "endpoint", "\(beta.address):51820"])
        #expect(await lab.isCutOff(from: early.ns, beta.node!.ipv4, count: 2), "the old config still reaches beta")
        #expect(try MeshLab.allowedIPs(beta.ns, beta.interface)[early.device.publicKey] == nil)
        try checkNoAddressTwice(lab, devices: [(tunnel.ns, tunnel.interface)], "after the hub was removed")

        // An admin makes gamma the hub while beta lives: the re-issued config (hub beta) is outdated
        // but keeps working, and a node that joins now reaches it through beta.
        _ = try await lab.cp.client.setHub(caller: lab.admin, nodeID: gamma.node!.id)
        let marked = try #require(try await lab.cp.client.listDevices(caller: lab.admin).first { $0.id == early.device.id })
        #expect(marked.configOutdated && marked.configOutdatedReason == "the tenant's hub changed from beta to gamma", "\(marked.configOutdatedReason)")
        let delta = try await lab.addNode("delta")
        try await lab.waitConverged()
        let routes = try MeshLab.allowedIPs(delta.ns, delta.interface)
        #expect(routes[try #require(beta.node?.publicKey)]?.contains("\(early.device.ipv4)/32") == true, "delta routes the device through beta")
        #expect(routes[try #require(gamma.node?.publicKey)]?.contains(lab.tenant.ipv4Prefix) == true, "delta's hub peer is gamma")
        for n in [beta, gamma, delta] {
            #expect(await reaches(lab, from: tunnel.ns, n.node!.ipv4), "device on the old hub's config -> \(n.name)")
            #expect(await reaches(lab, from: n.ns, early.device.ipv4), "\(n.name) -> device on the old hub's config")
        }
        try checkNoAddressTwice(lab, devices: [(tunnel.ns, tunnel.interface)], "after the hub changed")
    }
}

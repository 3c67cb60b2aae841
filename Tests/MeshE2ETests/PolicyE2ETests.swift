import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// Access policies with the whole system: the control plane, a node running NodeApplier with
/// wireguard-go and real nftables in its namespace, and devices of two users brought up from their
/// configs. Device-to-device traffic passes the node (the hub), traffic to the node ends there;
/// every pair is checked both ways, over IPv4 and IPv6, with ping and TCP.
@Suite(.enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "ping", "nft", "conntrack", "python3"]), "needs root, wireguard-go, nftables, conntrack, nats-server and PostgreSQL"), .serialized,
       .timeLimit(.minutes(10)))
struct PolicyE2ETests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "ping", "nft", "conntrack", "python3"]) }

    @Test func rulesAreEnforcedOnTheNodeAndFollowEveryChange() async throws {
        let lab = try await MeshLab.start("policy")
        do {
            try await run(lab)
        } catch {
            try await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    /// A member of the lab: its namespace and addresses.
    struct End: Sendable {
        let name: String
        let ns: NetNamespace
        let v4: String
        let v6: String
        let member: String
    }

    /// Pings until it answers or the deadline passes (the first packets may start a handshake).
    func reaches(_ lab: MeshLab, _ from: End, _ address: String, within: Duration = .seconds(15)) async -> Bool {
        await lab.reaches(from: from.ns, address, count: 1, within: within)
    }

    /// Connects until it works or the deadline passes.
    func connects(_ from: End, _ address: String, _ port: Int, within: Duration = .seconds(15)) async -> Bool {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            let ns = from.ns
            if (try? await offPool { TrafficProbe.connects(from: ns, to: address, port: port) }) == true { return true }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    /// Waits until the node's filter holds policy `version` (its state subject says so).
    func waitForPolicy(_ lab: MeshLab, _ node: MeshLab.LabNode, version: UInt64, within: Duration = .seconds(30)) async throws {
        let client = NodeClient(bus: lab.cp.bus, timeout: .seconds(2))
        let deadline = ContinuousClock.now + within
        var last = Mesh_V1_PolicyStatus()
        while ContinuousClock.now < deadline {
            if let s = try? await client.state(nodeID: node.node!.id).policyStatus {
                last = s
                if s.version == version && (s.state == "enforced" || s.state == "none") { return }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSetupError.failed("\(node.name) did not apply policy \(version): \(last)")
    }

    func dig(_ from: End, _ server: String, _ name: String) async -> String {
        (try? await from.ns.tryExec(["dig", "+short", "+time=1", "+tries=3", "@\(server)", name, "A"]).stdout)?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    func rule(_ name: String, _ from: String, _ to: String, _ ports: [String]) throws -> Mesh_V1_PolicyRule {
        try Mesh_V1_PolicyRule.with {
            $0.name = name
            $0.sources = [try PolicyText.selector(from, field: "")]
            $0.destinations = [try PolicyText.selector(to, field: "")]
            $0.ports = try ports.map { try PolicyText.port($0, field: "") }
        }
    }

    func run(_ lab: MeshLab) async throws {
        let hub = try await lab.addNode("edge")
        let userA = try await lab.cp.user(lab.tenant, .owner), userB = try await lab.cp.user(lab.tenant, .owner)
        let laptopA = try await lab.addDevice("A laptop", type: .laptop, owner: userA)
        let phoneB = try await lab.addDevice("B phone", type: .android, owner: userB)
        let laptopB = try await lab.addDevice("B laptop", type: .laptop, owner: userB)
        try await lab.waitConverged()
        let node = End(name: "node", ns: hub.ns, v4: hub.node!.ipv4, v6: hub.node!.ipv6, member: "node:\(hub.node!.id)")
        func end(_ d: MeshLab.LabDevice) -> End { End(name: d.device.label, ns: d.ns, v4: d.device.ipv4, v6: d.device.ipv6, member: "device:\(d.device.id)") }
        let a = end(laptopA), b = end(phoneB), c = end(laptopB)
        let everyone = [node, a, b, c]
        // The echo servers live as long as this array (a ManagedProcess is killed when released).
        var servers: [ManagedProcess] = []
        for e in everyone { servers.append(try await TrafficProbe.serve(e.ns, ports: [22, 80, 8080, 9090], logDir: lab.cp.logDir)) }
        defer { withExtendedLifetime(servers) {} }

        // No rule: every pair reaches every other, both ways, both families (this also proves the
        // paths work, so every refusal below is the filter's).
        for x in everyone {
            for y in everyone where y.name != x.name {
                for addr in [y.v4, y.v6] {
                    #expect(await reaches(lab, x, addr), "no rules: \(x.name) pings \(y.name) at \(addr)")
                    #expect(await connects(x, addr, 9090), "no rules: \(x.name) → \(y.name):9090 at \(addr)")
                }
            }
        }

        // A's laptop may reach the node on TCP 22 only; B's phone may reach A's laptop on 8080. Nothing else.
        _ = try await lab.cp.client.setTags(caller: lab.admin, kind: .node, memberID: hub.node!.id, tags: ["servers"])
        let ssh = try await lab.cp.client.updatePolicy(caller: lab.admin, .add(try rule("A laptop to servers", a.member, "tag:servers", ["tcp:22"])))
        let toLaptop = try await lab.cp.client.updatePolicy(caller: lab.admin, .add(try rule("B phone to A laptop", b.member, a.member, ["tcp:8080"])))
        #expect(toLaptop.policy.version == 2)
        try await waitForPolicy(lab, hub, version: 2)
        let allowed: Set<String> = ["A laptop→node:22", "B phone→A laptop:8080"]
        for x in everyone {
            for y in everyone where y.name != x.name {
                for addr in [y.v4, y.v6] {
                    #expect(await lab.isCutOff(from: x.ns, addr, count: 1), "\(x.name) pings \(y.name) at \(addr)")
                    for port in [22, 8080] {
                        let key = "\(x.name)→\(y.name):\(port)"
                        if allowed.contains(key) {
                            #expect(await connects(x, addr, port), "\(key) at \(addr) is allowed")
                        } else {
                            #expect(await !TrafficProbe.connects(from: x.ns, to: addr, port: port, timeout: 1.5), "\(key) at \(addr) is refused")
                        }
                    }
                }
            }
        }
        // The mesh DNS stays open, to everyone.
        #expect(await dig(b, node.v4, hub.node!.dnsName) == node.v4)
        #expect(await dig(c, node.v6, laptopA.device.dnsName) == a.v4)

        // The dry run agrees.
        let dry = try await lab.cp.client.checkPolicy(caller: lab.admin, from: b.member, to: a.v6, proto: .tcp, port: 8080)
        #expect(dry.allowed && dry.ruleID == toLaptop.rule.id)
        #expect(!(try await lab.cp.client.checkPolicy(caller: lab.admin, from: a.member, to: b.member, proto: .tcp, port: 8080)).allowed)

        // The DNS filter: a device is told only the names it may reach (and its own).
        _ = try await lab.cp.client.updatePolicy(caller: lab.admin, .dnsFiltered(true))
        let dnsDeadline = ContinuousClock.now + .seconds(15)
        while await dig(b, node.v4, laptopB.device.dnsName) != "" && ContinuousClock.now < dnsDeadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(await dig(b, node.v4, laptopA.device.dnsName) == a.v4, "B's phone may reach A's laptop: its name resolves")
        #expect(await dig(b, node.v4, laptopB.device.dnsName) == "", "B's phone may not reach B's laptop: its name does not resolve")
        #expect(await dig(b, node.v4, phoneB.device.dnsName) == b.v4, "a device sees its own name")
        #expect(await dig(a, node.v4, hub.node!.dnsName) == node.v4)
        #expect(await dig(a, node.v4, phoneB.device.dnsName) == "")
        #expect(await dig(c, node.v4, laptopA.device.dnsName) == "")

        // A rule change while connections are open: B's phone moves from 8080 to 9090; A's SSH stays.
        let sshSession = try await TrafficProbe.session(from: a.ns, to: node.v4, port: 22, logDir: lab.cp.logDir)
        let phoneSession = try await TrafficProbe.session(from: b.ns, to: a.v6, port: 8080, logDir: lab.cp.logDir)
        var moved = toLaptop.rule
        moved.ports = [try PolicyText.port("tcp:9090", field: "")]
        let v3 = try await lab.cp.client.updatePolicy(caller: lab.admin, .update(moved))
        try await waitForPolicy(lab, hub, version: v3.policy.version)
        let sshAt = sshSession.outcomes(), phoneAt = phoneSession.outcomes()
        #expect(await phoneSession.wait { $0.failed > phoneAt.failed }, "the revoked connection carried on: \(phoneSession.outcomes())")
        #expect(await sshSession.wait { $0.ok >= sshAt.ok + 5 }, "the allowed connection stopped: \(sshSession.outcomes())")
        #expect(sshSession.outcomes().failed == 0, "the allowed connection lost a round trip: \(sshSession.outcomes())")
        #expect(await connects(b, a.v4, 9090))
        #expect(await !TrafficProbe.connects(from: b.ns, to: a.v4, port: 8080, timeout: 1.5))
        await sshSession.process.terminate()
        await phoneSession.process.terminate()

        // The node restarted in the middle of a change converges to the current rules. While its
        // agent is down the kernel keeps the last filter in force.
        await hub.process!.kill9()
        let removed = try await lab.cp.client.updatePolicy(caller: lab.admin, .deleteRuleID(ssh.rule.id))
        let b80 = try await lab.cp.client.updatePolicy(caller: lab.admin, .add(try rule("B phone web", b.member, "tag:servers", ["tcp:80"])))
        #expect(b80.policy.version == removed.policy.version + 1)
        #expect(await !TrafficProbe.connects(from: b.ns, to: node.v4, port: 80, timeout: 1.5), "the filter changed while the agent was down")
        try lab.startNodeProcess(hub)
        try await waitForPolicy(lab, hub, version: b80.policy.version, within: .seconds(60))
        #expect(await connects(b, node.v4, 80))
        #expect(await connects(b, node.v6, 80))
        #expect(await !TrafficProbe.connects(from: a.ns, to: node.v4, port: 22, timeout: 1.5), "the removed rule still applies after the restart")
        #expect(await !TrafficProbe.connects(from: a.ns, to: node.v6, port: 22, timeout: 1.5))

        // Malformed rules and rules naming another tenant's objects are refused, and change nothing.
        let other = try await lab.cp.tenant(.enterprise)
        let otherAdmin = try await lab.cp.user(other, .admin)
        let foreign = try await lab.cp.node(other, admin: otherAdmin, name: "theirs", endpoint: "192.0.2.77:51820").0
        for (r, field) in [(try rule("foreign", a.member, "node:\(foreign.id)", []), "destinations[0]"),
                           (try rule("foreign user", "user:\(otherAdmin.userID)", "*", []), "sources[0]"),
                           (Mesh_V1_PolicyRule.with { $0.name = "bad"; $0.sources = [Mesh_V1_PolicySelector()]; $0.destinations = [Mesh_V1_PolicySelector.with { $0.all = true }] }, "sources[0]"),
                           (Mesh_V1_PolicyRule.with { $0.name = "bad port"; $0.sources = [Mesh_V1_PolicySelector.with { $0.all = true }]
                               $0.destinations = [Mesh_V1_PolicySelector.with { $0.all = true }]; $0.ports = [Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = 99999; $0.last = 99999 }] }, "ports[0]")] {
            let e = await meshError { _ = try await lab.cp.client.updatePolicy(caller: lab.admin, .add(r)) }
            guard case .invalidArgument(let f, _) = e else { Issue.record("\(r.name): \(String(describing: e))"); continue }
            #expect(f == field, "\(r.name)")
        }
        #expect(try await lab.cp.client.policy(caller: lab.admin).version == b80.policy.version, "a refused edit changed the policy")

        // No rule at all again: the filter goes and everything passes.
        let cleared = try await lab.cp.client.updatePolicy(caller: lab.admin, .replace(Mesh_V1_PolicyRules()))
        try await waitForPolicy(lab, hub, version: cleared.policy.version)
        #expect(try await NodeClient(bus: lab.cp.bus, timeout: .seconds(60)).state(nodeID: hub.node!.id).policyStatus.state == "none")
        #expect(await reaches(lab, a, b.v6))
        #expect(await reaches(lab, c, node.v4))
        #expect(await connects(a, b.v4, 22))
    }
}

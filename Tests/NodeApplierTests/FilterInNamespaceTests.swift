import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto
import MeshTestSupport
import NodeApplierCore
import Testing

/// The enforcer with the real tools (nft, conntrack) in network namespaces, on a plain veth link
/// named like a mesh interface: what the kernel does with the compiled rules, the atomic
/// replacement, and which open connections a change cuts. (MeshE2ETests runs the same over
/// WireGuard with the whole system.)
/// Whether nft, conntrack and python3 are installed (scripts/deps.sh installs them).
@Suite(.enabled(if: TestEnvironment.runs(root: true, tools: ["nft", "conntrack", "python3", "ip"]), "needs root, nft, conntrack and python3"), .serialized,
       .timeLimit(.minutes(3)))
struct FilterInNamespaceTests {
    init() throws { try TestEnvironment.require(root: true, tools: ["nft", "conntrack", "python3", "ip"]) }


    func sel(_ text: String) -> Mesh_V1_PolicySelector { try! PolicyText.selector(text, field: "s") }

    /// A node namespace and a client namespace joined by a veth pair whose node end is the "mesh
    /// interface"; the client holds the addresses of two devices.
    struct Link {
        let node: NetNamespace
        let client: NetNamespace
        let meshInterface: String
        let filter: NFTablesFilter
        let enforcer: PolicyEnforcer
        let out: URL

        init() throws {
            node = try NetNamespace(prefix: "pn")
            client = try NetNamespace(prefix: "pc")
            let id = String(UUID().uuidString.lowercased().prefix(6))
            meshInterface = "wq\(id)"
            let clientEnd = "wc\(id)"
            for args in [["link", "add", meshInterface, "type", "veth", "peer", "name", clientEnd],
                         ["link", "set", meshInterface, "netns", node.name], ["link", "set", clientEnd, "netns", client.name]] {
                let r = try run("/usr/bin/env", ["ip"] + args)
                guard r.status == 0 else { throw TestSetupError.failed("ip \(args.joined(separator: " ")): \(r.output)") }
            }
            for (ns, dev, addrs) in [(node, meshInterface, ["100.64.0.1/16", "fd00:1:2::1/48"]),
                                     (client, clientEnd, ["100.64.16.5/16", "100.64.16.6/16", "fd00:1:2::1005/48", "fd00:1:2::1006/48"])] {
                for a in addrs { try ns.exec(["ip"] + (a.contains(":") ? ["-6", "addr", "add", a, "dev", dev, "nodad"] : ["addr", "add", a, "dev", dev])) }
                try ns.exec(["ip", "link", "set", dev, "up"])
            }
            // WireGuard is a layer-3 link with no neighbor discovery; a veth is not. Fixed neighbor
            // entries make the veth behave like the tunnel, so the filter (which, like the mesh, knows
            // nothing of ICMPv6 neighbor discovery) is judged on the traffic alone.
            func mac(_ ns: NetNamespace, _ dev: String) throws -> String {
                let out = try ns.exec(["ip", "-o", "link", "show", "dev", dev])
                guard let r = out.range(of: "link/ether ") else { throw TestSetupError.failed("no MAC address: \(out)") }
                return String(out[r.upperBound...].prefix(17))
            }
            let nodeMAC = try mac(node, meshInterface), clientMAC = try mac(client, clientEnd)
            for a in ["fd00:1:2::1005", "fd00:1:2::1006"] {
                try node.exec(["ip", "-6", "neigh", "replace", a, "lladdr", clientMAC, "dev", meshInterface, "nud", "permanent"])
            }
            try client.exec(["ip", "-6", "neigh", "replace", "fd00:1:2::1", "lladdr", nodeMAC, "dev", clientEnd, "nud", "permanent"])
            filter = NFTablesFilter(prefix: ["ip", "netns", "exec", node.name])
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            enforcer = PolicyEnforcer(filter: filter, interface: meshInterface, logger: logger)
            out = TestEnvironment.outputDir("policy-netns")
        }

        func destroy() {
            client.destroy()
            node.destroy()
        }
    }

    /// The tenant: A's laptop (.5), B's phone (.6), the node (.1) tagged "servers".
    func world() -> (settings: Mesh_V1_TenantSettings, laptop: Mesh_V1_Member, phone: Mesh_V1_Member, node: Mesh_V1_Member) {
        var s = Mesh_V1_TenantSettings()
        s.domain = "quazzar.mesh"
        s.ipv4Prefix = "100.64.0.0/16"
        s.ipv6Prefix = "fd00:1:2::/48"
        s.meshEnabled = true
        func member(_ kind: Mesh_V1_PeerKind, _ host: Int, owner: String = "") -> Mesh_V1_Member {
            var m = Mesh_V1_Member()
            m.id = UUID().uuidString.lowercased()
            m.kind = kind
            m.ipv4 = "100.64.\(host / 256).\(host % 256)"
            m.ipv6 = "fd00:1:2::\(String(host, radix: 16))"
            m.slug = "h\(host)"
            m.active = true
            m.ownerUserID = owner
            m.ownerRole = .owner
            m.deviceType = .laptop
            return m
        }
        var node = member(.node, 1)
        node.tags = ["servers"]
        return (s, member(.device, 0x1005, owner: "a"), member(.device, 0x1006, owner: "b"), node)
    }

    func rule(_ name: String, _ from: String, _ to: String, _ ports: [String]) -> Mesh_V1_PolicyRule {
        Mesh_V1_PolicyRule.with {
            $0.id = UUID().uuidString.lowercased()
            $0.name = name
            $0.sources = [sel(from)]
            $0.destinations = [sel(to)]
            $0.ports = ports.map { try! PolicyText.port($0, field: "") }
        }
    }

    func ping(_ ns: NetNamespace, _ to: String, from: String) -> Bool {
        (try? ns.tryExec(["ping"] + (to.contains(":") ? ["-6"] : []) + ["-c", "1", "-W", "1", "-I", from, to]).status) == 0
    }

    @Test func theKernelEnforcesTheCompiledRulesAndCutsRevokedFlows() async throws {
        let link = try Link()
        defer { link.destroy() }
        // The echo server lives as long as this reference (a ManagedProcess is killed when released).
        let server = try await TrafficProbe.serve(link.node, ports: [22, 80], logDir: link.out)
        defer { withExtendedLifetime(server) {} }
        let (s, laptop, phone, node) = world()
        var members = [laptop, phone, node]
        func mesh(_ rules: [Mesh_V1_PolicyRule], version: UInt64) -> MeshState {
            MeshState(viewer: node.id, revision: version, settings: s, members: members, policy: Mesh_V1_PolicySet.with { $0.version = version; $0.rules = rules })
        }

        // No rule: everything passes.
        try await link.enforcer.sync(mesh([], version: 0))
        #expect(await TrafficProbe.connects(from: link.client, to: "100.64.0.1", port: 80, source: phone.ipv4))
        #expect(ping(link.client, "fd00:1:2::1", from: phone.ipv6))

        // The laptop may reach the servers on 22 and 80; nothing else is allowed.
        let both = rule("ssh and web", "device:\(laptop.id)", "tag:servers", ["tcp:22", "tcp:80"])
        try await link.enforcer.sync(mesh([both], version: 1))
        #expect(link.enforcer.status().state == "enforced")
        for (host, src) in [("100.64.0.1", laptop.ipv4), ("fd00:1:2::1", laptop.ipv6)] {
            #expect(await TrafficProbe.connects(from: link.client, to: host, port: 22, source: src), "laptop → node:22 \(host)")
            #expect(await TrafficProbe.connects(from: link.client, to: host, port: 80, source: src), "laptop → node:80 \(host)")
            #expect(!ping(link.client, host, from: src), "laptop pings the node \(host)")
        }
        for (host, src) in [("100.64.0.1", phone.ipv4), ("fd00:1:2::1", phone.ipv6)] {
            #expect(await !TrafficProbe.connects(from: link.client, to: host, port: 22, source: src), "phone → node:22 \(host)")
            #expect(!ping(link.client, host, from: src), "phone pings the node \(host)")
        }

        // Two open connections; the rule change keeps 22 and takes 80 away.
        let ssh = try await TrafficProbe.session(from: link.client, to: "100.64.0.1", port: 22, source: laptop.ipv4, logDir: link.out)
        let web = try await TrafficProbe.session(from: link.client, to: "fd00:1:2::1", port: 80, source: laptop.ipv6, logDir: link.out)
        try await link.enforcer.sync(mesh([rule("ssh", "device:\(laptop.id)", "tag:servers", ["tcp:22"])], version: 2))
        let sshAt = ssh.outcomes().ok, webAt = web.outcomes()
        #expect(await web.wait { $0.failed > webAt.failed }, "the revoked connection carried on: \(web.outcomes())")
        #expect(await ssh.wait { $0.ok >= sshAt + 5 && $0.failed == 0 }, "the allowed connection broke: \(ssh.outcomes())")
        #expect(await !TrafficProbe.connects(from: link.client, to: "fd00:1:2::1", port: 80, source: laptop.ipv6))

        // The node loses its tag (a member change, element updates only): the SSH connection stops.
        var untagged = node
        untagged.tags = []
        members[2] = untagged
        var u = Mesh_V1_PeersUpdated()
        u.upsert = untagged
        let sshFailed = ssh.outcomes().failed
        try await link.enforcer.apply(u, before: node, mesh: mesh([rule("ssh", "device:\(laptop.id)", "tag:servers", ["tcp:22"])], version: 2))
        #expect(await ssh.wait { $0.failed > sshFailed }, "the connection to the untagged node carried on: \(ssh.outcomes())")
        #expect(await !TrafficProbe.connects(from: link.client, to: "100.64.0.1", port: 22, source: laptop.ipv4))

        // A script that does not apply leaves the filter in force, whole. The rules are compared without
        // their state (`nft -s`): the drop counter moves while the probes' packets are dropped.
        let listing = ["nft", "-s", "list", "table", "inet", FilterPlan.tableName(interface: link.meshInterface)]
        let before = try await link.node.exec(listing)
        #expect(before.contains("drop") && !before.contains("packets"), "a stateless listing of the filter: \(before)")
        await #expect(throws: PacketFilterError.self) {
            try await link.filter.apply(FilterPlan.removal(table: "quazzar_x") + "table inet quazzar_x { chain c { this is not nft } }\n")
        }
        await #expect(try link.node.exec(listing) == before)

        // No rule again: the table goes, and everything passes.
        try await link.enforcer.sync(mesh([], version: 3))
        await #expect((try? link.node.tryExec(["nft", "list", "table", "inet", FilterPlan.tableName(interface: link.meshInterface)]).status) != 0)
        #expect(await TrafficProbe.connects(from: link.client, to: "100.64.0.1", port: 22, source: phone.ipv4))
    }
}

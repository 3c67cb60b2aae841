import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// The MTUs the control plane writes carry full-size packets without fragmentation: a device's config
/// (the tenant's device MTU, 1280 by default) and a node's interface (1420), over an IPv4 and an IPv6
/// underlay (veth ports on a bridge, MTU 1500). Every ping sets DF (`-M do`) at exactly the largest
/// size the interface takes, in both directions; one byte more must be refused locally (so DF is in
/// force), and no namespace may fragment or reassemble anything on the underlay meanwhile.
@Suite(.enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "ping"]), "needs root, wireguard-go, nats-server and PostgreSQL"), .serialized,
       .timeLimit(.minutes(10)))
struct MTUE2ETests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "ip", "ping"]) }

    /// Fragmentation and reassembly counters of a namespace (IPv4 and IPv6).
    func fragmentCounters(_ ns: NetNamespace) throws -> [String: Int] {
        var out: [String: Int] = [:]
        let snmp = try ns.exec(["cat", "/proc/net/snmp"]).split(separator: "\n")
        // "Ip: Forwarding DefaultTTL ..." then "Ip: 1 64 ...".
        if let i = snmp.firstIndex(where: { $0.hasPrefix("Ip: ") }), i + 1 < snmp.count {
            let names = snmp[i].split(separator: " ").dropFirst(), values = snmp[i + 1].split(separator: " ").dropFirst()
            for (n, v) in zip(names, values) where ["FragCreates", "FragOKs", "ReasmReqds"].contains(String(n)) { out["v4." + n] = Int(v) ?? -1 }
        }
        for line in try ns.exec(["cat", "/proc/net/snmp6"]).split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if f.count == 2, ["Ip6FragCreates", "Ip6FragOKs", "Ip6ReasmReqds"].contains(String(f[0])) { out[String(f[0])] = Int(f[1]) ?? -1 }
        }
        return out
    }

    func mtu(_ ns: NetNamespace, _ iface: String) throws -> Int {
        let line = try ns.exec(["ip", "-o", "link", "show", "dev", iface])
        let f = line.split(separator: " ")
        guard let i = f.firstIndex(of: "mtu"), i + 1 < f.count, let v = Int(f[i + 1]) else { return -1 }
        return v
    }

    /// Pings with DF set and `size` bytes of payload; true when all answers came back.
    func dfPing(_ ns: NetNamespace, _ address: String, payload size: Int) throws -> (ok: Bool, output: String) {
        let v6 = address.contains(":")
        let r = try ns.tryExec(["ping"] + (v6 ? ["-6"] : []) + ["-M", "do", "-s", "\(size)", "-c", "3", "-i", "0.2", "-W", "2", address])
        return (r.status == 0, r.output)
    }

    func reaches(_ lab: MeshLab, from ns: NetNamespace, _ address: String) async -> Bool {
        await lab.reaches(from: ns, address, count: 1)
    }

    @Test(arguments: [false, true])
    func fullSizePacketsPassWithoutFragmentation(underlay6: Bool) async throws {
        let lab = try await MeshLab.start(underlay6 ? "mtu6" : "mtu4", underlay6: underlay6)
        do {
            try await run(lab, underlay6: underlay6)
        } catch {
            try await lab.stop()
            throw error
        }
        try await lab.stop()
    }

    func run(_ lab: MeshLab, underlay6: Bool) async throws {
        let alpha = try await lab.addNode("alpha")
        let beta = try await lab.addNode("beta")
        let phone = try await lab.addDevice("phone", type: .iphone)
        try await lab.waitConverged()
        let a = try #require(alpha.node), b = try #require(beta.node)
        if underlay6 {
            #expect(phone.config.contains("Endpoint = [\(lab.underlay6(alpha.address)!)]:51820"), "the config's endpoint is the IPv6 underlay")
        }
        // What the control plane wrote: the tenant's device MTU in the config, 1420 on the nodes.
        #expect(phone.config.contains("MTU = \(TenantDefaults.deviceMTU)"))
        #expect(try mtu(phone.ns, phone.interface) == TenantDefaults.deviceMTU)
        #expect(try mtu(alpha.ns, alpha.interface) == 1420 && mtu(beta.ns, beta.interface) == 1420)
        // Sessions up (the first packets start handshakes).
        #expect(await reaches(lab, from: phone.ns, a.ipv4))
        #expect(await reaches(lab, from: alpha.ns, b.ipv4))
        #expect(await reaches(lab, from: beta.ns, phone.device.ipv4))

        let namespaces = [phone.ns, alpha.ns, beta.ns]
        let before = try namespaces.map(fragmentCounters)
        let device = TenantDefaults.deviceMTU, node = 1420
        // (from, to address, the sender's interface MTU): payload = MTU - IP header - ICMP header.
        let cases: [(String, NetNamespace, String, Int)] = [
            ("phone -> alpha", phone.ns, a.ipv4, device), ("phone -> alpha", phone.ns, a.ipv6, device),
            ("alpha -> phone", alpha.ns, phone.device.ipv4, device), ("alpha -> phone", alpha.ns, phone.device.ipv6, device),
            ("beta -> phone", beta.ns, phone.device.ipv4, device), ("beta -> phone", beta.ns, phone.device.ipv6, device),
            ("alpha -> beta", alpha.ns, b.ipv4, node), ("alpha -> beta", alpha.ns, b.ipv6, node),
            ("beta -> alpha", beta.ns, a.ipv4, node), ("beta -> alpha", beta.ns, a.ipv6, node),
        ]
        for (what, ns, to, size) in cases {
            let payload = size - (to.contains(":") ? 40 : 20) - 8
            let full = try dfPing(ns, to, payload: payload)
            #expect(full.ok, "\(what) \(to): a \(size)-byte packet with DF did not pass:\n\(full.output)")
        }
        // One byte over the sender's MTU is refused before it leaves (DF is in force on the path).
        for (what, ns, to, size) in cases where ns.name == phone.ns.name || size == node {
            let payload = size - (to.contains(":") ? 40 : 20) - 8 + 1
            let over = try dfPing(ns, to, payload: payload)
            #expect(!over.ok, "\(what) \(to): \(size + 1) bytes with DF went through an MTU of \(size)")
        }
        let after = try namespaces.map(fragmentCounters)
        for (i, ns) in namespaces.enumerated() {
            #expect(!before[i].isEmpty && before[i] == after[i], "\(ns.name) fragmented or reassembled: \(before[i]) -> \(after[i])")
        }
    }
}

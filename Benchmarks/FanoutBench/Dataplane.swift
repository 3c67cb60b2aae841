import Foundation
import MeshBus
import MeshDomain
import MeshTestSupport

// `FanoutBench dataplane [--seconds 5] [--rounds 3] [--underlay6 0|1]` (as root): TCP throughput with
// iperf3 between two network namespaces on a bridge (veth, MTU 1500), interleaved, in both directions:
//   - mesh: a device brought up from the wg-quick config ProvisionSvc gave it (MeshLab.addDevice) to
//     the node (the real NodeApplier with wireguard-go) it lists, over the mesh addresses;
//   - by hand: the same two namespaces, a second pair of wireguard-go interfaces configured only with
//     `wg` and `ip` (one peer each, the peer's /32 and /128), at the config's MTU and at wg-quick's
//     default 1420;
//   - underlay: the same two namespaces over their bridge addresses, no tunnel.
// wireguard-go is userspace WireGuard: these figures describe this machine, not kernel WireGuard.

func dataplane(seconds: Int, rounds: Int, underlay6: Bool) async throws {
    let lab = try await MeshLab.start("bench-dp", environment: ["MESH_LOG_LEVEL": "warning"], underlay6: underlay6)
    var servers: [ManagedProcess] = []
    do {
        let node = try await lab.addNode("alpha", environment: ["MESH_LOG_LEVEL": "warning"])
        let dev = try await lab.addDevice("laptop", type: .laptop)
        try await lab.waitConverged()
        guard let n = node.node else { throw TestSetupError.failed("node not registered") }
        let deviceMTU = Int(dev.config.split(separator: "\n").first { $0.hasPrefix("MTU") }?.split(separator: "=").last?
            .trimmingCharacters(in: .whitespaces) ?? "") ?? TenantDefaults.deviceMTU
        // Sessions up.
        _ = await lab.reaches(from: dev.ns, n.ipv4, count: 1)

        // The hand-made pair, in the same namespaces: keys, port, peer, addresses, MTU, with wg and ip.
        func genkey() throws -> (String, String) {
            let k = try run("/usr/bin/env", ["wg", "genkey"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let p = try run("/usr/bin/env", ["wg", "pubkey"], input: k + "\n").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            return (k, p)
        }
        let (nk, np) = try genkey(), (dk, dp) = try genkey()
        let nodeHand = uniqueInterfaceName("hn"), devHand = uniqueInterfaceName("hd")
        let underlayNode = lab.underlay6(node.address) ?? node.address
        let nodeEndpoint = underlay6 ? "[\(underlayNode)]:51999" : "\(underlayNode):51999"
        for (ns, iface, key, port, peer, endpoint, addr4, addr6) in [
            (node.ns, nodeHand, nk, "51999", dp, "", "10.99.254.1", "fd99:254::1"),
            (dev.ns, devHand, dk, "51998", np, nodeEndpoint, "10.99.254.2", "fd99:254::2"),
        ] {
            try ns.startWireGuardGo(iface)
            let keyFile = NSTemporaryDirectory() + "\(iface).key"
            _ = FileManager.default.createFile(atPath: keyFile, contents: Data(key.utf8), attributes: [.posixPermissions: 0o600])
            let other4 = addr4 == "10.99.254.1" ? "10.99.254.2" : "10.99.254.1", other6 = addr6 == "fd99:254::1" ? "fd99:254::2" : "fd99:254::1"
            try await ns.exec(["wg", "set", iface, "private-key", keyFile, "listen-port", port, "peer", peer, "allowed-ips", "\(other4)/32,\(other6)/128"]
                        + (endpoint.isEmpty ? [] : ["endpoint", endpoint]))
            try await ns.exec(["ip", "addr", "add", "\(addr4)/24", "dev", iface])
            try await ns.exec(["ip", "-6", "addr", "add", "\(addr6)/64", "dev", iface, "nodad"])
            try await ns.exec(["ip", "link", "set", iface, "mtu", "\(deviceMTU)", "up"])
            try? FileManager.default.removeItem(atPath: keyFile)
        }
        _ = await lab.reaches(from: dev.ns, "10.99.254.1", count: 1)

        // The iperf3 server in the node's namespace. It takes one test at a time and may still be
        // closing the previous one (slowly, on a loaded machine): only that refusal is tried again,
        // for up to 10 s. iperf3 3.12 sometimes never finishes closing a test (after a reverse
        // test; it stopped a run on 2026-12-07 with the server busy for good): a server still busy
        // after 10 s is replaced by a new one on the next port, and the measurement starts over.
        let out = TestEnvironment.outputDir("bench-dp")
        var port = 5200
        func startServer() async throws {
            if let old = servers.last { await old.terminate() }
            port += 1
            servers.append(try ManagedProcess(name: "iperf3-\(port)-\(Nuid.short())", executable: TestEnvironment.which("ip"),
                                              arguments: ["netns", "exec", node.ns.name, "iperf3", "-s", "-p", "\(port)"], environment: [:], logDir: out))
            try await Task.sleep(for: .milliseconds(500))
        }
        try await startServer()

        func iperf(_ to: String, reverse: Bool) async throws -> Double {
            func client() async throws -> (status: Int32, output: String, stdout: String) {
                try await dev.ns.tryExec(["iperf3", "-c", to, "-p", "\(port)", "-t", "\(seconds)", "-O", "1", "-J"] + (reverse ? ["-R"] : []))
            }
            var r = try await client()
            var tries = 0, replaced = 0
            while r.status != 0, r.output.contains("the server is busy running a test") {
                tries += 1
                if tries == 40 {
                    guard replaced < 2 else { break }
                    replaced += 1
                    tries = 0
                    print("iperf3 server on port \(port) still busy after 10 s: replaced")
                    try await startServer()
                } else {
                    try await Task.sleep(for: .milliseconds(250))
                }
                r = try await client()
            }
            guard r.status == 0, let data = r.stdout.data(using: .utf8),
                  let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let end = json["end"] as? [String: Any], let recv = end["sum_received"] as? [String: Any],
                  let bps = recv["bits_per_second"] as? Double else {
                throw TestSetupError.failed("iperf3 to \(to) failed: \(r.output.suffix(500))")
            }
            return bps / 1e6
        }
        var results: [String: [Double]] = [:]
        let paths: [(String, String)] = [("mesh (API config)", n.ipv4), ("by hand (wg, same MTU)", "10.99.254.1"), ("underlay", underlayNode)]
        print("load average: \(loadAverage()); device MTU \(deviceMTU), node MTU 1420, underlay \(underlay6 ? "IPv6" : "IPv4"), \(seconds) s per run")
        for round in 0..<rounds {
            for reverse in [false, true] {
                // Rotate the order every round so no path always goes first.
                for k in 0..<paths.count {
                    let (name, to) = paths[(k + round) % paths.count]
                    let label = "\(name) \(reverse ? "node -> device" : "device -> node")"
                    results[label, default: []].append(try await iperf(to, reverse: reverse))
                }
            }
            // wg-quick's default MTU for the hand pair, once per round, both directions.
            for iface in [(node.ns, nodeHand), (dev.ns, devHand)] { try await iface.0.exec(["ip", "link", "set", iface.1, "mtu", "1420"]) }
            for reverse in [false, true] {
                results["by hand (wg, MTU 1420) \(reverse ? "node -> device" : "device -> node")", default: []]
                    .append(try await iperf("10.99.254.1", reverse: reverse))
            }
            for iface in [(node.ns, nodeHand), (dev.ns, devHand)] { try await iface.0.exec(["ip", "link", "set", iface.1, "mtu", "\(deviceMTU)"]) }
        }
        print("Mbit/s per run (iperf3 TCP, one stream):")
        for (label, xs) in results.sorted(by: { $0.key < $1.key }) {
            let s = xs.sorted()
            print(String(format: "  %-45@ %@   median %.0f", label as NSString, xs.map { String(format: "%.0f", $0) }.joined(separator: ", "), s[s.count / 2]))
        }
        for dir in ["device -> node", "node -> device"] {
            let mesh = results["mesh (API config) \(dir)"]!.sorted(), hand = results["by hand (wg, same MTU) \(dir)"]!.sorted()
            let under = results["underlay \(dir)"]!.sorted(), hand1420 = results["by hand (wg, MTU 1420) \(dir)"]!.sorted()
            print(String(format: "  %@: mesh / by hand %.3f (medians), mesh / by hand at MTU 1420 %.3f, mesh / underlay %.3f", dir,
                         mesh[mesh.count / 2] / hand[hand.count / 2], mesh[mesh.count / 2] / hand1420[hand1420.count / 2],
                         mesh[mesh.count / 2] / under[under.count / 2]))
        }
        print("load average: \(loadAverage())")
    } catch {
        for s in servers { await s.terminate() }
        try? await lab.stop()
        throw error
    }
    for s in servers { await s.terminate() }
    try await lab.stop()
}

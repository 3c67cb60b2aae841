import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import MeshTestSupport
import NodeApplierCore

// PolicyBench: access policies on the nodes (docs/policies.md, docs/benchmarks.md).
//
//   PolicyBench compile [--rules 1000] [--peers 10000] [--runs 5]
//       compile and apply time of the packet filter on one node: FilterPlan.compile, the script,
//       `nft -f` into a fresh network namespace (first install and replacement), a member change as
//       element updates and as a whole replacement, and reading the tracked flows. Needs root and nft.
//   PolicyBench propagation [--changes 100]
//       write -> every node's filter: 3 real nodes (NodeApplier, wireguard-go, nftables in namespaces),
//       the time from sending a rule change to the last node's filter holding it (the node records
//       when `nft -f` returned). Needs root, nats-server and PostgreSQL (scripts/infra.sh).
//   PolicyBench throughput [--rules 1000] [--seconds 5] [--runs 3]
//       iperf3 from one device to another through the hub, with no rule and with 1,000 rules (the
//       one that allows the test traffic last). Needs root, iperf3, nats-server and PostgreSQL.

func arg(_ name: String, _ fallback: Int) -> Int {
    let a = CommandLine.arguments
    if let i = a.firstIndex(of: "--\(name)"), i + 1 < a.count, let v = Int(a[i + 1]) { return v }
    return fallback
}

func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]
}

func report(_ name: String, _ samples: [Double], unit: String = "ms") {
    print(String(format: "%@: n=%d p50=%.2f %@ p99=%.2f %@ max=%.2f %@", name, samples.count, percentile(samples, 0.5), unit,
                 percentile(samples, 0.99), unit, samples.max() ?? .nan, unit))
}

func timed<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
    let start = ContinuousClock.now
    let v = try await body()
    return (v, ms(ContinuousClock.now - start))
}

let logger: Logger = {
    var l = Logger(label: "PolicyBench")
    l.logLevel = .warning
    return l
}()

// MARK: A large tenant

/// A tenant of `peers` members (a node per 500 devices, 20 devices per user, a tenth of the users
/// admins, four tags spread over the devices) and `rules` rules that name users, roles, types,
/// tags, single devices and nodes, with ports.
struct BigTenant {
    var settings = Mesh_V1_TenantSettings()
    var members: [Mesh_V1_Member] = []
    var users: [String] = []
    var policy = Mesh_V1_PolicySet()

    init(peers: Int, rules: Int) {
        var rng = SystemRandomNumberGenerator()
        settings.domain = "quazzar.mesh"
        settings.ipv4Prefix = "100.64.0.0/16"
        settings.ipv6Prefix = "fd00:1:2::/48"
        settings.meshEnabled = true
        let tags = ["web", "db", "ops", "lab", "build", "printers", "cameras", "kiosk"]
        let nodes = max(1, peers / 500)
        users = (0..<max(1, (peers - nodes) / 20)).map { _ in UUID().uuidString.lowercased() }
        for i in 0..<peers {
            var m = Mesh_V1_Member()
            m.id = UUID().uuidString.lowercased()
            m.active = true
            let host = i + 1 + (i < nodes ? 0 : 4095)
            m.ipv4 = "100.64.\(host / 256).\(host % 256)"
            m.ipv6 = "fd00:1:2::\(String(host, radix: 16))"
            m.slug = "m\(i)"
            if i < nodes {
                m.kind = .node
                m.tags = [tags[i % tags.count]]
            } else {
                m.kind = .device
                let u = (i - nodes) % users.count
                m.ownerUserID = users[u]
                m.ownerRole = u % 10 == 0 ? .admin : .owner
                m.deviceType = [Mesh_V1_DeviceType.iphone, .android, .laptop, .other][i % 4]
                m.tags = tags.filter { _ in Int.random(in: 0..<6, using: &rng) == 0 }
            }
            members.append(m)
        }
        let devices = members.filter { $0.kind == .device }, nodeMembers = members.filter { $0.kind == .node }
        policy.version = 1
        for i in 0..<rules {
            var r = Mesh_V1_PolicyRule()
            r.id = UUID().uuidString.lowercased()
            r.name = "rule \(i)"
            func selector(_ k: Int) -> Mesh_V1_PolicySelector {
                var s = Mesh_V1_PolicySelector()
                switch k % 6 {
                case 0: s.userID = users[Int.random(in: 0..<users.count, using: &rng)]
                case 1: s.tag = tags[Int.random(in: 0..<tags.count, using: &rng)]
                case 2: s.deviceID = devices[Int.random(in: 0..<devices.count, using: &rng)].id
                case 3: s.role = Bool.random(using: &rng) ? .admin : .owner
                case 4: s.deviceType = .laptop
                default: s.nodeID = nodeMembers[Int.random(in: 0..<nodeMembers.count, using: &rng)].id
                }
                return s
            }
            r.sources = [selector(i)]
            r.destinations = i % 7 == 0 ? [selector(i + 1), selector(i + 5)] : [selector(i + 1)]
            r.ports = [Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = UInt32(1000 + i % 5000); $0.last = $0.first }]
            if i % 3 == 0 { r.ports.append(Mesh_V1_PolicyPort.with { $0.protocol = .icmp }) }
            policy.rules.append(r)
        }
    }
}

// MARK: compile

func compile(rules: Int, peers: Int, runs: Int) async throws {
    let t = BigTenant(peers: peers, rules: rules)
    print("tenant: \(peers) members, \(rules) rules")
    let ns = try NetNamespace(prefix: "pb")
    defer { ns.destroy() }
    try await ns.exec(["ip", "link", "add", "wg-bench", "type", "veth", "peer", "name", "wg-bench-peer"])
    let filter = NFTablesFilter(prefix: ["ip", "netns", "exec", ns.name])
    var compileMs: [Double] = [], renderMs: [Double] = [], installMs: [Double] = [], replaceMs: [Double] = []
    var elementMs: [Double] = [], wholeMs: [Double] = [], flowsMs: [Double] = []
    var plan: FilterPlan?
    var size = 0
    for run in 0..<runs {
        let (p, c) = await timed { FilterPlan.compile(policy: t.policy, members: t.members, settings: t.settings, interface: "wg-bench") }
        compileMs.append(c)
        let (script, r) = await timed { p!.script() }
        renderMs.append(r)
        size = script.utf8.count
        if run == 0 {
            _ = try? await filter.apply(FilterPlan.removal(table: p!.table))
            installMs.append(try await timed { try await filter.apply(script) }.1)
        } else {
            replaceMs.append(try await timed { try await filter.apply(script) }.1)
        }
        plan = p
    }
    guard var plan else { return }
    print("filter: \(plan.sets.count) sets, \(plan.sets.values.reduce(0) { $0 + $1.elements.count }) set elements, \(plan.lines.count) rule lines, script \(size / 1024) KiB")
    report("compile (FilterPlan.compile, \(rules) rules over \(peers) members)", compileMs)
    report("render the nft script", renderMs)
    report("nft -f: first install", installMs)
    report("nft -f: replace the whole table", replaceMs)

    // A member change: a device gets a tag (sets it joins) and loses it again.
    for i in 0..<max(10, runs * 4) {
        let before = t.members[t.members.count - 1 - i]
        var after = before
        after.tags = before.tags.contains("web") ? before.tags.filter { $0 != "web" } : (before.tags + ["web"]).sorted()
        let changes = plan.update(before: before, after: after, settings: t.settings)
        elementMs.append(try await timed { try await filter.apply(plan.script(for: changes)) }.1)
        let whole = plan.script()
        wholeMs.append(try await timed { try await filter.apply(whole) }.1)
        _ = plan.update(before: after, after: before, settings: t.settings)
        try await filter.apply(plan.script())
    }
    report("member change as element updates (nft -f)", elementMs)
    report("member change as a whole replacement (nft -f)", wholeMs)
    let prefixes = [IPPrefix("100.64.0.0/16")!, IPPrefix("fd00:1:2::/48")!]
    for _ in 0..<max(5, runs) { flowsMs.append(try await timed { _ = try await filter.trackedFlows(from: prefixes) }.1) }
    report("read the tenant's tracked flows (conntrack -L, IPv4 + IPv6, idle)", flowsMs)
}

// MARK: propagation

func propagation(changes: Int) async throws {
    let lab = try await MeshLab.start("bench-policy", environment: ["MESH_LOG_LEVEL": "warning"])
    do {
        try await propagation(lab, changes: changes)
    } catch {
        // The benchmark's own error is the one to report; a failed stop would hide it.
        try? await lab.stop()
        throw error
    }
    try await lab.stop()
}

func propagation(_ lab: MeshLab, changes: Int) async throws {
    for n in ["alpha", "beta", "gamma"] { try await lab.addNode(n, environment: ["MESH_LOG_LEVEL": "warning"]) }
    try await lab.waitConverged()
    let clients = NodeClient(bus: lab.cp.bus, timeout: .seconds(2))
    let node = lab.nodes[0].node!
    var samples: [Double] = []
    var rule = Mesh_V1_PolicyRule()
    rule.name = "bench"
    rule.sources = [Mesh_V1_PolicySelector.with { $0.all = true }]
    rule.destinations = [Mesh_V1_PolicySelector.with { $0.nodeID = node.id }]
    var id = ""
    for i in 0..<changes {
        rule.ports = [Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = UInt32(1000 + i); $0.last = $0.first }]
        let sent = Date().unixMilliseconds
        let r: Mesh_V1_UpdatePolicyResponse
        if id.isEmpty {
            r = try await lab.cp.client.updatePolicy(caller: lab.admin, .add(rule))
            id = r.rule.id
            rule.id = id
        } else {
            r = try await lab.cp.client.updatePolicy(caller: lab.admin, .update(rule))
        }
        let version = r.policy.version
        var applied: [Int64] = []
        let deadline = ContinuousClock.now + .seconds(10)
        for n in lab.nodes {
            while ContinuousClock.now < deadline {
                if let s = try? await clients.state(nodeID: n.node!.id).policyStatus, s.version >= version, s.state == "enforced" {
                    applied.append(s.appliedAtMs)
                    break
                }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        guard applied.count == lab.nodes.count else { print("change \(i): not applied on every node within 10 s"); continue }
        samples.append(Double(applied.max()! - sent))
    }
    report("policy write -> filter in force on all 3 real nodes", samples)
}

// MARK: throughput

func throughput(rules: Int, seconds: Int, runs: Int) async throws {
    let lab = try await MeshLab.start("bench-iperf", environment: ["MESH_LOG_LEVEL": "warning"])
    do {
        try await throughput(lab, rules: rules, seconds: seconds, runs: runs)
    } catch {
        // The benchmark's own error is the one to report; a failed stop would hide it.
        try? await lab.stop()
        throw error
    }
    try await lab.stop()
}

func throughput(_ lab: MeshLab, rules: Int, seconds: Int, runs: Int) async throws {
    let hub = try await lab.addNode("hub", environment: ["MESH_LOG_LEVEL": "warning"])
    let a = try await lab.addDevice("sender")
    let b = try await lab.addDevice("receiver")
    try await lab.waitConverged()
    _ = await lab.reaches(from: a.ns, b.device.ipv4)
    let server = try ManagedProcess(name: "iperf3-\(Nuid.short())", executable: TestEnvironment.which("ip"),
                                    arguments: ["netns", "exec", b.ns.name, "iperf3", "-s", "-B", b.device.ipv4], logDir: lab.cp.logDir)
    try await Task.sleep(for: .milliseconds(500))
    func measure(_ what: String) async throws {
        var mbits: [Double] = []
        for _ in 0..<runs {
            let out = try await a.ns.exec(["iperf3", "-c", b.device.ipv4, "-t", String(seconds), "-J"])
            guard let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
                  let end = json["end"] as? [String: Any], let recv = end["sum_received"] as? [String: Any],
                  let bps = recv["bits_per_second"] as? Double else { throw BenchFailure("iperf3 gave no result: \(out.prefix(400))") }
            mbits.append(bps / 1e6)
        }
        print(String(format: "iperf3 through the hub, %@: %@ Mbit/s (mean %.0f)", what,
                     mbits.map { String(format: "%.0f", $0) }.joined(separator: ", "), mbits.reduce(0, +) / Double(mbits.count)))
    }
    try await measure("no rule")
    // 1,000 rules, none naming the two devices but the last.
    var all = (0..<(rules - 1)).map { i in
        Mesh_V1_PolicyRule.with {
            $0.name = "rule \(i)"
            $0.sources = [Mesh_V1_PolicySelector.with { $0.tag = "s\(i % 50)" }]
            $0.destinations = [Mesh_V1_PolicySelector.with { $0.tag = "d\(i % 40)" }, Mesh_V1_PolicySelector.with { $0.tag = "x\(i % 7)" }]
            $0.ports = [Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = UInt32(1000 + i); $0.last = $0.first }]
        }
    }
    all.append(Mesh_V1_PolicyRule.with {
        $0.name = "sender to receiver"
        $0.sources = [Mesh_V1_PolicySelector.with { $0.deviceID = a.device.id }]
        $0.destinations = [Mesh_V1_PolicySelector.with { $0.deviceID = b.device.id }]
        $0.ports = [Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = 5201; $0.last = 5201 }]
    })
    let r = try await lab.cp.client.updatePolicy(caller: lab.admin, .replace(Mesh_V1_PolicyRules.with { $0.rules = all }))
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
        if let s = try? await NodeClient(bus: lab.cp.bus).state(nodeID: hub.node!.id).policyStatus, s.version == r.policy.version, s.state == "enforced" { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    let lines = try await hub.ns.exec(["nft", "list", "chain", "inet", FilterPlan.tableName(interface: hub.interface), "mesh"]).split(separator: "\n").count
    print("hub filter: \(r.policy.rules.count) rules, \(lines) lines in its chain")
    try await measure("\(r.policy.rules.count) rules")
    await server.terminate()
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

let mode = CommandLine.arguments.dropFirst().first ?? "compile"
switch mode {
case "compile": try await compile(rules: arg("rules", 1000), peers: arg("peers", 10_000), runs: arg("runs", 5))
case "propagation": try await propagation(changes: arg("changes", 100))
case "throughput": try await throughput(rules: arg("rules", 1000), seconds: arg("seconds", 5), runs: arg("runs", 3))
default:
    print("usage: PolicyBench compile|propagation|throughput [options]")
    exit(2)
}

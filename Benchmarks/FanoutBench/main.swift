import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import MeshWireGuard
import NodeApplierCore

// FanoutBench: how long a peer change takes to reach every node, what it costs FanoutSvc, and how
// long a device takes to show online after its first handshake. Uses the real service executables
// (release build: MESH_BIN_DIR), a real nats-server and PostgreSQL (MESH_NATS_URL/MESH_DATABASE_URL
// from scripts/infra.sh), and either real nodes (NodeApplier + wireguard-go in network namespaces,
// needs root) or simulated nodes (NodeAgent on an in-memory WireGuard backend, real bus and sync).
//
//   FanoutBench sim [--nodes 1000] [--changes 200]
//   FanoutBench real [--changes 100]
//   FanoutBench cpu [--sizes 100,10000] [--changes 300]
//   FanoutBench online [--devices 20]
//   FanoutBench node [--devices 50000] [--changes 100] [--restart-changes 20]   (Node.swift)
//   FanoutBench sync [--nodes 10000] [--devices 50000] [--agents 40]                (Sync.swift, no services)

func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]
}

func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

func report(_ name: String, _ samples: [Double], unit: String = "ms") {
    print(String(format: "%@: n=%d p50=%.2f %@ p99=%.2f %@ max=%.2f %@", name, samples.count, percentile(samples, 0.5), unit,
                 percentile(samples, 0.99), unit, samples.max() ?? .nan, unit))
}

func arg(_ name: String, _ fallback: Int) -> Int {
    let a = CommandLine.arguments
    if let i = a.firstIndex(of: "--\(name)"), i + 1 < a.count, let v = Int(a[i + 1]) { return v }
    return fallback
}

func argList(_ name: String, _ fallback: [Int]) -> [Int] {
    let a = CommandLine.arguments
    if let i = a.firstIndex(of: "--\(name)"), i + 1 < a.count { return a[i + 1].split(separator: ",").compactMap { Int($0) } }
    return fallback
}

let logger: Logger = {
    var l = Logger(label: "FanoutBench")
    l.logLevel = .warning
    return l
}()

/// Simulated nodes: each a NodeAgent with its own in-memory interface, subscribed to the tenant's
/// stream like a real node, spread over a few bus connections.
func simulated(nodes count: Int, changes: Int) async throws {
    let cp = try await ControlPlane.start("bench-sim", fanout: 1, environment: ["MESH_RATE_LIMIT": "0", "MESH_LOG_LEVEL": "warning"])
    let t = try await cp.tenant(.enterprise)
    let admin = try await cp.user(t, .admin)
    let token = try await cp.client.createEnrollmentToken(caller: admin, maxUses: UInt32(count))
    print("registering \(count) simulated nodes...")
    let connections = try await (0..<max(1, count / 100)).asyncMap { i in try await TestEnvironment.connectBus("sim-\(i)", url: cp.nats.url) }
    var agents: [NodeAgent] = []
    var tasks: [Task<Void, Never>] = []
    var subs: [BusSubscription] = []
    for i in 0..<count {
        let keys = WireGuardKeyPair.generate()
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = "sim-\(i)"
        r.publicKey = keys.publicKey
        r.endpoint = "192.0.2.\(i % 250 + 1):\(20000 + i)"
        r.listenPort = UInt32(20000 + i)
        let reg = try await cp.client.registerNode(r)
        let identity = NodeIdentity(registration: reg)
        let bus = connections[i % connections.count]
        let fanout = FanoutClient(bus: bus)
        let agent = NodeAgent(identity: identity, interface: "sim\(i)", backend: InMemoryWireGuard(devices: ["sim\(i)"]), logger: logger) { () async throws(MeshError) in
            try await fanout.fullView(tenantID: identity.tenantID, nodeID: identity.nodeID)
        }
        agents.append(agent)
        tasks.append(Task { await agent.run() })
        let sub = try bus.subscribe(MeshSubjects.peersUpdated(tenant: t.id))
        subs.append(sub)
        tasks.append(Task {
            for await m in sub { if let u = try? Mesh_V1_PeersUpdated(serializedBytes: m.payload) { agent.submit(u) } }
        })
    }
    for c in connections { try await c.flush() }
    for a in agents { _ = try await a.refresh(reason: "start") }
    print("all \(count) nodes synced at revision \(agents[0].revision)")
    var toAll: [Double] = [], toFirst: [Double] = []
    for i in 0..<changes {
        let d = try await cp.client.createDevice(caller: admin, label: "bench \(i)", type: .other)
        let replied = ContinuousClock.now
        let target = try await FanoutClient(bus: cp.bus).revision(tenantID: t.id)
        var first: Duration?
        var pending = Set(agents.indices)
        while !pending.isEmpty {
            pending = pending.filter { agents[$0].revision < target }
            if first == nil && pending.count < agents.count { first = ContinuousClock.now - replied }
            if !pending.isEmpty { try await Task.sleep(for: .microseconds(200)) }
        }
        toAll.append(ms(ContinuousClock.now - replied))
        toFirst.append(ms(first ?? .zero))
        _ = d
    }
    report("provision reply -> first of \(count) simulated nodes", toFirst)
    report("provision reply -> all \(count) simulated nodes", toAll)
    for task in tasks { task.cancel() }
    for a in agents { a.finish() }
    for s in subs { s.unsubscribe() }
    for c in connections { await c.close() }
    try await cp.stop()
}

/// Three real nodes: the peer is present (read from each node's wireguard-go over UAPI) on all.
func real(changes: Int) async throws {
    let lab = try await MeshLab.start("bench-real", environment: ["MESH_LOG_LEVEL": "warning"])
    for n in ["alpha", "beta", "gamma"] { try await lab.addNode(n, environment: ["MESH_LOG_LEVEL": "warning"]) }
    try await lab.waitConverged()
    let uapi = UAPIBackend(logger: logger)
    var samples: [Double] = []
    for i in 0..<changes {
        let d = try await lab.cp.client.createDevice(caller: lab.admin, label: "bench \(i)", type: .other).device
        let replied = ContinuousClock.now
        var pending = Set(lab.nodes.map(\.interface))
        while !pending.isEmpty {
            for iface in pending {
                if let dev = try? await uapi.device(named: iface), dev.peers.contains(where: { $0.publicKey.base64 == d.publicKey }) {
                    pending.remove(iface)
                }
            }
            if ContinuousClock.now - replied > .seconds(10) { print("timeout waiting for \(pending)"); break }
        }
        samples.append(ms(ContinuousClock.now - replied))
    }
    report("provision reply -> peer present on all 3 real nodes", samples)

    // Re-issue: the old key must leave every node (a lost phone's config stops working).
    var gone: [Double] = []
    let devices = try await lab.cp.client.listDevices(caller: lab.admin)
    for i in 0..<min(changes, devices.count) {
        let old = devices[i].publicKey
        let r = try await lab.cp.client.reissueDevice(caller: lab.admin, deviceID: devices[i].id)
        let replied = ContinuousClock.now
        var pending = Set(lab.nodes.map(\.interface))
        while !pending.isEmpty {
            for iface in pending {
                if let dev = try? await uapi.device(named: iface), !dev.peers.contains(where: { $0.publicKey.base64 == old }),
                   dev.peers.contains(where: { $0.publicKey.base64 == r.device.publicKey }) {
                    pending.remove(iface)
                }
            }
            if ContinuousClock.now - replied > .seconds(10) { print("timeout waiting for \(pending)"); break }
        }
        gone.append(ms(ContinuousClock.now - replied))
    }
    report("re-issue reply -> old key gone and new key present on all 3 real nodes", gone)
    try await lab.stop()
}

/// FanoutSvc CPU per change at several tenant sizes (utime+stime of the process, from /proc).
func cpu(sizes: [Int], changes: Int) async throws {
    for size in sizes {
        let cp = try await ControlPlane.start("bench-cpu", fanout: 1, environment: ["MESH_RATE_LIMIT": "0", "MESH_LOG_LEVEL": "warning"])
        let t = try await cp.tenant(.enterprise)
        let admin = try await cp.user(t, .admin)
        _ = try await cp.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        print("filling the tenant with \(size) devices through ProvisionSvc...")
        try await (0..<16).concurrentForEach { w in
            for i in stride(from: w, to: size, by: 16) { _ = try await cp.client.createDevice(caller: admin, label: "fill \(i)", type: .other) }
        }
        // Let FanoutSvc publish the fill, then measure a quiet baseline and the changes.
        let fan = FanoutClient(bus: cp.bus)
        let sub = try cp.bus.subscribe(MeshSubjects.peersUpdated(tenant: t.id))
        var target = try await fan.revision(tenantID: t.id)
        try await Task.sleep(for: .seconds(3))
        let pid = cp.processes.last!.pid
        let before = cpuTicks(pid)
        var devices: [Mesh_V1_Device] = []
        for i in 0..<changes { devices.append(try await cp.client.createDevice(caller: admin, label: "measure \(i)", type: .other).device) }
        target += UInt64(changes)
        for await m in sub {
            if let u = try? Mesh_V1_PeersUpdated(serializedBytes: m.payload), u.revision >= target { break }
        }
        let after = cpuTicks(pid)
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        let perChange = Double(after - before) / hz / Double(changes) * 1e6
        print(String(format: "FanoutSvc CPU per change, tenant of %d devices: %.0f µs (%d changes, %.2f s CPU)", size, perChange, changes,
                     Double(after - before) / hz))
        sub.unsubscribe()
        try await cp.stop()
    }
}

func cpuTicks(_ pid: Int32) -> Int {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
}

/// Handshake -> online: bring devices up one by one and compare the node's handshake time with the
/// moment the device list first says online.
func online(devices count: Int) async throws {
    let lab = try await MeshLab.start("bench-online", environment: ["MESH_LOG_LEVEL": ProcessInfo.processInfo.environment["FANOUTBENCH_CP_LOG_LEVEL"] ?? "warning"])
    let node = try await lab.addNode("alpha", environment: ["MESH_LOG_LEVEL": ProcessInfo.processInfo.environment["FANOUTBENCH_NODE_LOG_LEVEL"] ?? "warning"])
    let uapi = UAPIBackend(logger: logger)
    var samples: [Double] = []
    for i in 0..<count {
        let d = try await lab.addDevice("phone \(i)", type: .iphone)
        // The device's keepalive handshakes right away; find when the node saw it.
        var handshake: Date?
        let deadline = Date().addingTimeInterval(15)
        while handshake == nil && Date() < deadline {
            if let dev = try? await uapi.device(named: node.interface),
               let p = dev.peers.first(where: { $0.publicKey.base64 == d.device.publicKey }), !p.lastHandshake.isNever {
                handshake = Date(timeIntervalSince1970: Double(p.lastHandshake.seconds) + Double(p.lastHandshake.nanoseconds) / 1e9)
            } else {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        guard let handshake else { print("no handshake for device \(i)"); continue }
        let onlineDeadline = handshake.addingTimeInterval(10)
        var seen = false
        while Date() < onlineDeadline {
            let list = try await lab.cp.client.listDevices(caller: lab.admin)
            if list.first(where: { $0.id == d.device.id })?.online == true {
                samples.append(Date().timeIntervalSince(handshake) * 1000)
                seen = true
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        if !seen {
            let d2 = try await lab.cp.client.listDevices(caller: lab.admin).first(where: { $0.id == d.device.id })
            print("device \(i) not online 10 s after its handshake: last_handshake_at_ms=\(d2?.lastHandshakeAtMs ?? -1), handshake at \(handshake)")
        }
    }
    report("first handshake -> online in the device list", samples)
    try await lab.stop()
}

extension Sequence where Element: Sendable {
    func asyncMap<T>(_ f: (Element) async throws -> T) async throws -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }

    func concurrentForEach(_ f: @escaping @Sendable (Element) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { g in
            for e in self { g.addTask { try await f(e) } }
            try await g.waitForAll()
        }
    }
}

let mode = CommandLine.arguments.dropFirst().first ?? "sim"
switch mode {
case "sim": try await simulated(nodes: arg("nodes", 1000), changes: arg("changes", 200))
case "real": try await real(changes: arg("changes", 100))
case "cpu": try await cpu(sizes: argList("sizes", [100, 10_000]), changes: arg("changes", 300))
case "online": try await online(devices: arg("devices", 20))
case "node": try await nodeAtScale(devices: arg("devices", 50_000), changes: arg("changes", 100), restartChanges: arg("restart-changes", 20))
case "maps": mapsBench(size: arg("size", 60_000))
case "sync": try await syncBench(nodes: arg("nodes", 10_000), devices: arg("devices", 50_000), agents: arg("agents", 40))
case "dataplane": try await dataplane(seconds: arg("seconds", 5), rounds: arg("rounds", 3), underlay6: arg("underlay6", 0) == 1)
case "scale":
    try await scale(nodes: arg("nodes", 10_000), devices: arg("devices", 50_000), workers: arg("workers", 4), changes: arg("changes", 50),
                    joins: arg("joins", 3), ingestSeconds: arg("ingest-seconds", 10), ingestTenants: arg("ingest-tenants", 50))
case "scale-worker":
    let file = CommandLine.arguments.firstIndex(of: "--file").map { CommandLine.arguments[$0 + 1] } ?? ""
    try await scaleWorker(index: arg("index", 0), of: arg("of", 1), file: file)
case "ingest":
    let cp = try await ControlPlane.start("bench-ingest", fanout: 1, environment: ["MESH_LOG_LEVEL": "warning"])
    try await ingestLoad(cp: cp, tenants: arg("tenants", 50), seconds: arg("seconds", 10), fanoutPid: cp.processes.last!.pid, label: "no nodes")
    try await cp.stop()
default:
    print("usage: FanoutBench sim|real|cpu|online|maps|sync|scale|ingest|dataplane|node [options]")
    exit(2)
}

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
import Synchronization

// `FanoutBench scale`: one tenant with many devices and many simulated nodes, spread over several
// worker processes (`FanoutBench scale-worker`, started by the coordinator). Every simulated node is
// a real NodeAgent on an in-memory interface with its own subscription to the tenant's subject on
// the real nats-server; the control plane is the real AllocatorSvc, ProvisionSvc and FanoutSvc.
//
//   FanoutBench scale [--nodes 10000] [--devices 50000] [--workers 4] [--changes 50] [--joins 3]
//                     [--ingest-seconds 10] [--ingest-tenants 50]
//
// Within a worker, the agents share one decoded view (fetched once, for real, through SyncFromCP:
// that fetch is the "node joins" figure) and start from one interface state (the peers a node that
// no device config lists holds), as nodes that restarted with their interfaces up: each agent still
// runs its own full sync against it (which applies only the difference) and applies every change
// itself. Propagation is timed from ProvisionSvc's reply to the moment the last agent of every worker
// has applied the change (CLOCK_MONOTONIC, one clock for all processes).

/// Nanoseconds on CLOCK_MONOTONIC (shared by every process on the machine).
func monoNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// What a worker tells the coordinator.
struct WorkerReport: Codable, Sendable {
    var worker: Int
    var kind: String            // "ready", "applied", "done"
    var agents: Int = 0
    var revision: UInt64 = 0
    var first: UInt64 = 0       // monoNanos of the first agent that applied `revision`
    var last: UInt64 = 0        // ... and of the last
    var joinMs: Double = 0      // the one real full SyncFromCP of the tenant
    var joinMembers: Int = 0
    var templateSyncMs: Double = 0
    var allSyncSeconds: Double = 0
    var rssKiB: Int = 0
    var rssViewKiB: Int = 0     // after the shared view was decoded, before any agent
    var syncApplied: Int = 0    // peers added + changed + removed by the other agents' full syncs
    var syncPeers: Int = 0      // peers those agents hold after their syncs
}

enum ScaleSubjects {
    static let reports = "bench.scale.reports"
    static let control = "bench.scale.control"
}

/// Counts, per revision, how many agents have reached it, and reports a revision once all have.
final class ApplyTracker: Sendable {
    struct State {
        var last: [Int: UInt64] = [:]
        var pending: [UInt64: (count: Int, first: UInt64, last: UInt64)] = [:]
    }
    let total: Int
    let state = Mutex(State())
    let report: @Sendable (UInt64, UInt64, UInt64) -> Void

    init(total: Int, report: @escaping @Sendable (UInt64, UInt64, UInt64) -> Void) {
        self.total = total
        self.report = report
    }

    func applied(agent: Int, revision: UInt64) {
        let now = monoNanos()
        let done = state.withLock { s -> [(UInt64, UInt64, UInt64)] in
            guard let prev = s.last[agent] else {
                s.last[agent] = revision  // the first sync: the baseline
                return []
            }
            guard revision > prev else { return [] }
            s.last[agent] = revision
            var out: [(UInt64, UInt64, UInt64)] = []
            for r in (prev + 1)...revision {
                var e = s.pending[r] ?? (0, now, now)
                e.count += 1
                e.last = now
                if e.count == total {
                    s.pending[r] = nil
                    out.append((r, e.first, e.last))
                } else {
                    s.pending[r] = e
                }
            }
            return out
        }
        for (r, f, l) in done { report(r, f, l) }
    }
}

// MARK: Worker

func scaleWorker(index: Int, of workers: Int, file: String) async throws {
    let natsURL = ProcessInfo.processInfo.environment["MESH_NATS_URL"] ?? ""
    let all = try readRegistrations(file)
    let mine = all.enumerated().filter { $0.offset % workers == index }.map { ($0.offset, $0.element) }
    guard let (templateIndex, templateReg) = mine.last else { return }
    let control = try await TestEnvironment.connectBus("scale-ctl-\(index)", url: natsURL)
    let perConnection = 250
    let connections = try await (0..<max(1, (mine.count + perConnection - 1) / perConnection)).asyncMap { i in
        try await TestEnvironment.connectBus("scale-\(index)-\(i)", url: natsURL)
    }
    let tenant = templateReg.node.tenantID
    @Sendable func send(_ r: WorkerReport) {
        if let bytes = try? JSONEncoder().encode(r) { try? control.publish(ScaleSubjects.reports, Array(bytes)) }
    }

    // A node joins: its full sync through SyncFromCP (every page and the catch-up), for real.
    let fan = FanoutClient(bus: connections[0], timeout: .seconds(60))
    let t0 = ContinuousClock.now
    let view = try await fan.fullView(tenantID: tenant, nodeID: templateReg.node.id)
    let joinMs = ms(ContinuousClock.now - t0)
    let rssView = residentKiB()

    // The template: the node with the highest index in this worker (no device config lists it) syncs
    // onto an empty interface; every other agent starts from a copy of that interface.
    let tracker = ApplyTracker(total: mine.count) { r, f, l in
        send(WorkerReport(worker: index, kind: "applied", revision: r, first: f, last: l))
    }
    let templateBackend = InMemoryWireGuard(devices: ["s\(templateIndex)"], recordCalls: false)
    var agents: [(Int, NodeAgent)] = []
    var tasks: [Task<Void, Never>] = []
    var subs: [BusSubscription] = []
    func makeAgent(_ i: Int, _ reg: Mesh_V1_RegisterNodeResponse, backend: InMemoryWireGuard, connection: BusConnection) throws -> NodeAgent {
        let identity = NodeIdentity(registration: reg)
        let fanout = FanoutClient(bus: connection, timeout: .seconds(60))
        let first = OnceFlag()
        let agent = NodeAgent(identity: identity, interface: "s\(i)", backend: backend, logger: logger) { () async throws(MeshError) in
            // The first sync reads the view this process fetched; any later one fetches its own.
            if first.take() { return view }
            return try await fanout.fullView(tenantID: identity.tenantID, nodeID: identity.nodeID)
        }
        agent.observeRevisions { r in tracker.applied(agent: i, revision: r) }
        let sub = try connection.subscribe(MeshSubjects.peersUpdated(tenant: identity.tenantID))
        subs.append(sub)
        tasks.append(Task { await agent.run() })
        tasks.append(Task {
            for await m in sub { agent.receive(subject: m.subject, payload: m.payload) }
        })
        return agent
    }
    let template = try makeAgent(templateIndex, templateReg, backend: templateBackend, connection: connections[0])
    let t1 = ContinuousClock.now
    _ = try await template.refresh(reason: "start")
    let templateSyncMs = ms(ContinuousClock.now - t1)
    agents.append((templateIndex, template))
    for (k, (i, reg)) in mine.dropLast().enumerated() {
        let backend = InMemoryWireGuard(sharing: templateBackend, device: "s\(templateIndex)", as: "s\(i)")
        agents.append((i, try makeAgent(i, reg, backend: backend, connection: connections[k % connections.count])))
    }
    for c in connections { try await c.flush(timeout: .seconds(30)) }
    let t2 = ContinuousClock.now
    let syncApplied = Tally(), syncPeers = Tally()
    try await agents.dropFirst().concurrentForEach(limit: 2) { (_, agent) in
        let r = try await agent.refresh(reason: "start")
        syncApplied.add(Int(r.added + r.changed + r.removed))
        syncPeers.add(agent.status().peers)
    }
    let allSync = ContinuousClock.now - t2
    send(WorkerReport(worker: index, kind: "ready", agents: agents.count, joinMs: joinMs, joinMembers: view.members.count,
                      templateSyncMs: templateSyncMs, allSyncSeconds: ms(allSync) / 1000, rssKiB: residentKiB(), rssViewKiB: rssView,
                      syncApplied: syncApplied.value, syncPeers: syncPeers.value))

    // Wait for the coordinator's "stop".
    let ctl = try control.subscribe(ScaleSubjects.control)
    try await control.flush()
    for await m in ctl where String(decoding: m.payload, as: UTF8.self) == "stop" { break }
    send(WorkerReport(worker: index, kind: "done", agents: agents.count, rssKiB: residentKiB()))
    try await control.flush()
    for t in tasks { t.cancel() }
    for (_, a) in agents { a.finish() }
    for s in subs { s.unsubscribe() }
    for c in connections { await c.close() }
    await control.close()
}

func writeRegistrations(_ regs: [Mesh_V1_RegisterNodeResponse], to path: String) throws {
    var out: [UInt8] = []
    for r in regs {
        let b: [UInt8] = try r.serializedBytes()
        var n = UInt32(b.count).bigEndian
        withUnsafeBytes(of: &n) { out += $0 }
        out += b
    }
    try Data(out).write(to: URL(fileURLWithPath: path))
}

func readRegistrations(_ path: String) throws -> [Mesh_V1_RegisterNodeResponse] {
    let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    var regs: [Mesh_V1_RegisterNodeResponse] = []
    var i = 0
    while i + 4 <= data.count {
        let n = Int(UInt32(data[i]) << 24 | UInt32(data[i + 1]) << 16 | UInt32(data[i + 2]) << 8 | UInt32(data[i + 3]))
        regs.append(try Mesh_V1_RegisterNodeResponse(serializedBytes: Array(data[(i + 4)..<(i + 4 + n)])))
        i += 4 + n
    }
    return regs
}

// MARK: Coordinator

func scale(nodes: Int, devices: Int, workers: Int, changes: Int, joins: Int, ingestSeconds: Int, ingestTenants: Int) async throws {
    let started = ContinuousClock.now
    func stamp(_ s: String) {
        print(String(format: "[%6.1f s, load %@] %@", ms(ContinuousClock.now - started) / 1000, loadAverage(), s))
    }
    let cp = try await ControlPlane.start("bench-scale", fanout: 1, environment: ["MESH_RATE_LIMIT": "0", "MESH_LOG_LEVEL": "warning"])
    let fanoutPid = cp.processes.last!.pid
    let provisionPid = cp.processes[1].pid
    let t = try await cp.tenant(.enterprise)
    let admin = try await cp.user(t, .admin)
    let token = try await cp.client.createEnrollmentToken(caller: admin, ttlSeconds: 86400, maxUses: UInt32(nodes))
    let client = cp.client
    @Sendable func register(_ i: Int) async throws -> Mesh_V1_RegisterNodeResponse {
        let keys = WireGuardKeyPair.generate()
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = "sim-\(i)"
        r.publicKey = keys.publicKey
        r.endpoint = "192.0.2.\(i % 250 + 1):\(20000 + i % 40000)"
        r.listenPort = UInt32(20000 + i % 40000)
        return try await client.registerNode(r)
    }
    // The nodes device configs list come first (hub and the next oldest), then the devices, then
    // the other nodes: the same tenant as registering them all first, without reading 10,000 node
    // rows for every device's config.
    let listed = min(nodes, TenantDefaults.configMaxNodes)
    var regs: [Mesh_V1_RegisterNodeResponse] = []
    for i in 0..<listed { regs.append(try await register(i)) }
    stamp("registered \(listed) nodes; FanoutSvc RSS \(residentKiB(pid: fanoutPid)) KiB")
    // FanoutSvc's CPU per change in a small tenant and, below, in the full one: device creations
    // through ProvisionSvc (16 in flight), CPU from /proc once FanoutSvc has published them all.
    let fanForCPU = FanoutClient(bus: cp.bus, timeout: .seconds(60))
    @Sendable func fanoutCPU(_ label: String, count: Int, from: Int) async throws {
        let before = cpuTicks(fanoutPid), provBefore = cpuTicks(provisionPid)
        let start = ContinuousClock.now
        try await (0..<16).concurrentForEach { w in
            for i in stride(from: w, to: count, by: 16) { _ = try await client.createDevice(caller: admin, label: "cpu \(from + i)", type: .other) }
        }
        let want = UInt64(try await cp.store.query("SELECT revision FROM provision.tenants WHERE id = $1", UUID(uuidString: t.id)!).first!
            .decode("revision", as: Int64.self))
        while try await fanForCPU.revision(tenantID: t.id) < want { try await Task.sleep(for: .milliseconds(5)) }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        let elapsed = ms(ContinuousClock.now - start) / 1000
        print(String(format: "CPU per change, %@: FanoutSvc %.0f µs, ProvisionSvc %.0f µs (%d device creations, %.0f/s)", label,
                     Double(cpuTicks(fanoutPid) - before) / hz / Double(count) * 1e6, Double(cpuTicks(provisionPid) - provBefore) / hz / Double(count) * 1e6,
                     count, Double(count) / elapsed))
    }
    let small = min(100, devices)
    try await (0..<16).concurrentForEach { w in
        for i in stride(from: w, to: small, by: 16) { _ = try await client.createDevice(caller: admin, label: "fill \(i)", type: .other) }
    }
    try await fanoutCPU("tenant of \(small)-\(small + 500) devices", count: 500, from: 0)
    let fillStart = ContinuousClock.now
    try await (0..<16).concurrentForEach { w in
        for i in stride(from: small + w, to: devices - 500, by: 16) { _ = try await client.createDevice(caller: admin, label: "fill \(i)", type: .other) }
    }
    stamp(String(format: "created %d devices (%.0f/s); FanoutSvc RSS %d KiB", devices,
                 Double(devices) / (ms(ContinuousClock.now - fillStart) / 1000), residentKiB(pid: fanoutPid)))
    let regStart = ContinuousClock.now
    let rest = try await (listed..<nodes).concurrentMap(workers: 16) { i in try await register(i) }
    regs += rest
    stamp(String(format: "registered %d more nodes (%.0f/s); FanoutSvc RSS %d KiB", rest.count,
                 Double(rest.count) / max(0.001, ms(ContinuousClock.now - regStart) / 1000), residentKiB(pid: fanoutPid)))

    // Wait until FanoutSvc has everything.
    let fan = FanoutClient(bus: cp.bus, timeout: .seconds(60))
    let tid = UUID(uuidString: t.id)!
    let want = UInt64(try await cp.store.query("SELECT revision FROM provision.tenants WHERE id = $1", tid).first!.decode("revision", as: Int64.self))
    while try await fan.revision(tenantID: t.id) < want { try await Task.sleep(for: .milliseconds(200)) }
    stamp("FanoutSvc at revision \(want)")
    try await fanoutCPU("tenant of \(devices)-\(devices + 500) devices and \(nodes) nodes (none subscribed yet)", count: 500, from: devices)

    // A node joins: SyncFromCP of the whole tenant, as the last node sees it.
    let joiner = regs.last!.node.id
    var joinTimes: [Double] = [], buildTimes: [Double] = [], peerCounts: [Int] = []
    for _ in 0..<joins {
        let s = ContinuousClock.now
        let v = try await fan.fullView(tenantID: t.id, nodeID: joiner)
        joinTimes.append(ms(ContinuousClock.now - s))
        let s2 = ContinuousClock.now
        let state = MeshState(viewer: joiner, revision: v.revision, settings: v.settings, table: v.table)
        let peers = state.peers()
        buildTimes.append(ms(ContinuousClock.now - s2))
        peerCounts.append(peers.count)
        if joinTimes.count == 1 { print("a node's view: \(v.members.count) members, \(peers.count) peers for a node no config lists") }
    }
    let hubView = try await fan.fullView(tenantID: t.id, nodeID: regs[0].node.id)
    let hubState = MeshState(viewer: regs[0].node.id, revision: hubView.revision, settings: hubView.settings, table: hubView.table)
    let hs = ContinuousClock.now
    let hubPeers = hubState.peers()
    let hubMs = ms(ContinuousClock.now - hs)
    report("join: SyncFromCP of the whole tenant (FanoutClient.fullView)", joinTimes)
    report("join: MeshState + PeerCatalog.peers for that node", buildTimes)
    print(String(format: "join: the hub's PeerCatalog.peers: %d peers in %.1f ms", hubPeers.count, hubMs))
    // FanoutSvc's memory after serving whole-tenant SyncFromCPs, before any node subscribes: what the
    // nodes' subscriptions add is then the difference to the figure after they all synced.
    stamp("FanoutSvc RSS after \(joins + 1) whole-tenant SyncFromCPs, no node subscribed: \(residentKiB(pid: fanoutPid)) KiB")

    // The simulated nodes.
    let file = NSTemporaryDirectory() + "scale-regs-\(getpid()).bin"
    try writeRegistrations(regs, to: file)
    defer { try? FileManager.default.removeItem(atPath: file) }
    let reports = try cp.bus.subscribe(ScaleSubjects.reports)
    try await cp.bus.flush()
    let collected = ReportBox()
    let reader = Task { for await m in reports { if let r = try? JSONDecoder().decode(WorkerReport.self, from: Data(m.payload)) { collected.add(r) } } }
    var procs: [Process] = []
    for w in 0..<workers {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        p.arguments = ["scale-worker", "--index", "\(w)", "--of", "\(workers)", "--file", file]
        var env = ProcessInfo.processInfo.environment
        env["MESH_NATS_URL"] = cp.nats.url
        p.environment = env
        try p.run()
        procs.append(p)
    }
    let pids = procs.map(\.processIdentifier)
    stamp("started \(workers) worker processes; waiting for \(nodes) agents to sync")
    while collected.reports.filter({ $0.kind == "ready" }).count < workers {
        if procs.contains(where: { !$0.isRunning }) { throw MeshError.internal("a worker exited early") }
        try await Task.sleep(for: .seconds(1))
    }
    let ready = collected.reports.filter { $0.kind == "ready" }.sorted { $0.worker < $1.worker }
    for r in ready {
        print(String(format: "worker %d: %d agents; its join (SyncFromCP of %d members) %.0f ms; template sync onto an empty interface %.0f ms; the other agents' syncs %.1f s; RSS %d MiB (view alone %d MiB)",
                     r.worker, r.agents, r.joinMembers, r.joinMs, r.templateSyncMs, r.allSyncSeconds, r.rssKiB / 1024, r.rssViewKiB / 1024))
    }
    let held = ready.map(\.syncPeers).reduce(0, +), changed = ready.map(\.syncApplied).reduce(0, +)
    print(String(format: "restart syncs: %d agents whose interfaces already held a node's peers synced %d peers in all and applied %d peer changes (%.2f per agent)",
                 ready.map { $0.agents - 1 }.reduce(0, +), held, changed, Double(changed) / Double(max(1, ready.map { $0.agents - 1 }.reduce(0, +)))))
    stamp("all \(nodes) agents synced; FanoutSvc RSS \(residentKiB(pid: fanoutPid)) KiB")

    // Propagation: a new device, then its deletion, on every agent.
    let stream = try cp.bus.subscribe(MeshSubjects.peersUpdated(tenant: t.id))
    try await cp.bus.flush()
    let revisions = RevisionBox()
    let watcher = Task {
        for await m in stream {
            guard let u = try? Mesh_V1_PeersUpdated(serializedBytes: m.payload) else { continue }
            switch u.change {
            case .upsert(let x): revisions.put(x.id + "+", u.revision)
            case .remove(let x): revisions.put(x.id + "-", u.revision)
            default: break
            }
        }
    }
    func waitApplied(_ key: String, replied: UInt64) async throws -> (first: Double, all: Double) {
        let deadline = ContinuousClock.now + .seconds(120)
        var revision: UInt64?
        while ContinuousClock.now < deadline {
            if revision == nil { revision = revisions.get(key) }
            if let revision {
                let got = collected.reports.filter { $0.kind == "applied" && $0.revision == revision }
                if Set(got.map(\.worker)).count == workers {
                    let first = got.map(\.first).min()!, last = got.map(\.last).max()!
                    return (Double(Int64(first) - Int64(replied)) / 1e6, Double(Int64(last) - Int64(replied)) / 1e6)
                }
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw MeshError.deadlineExceeded("change \(key) not applied everywhere in 120 s")
    }
    var addAll: [Double] = [], addFirst: [Double] = [], delAll: [Double] = [], delFirst: [Double] = []
    let cpuBefore = cpuTicks(fanoutPid), provBefore = cpuTicks(provisionPid)
    let workerCPUBefore = pids.map(cpuTicks).reduce(0, +)
    for i in 0..<changes {
        let d = try await client.createDevice(caller: admin, label: "measure \(i)", type: .other).device
        let a = try await waitApplied(d.id + "+", replied: monoNanos())
        addFirst.append(a.first)
        addAll.append(a.all)
        _ = try await client.deleteDevice(caller: admin, deviceID: d.id)
        let r = try await waitApplied(d.id + "-", replied: monoNanos())
        delFirst.append(r.first)
        delAll.append(r.all)
    }
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let fanCPU = Double(cpuTicks(fanoutPid) - cpuBefore) / hz
    let provCPU = Double(cpuTicks(provisionPid) - provBefore) / hz
    let workerCPU = Double(pids.map(cpuTicks).reduce(0, +) - workerCPUBefore) / hz
    report("new device: reply -> first of \(nodes) nodes", addFirst)
    report("new device: reply -> all \(nodes) nodes", addAll)
    report("deletion: reply -> first of \(nodes) nodes", delFirst)
    report("deletion: reply -> all \(nodes) nodes", delAll)
    print(String(format: "CPU per change (%d changes): FanoutSvc %.0f µs, ProvisionSvc %.0f µs, all %d agents %.1f ms (%.1f µs per agent)",
                 2 * changes, fanCPU / Double(2 * changes) * 1e6, provCPU / Double(2 * changes) * 1e6, nodes,
                 workerCPU / Double(2 * changes) * 1e3, workerCPU / Double(2 * changes) / Double(nodes) * 1e6))
    stamp("FanoutSvc RSS \(residentKiB(pid: fanoutPid)) KiB; workers RSS \(pids.map { residentKiB(pid: $0) / 1024 }) MiB")

    if ingestSeconds > 0 {
        try await ingestLoad(cp: cp, tenants: ingestTenants, seconds: ingestSeconds, fanoutPid: fanoutPid, label: "with \(nodes) nodes subscribed")
        try await renameLoad(cp: cp, tenants: min(ingestTenants, 20), seconds: ingestSeconds, fanoutPid: fanoutPid, provisionPid: provisionPid)
    }

    try cp.bus.publish(ScaleSubjects.control, Array("stop".utf8))
    try await cp.bus.flush()
    let deadline = ContinuousClock.now + .seconds(60)
    while procs.contains(where: \.isRunning), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(200)) }
    for r in collected.reports.filter({ $0.kind == "done" }).sorted(by: { $0.worker < $1.worker }) {
        print("worker \(r.worker): \(r.agents) agents, RSS at the end \(r.rssKiB / 1024) MiB")
    }
    for p in procs where p.isRunning { p.terminate() }
    watcher.cancel()
    reader.cancel()
    stream.unsubscribe()
    reports.unsubscribe()
    try await cp.stop()
}

final class OnceFlag: Sendable {
    let state = Mutex(true)
    /// True the first time only.
    func take() -> Bool { state.withLock { f in defer { f = false }; return f } }
}

final class Tally: Sendable {
    let state = Mutex(0)
    func add(_ n: Int) { state.withLock { $0 += n } }
    var value: Int { state.withLock { $0 } }
}

final class ReportBox: Sendable {
    let state = Mutex<[WorkerReport]>([])
    func add(_ r: WorkerReport) { state.withLock { $0.append(r) } }
    var reports: [WorkerReport] { state.withLock { $0 } }
}

final class RevisionBox: Sendable {
    let state = Mutex<[String: UInt64]>([:])
    func put(_ k: String, _ r: UInt64) { state.withLock { $0[k] = r } }
    func get(_ k: String) -> UInt64? { state.withLock { $0[k] } }
}

func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
}

// MARK: Throughput

/// FanoutSvc alone: `tenants` synthetic tenants, each fed by its own sender (as the relays of many
/// ProvisionSvc replicas would) with batches of up to 64 changes, for `seconds`.
func ingestLoad(cp: ControlPlane, tenants: Int, seconds: Int, fanoutPid: Int32, label: String) async throws {
    let fan = FanoutClient(bus: cp.bus, timeout: .seconds(30))
    let count = Tally()
    let before = cpuTicks(fanoutPid)
    let start = ContinuousClock.now
    let end = start + .seconds(seconds)
    try await (0..<tenants).concurrentForEach { _ in
        let tenant = UUID().uuidString.lowercased()
        var revision: UInt64 = 0
        var members: [String] = []
        while ContinuousClock.now < end {
            var req = Mesh_V1_IngestRequest()
            req.tenantID = tenant
            for _ in 0..<64 {
                revision += 1
                var u = Mesh_V1_PeersUpdated()
                u.tenantID = tenant
                u.revision = revision
                if members.count > 50, revision % 3 == 0 {
                    var r = Mesh_V1_MemberRemoval()
                    r.id = members.removeFirst()
                    r.kind = .device
                    u.remove = r
                } else {
                    var m = Mesh_V1_Member()
                    m.id = UUID().uuidString.lowercased()
                    m.kind = .device
                    m.publicKey = WireGuardKeyPair.generate().publicKey
                    m.slug = "d\(revision)"
                    m.ipv4 = "100.64.\(revision / 256 % 256).\(revision % 256)"
                    m.ipv6 = "fd00::\(revision)"
                    m.active = true
                    members.append(m.id)
                    u.upsert = m
                }
                u.committedAtMs = Date().unixMilliseconds
                req.changes.append(u)
            }
            let resp = try await fan.ingest(req)
            guard resp.expectedRevision == 0 else { throw MeshError.internal("ingest refused: expected \(resp.expectedRevision)") }
            count.add(req.changes.count)
        }
    }
    let elapsed = ms(ContinuousClock.now - start) / 1000
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let cpu = Double(cpuTicks(fanoutPid) - before) / hz
    let n = count.value
    print(String(format: "ingest (%@): %d changes over %d tenants in %.1f s = %.0f changes/s; FanoutSvc CPU %.0f µs per change (%.1f cores)",
                 label, n, tenants, elapsed, Double(n) / elapsed, cpu / Double(max(n, 1)) * 1e6, cpu / elapsed))
}

/// The whole path: device renames in many tenants through ProvisionSvc (outbox, relay, ingest,
/// FanoutSvc), `seconds` long, 4 clients per tenant.
func renameLoad(cp: ControlPlane, tenants: Int, seconds: Int, fanoutPid: Int32, provisionPid: Int32) async throws {
    var setups: [(Mesh_V1_Caller, [String], Mesh_V1_Tenant)] = []
    for _ in 0..<tenants {
        let t = try await cp.tenant(.enterprise)
        let admin = try await cp.user(t, .admin)
        _ = try await cp.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        var ids: [String] = []
        for i in 0..<4 { ids.append(try await cp.client.createDevice(caller: admin, label: "r\(i)", type: .other).device.id) }
        setups.append((admin, ids, t))
    }
    try await Task.sleep(for: .seconds(2))
    let count = Tally()
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let fanBefore = cpuTicks(fanoutPid), provBefore = cpuTicks(provisionPid)
    let start = ContinuousClock.now
    let end = start + .seconds(seconds)
    let client = cp.client
    try await setups.flatMap { s in s.1.map { (s.0, $0) } }.concurrentForEach { (admin, id) in
        var i = 0
        while ContinuousClock.now < end {
            i += 1
            _ = try await client.renameDevice(caller: admin, deviceID: id, label: "r\(id.prefix(6))-\(i)")
            count.add(1)
        }
    }
    let elapsed = ms(ContinuousClock.now - start) / 1000
    // Everything renamed must reach FanoutSvc: wait for the tenants' revisions.
    let fan = FanoutClient(bus: cp.bus)
    let drained = ContinuousClock.now
    for (_, _, t) in setups {
        let want = UInt64(try await cp.store.query("SELECT revision FROM provision.tenants WHERE id = $1", UUID(uuidString: t.id)!).first!
            .decode("revision", as: Int64.self))
        while try await fan.revision(tenantID: t.id) < want { try await Task.sleep(for: .milliseconds(5)) }
    }
    let n = count.value
    let fanCPU = Double(cpuTicks(fanoutPid) - fanBefore) / hz, provCPU = Double(cpuTicks(provisionPid) - provBefore) / hz
    print(String(format: "renames through ProvisionSvc (%d tenants, %d clients): %d changes in %.1f s = %.0f changes/s (FanoutSvc caught up %.0f ms after the last reply); CPU per change: ProvisionSvc %.0f µs, FanoutSvc %.0f µs",
                 tenants, tenants * 4, n, elapsed, Double(n) / elapsed, ms(ContinuousClock.now - drained), provCPU / Double(max(n, 1)) * 1e6,
                 fanCPU / Double(max(n, 1)) * 1e6))
}

extension Sequence where Element: Sendable {
    func concurrentMap<T: Sendable>(workers: Int, _ f: @escaping @Sendable (Element) async throws -> T) async throws -> [T] {
        let items = Array(self)
        return try await withThrowingTaskGroup(of: (Int, T).self) { g in
            var out = [T?](repeating: nil, count: items.count)
            var next = 0
            for _ in 0..<Swift.min(workers, items.count) {
                let i = next, e = items[i]
                g.addTask { (i, try await f(e)) }
                next += 1
            }
            while let (i, v) = try await g.next() {
                out[i] = v
                if next < items.count {
                    let j = next, e = items[j]
                    g.addTask { (j, try await f(e)) }
                    next += 1
                }
            }
            return out.map { $0! }
        }
    }

    func concurrentForEach(limit: Int, _ f: @escaping @Sendable (Element) async throws -> Void) async throws {
        _ = try await concurrentMap(workers: limit) { try await f($0) }
    }
}

// Device provisioning through NATS against the real ProvisionSvc and AllocatorSvc executables:
// allocation, keygen, config, QR and the database commit, for an Enterprise tenant (no cap) and a
// user exempt from the rate limit by configuration. Prints throughput, p50/p99, and where the
// time goes. See docs/benchmarks.md ("ProvisionSvc").
//
//   ProvisionBench [--concurrency 16] [--count 3000] [--sequential 300] [--levels 1,4] [--replicas 1] [--nodes 2]
//   ProvisionBench register-node --token TOKEN   registers one node (no interface) against the running
//                                                 services and prints its id (scripts/bench-gateway.sh)
//
// Each level in --levels runs --sequential creations (1) or --count creations (more); the goal
// level --concurrency always runs last.
//
// Needs MESH_NATS_URL, MESH_DATABASE_URL (admin: a scratch database is created and dropped), and
// MESH_BIN_DIR pointing at release builds of AllocatorSvc, ProvisionSvc and FanoutSvc.
import BenchSupport
import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshKeys
import MeshNet
import MeshProto
import MeshQR
import MeshStore
import MeshTestSupport
import ProvisionCore

let options = Options()
let concurrency = options.int("concurrency", 16)
let count = options.int("count", 3_000)
let sequentialCount = options.int("sequential", 300)
let levels = options.ints("levels", [1, 4]).filter { $0 != concurrency } + [concurrency]
let replicas = options.int("replicas", 1)
let nodeCount = options.int("nodes", 2)
// --fanout 0 leaves FanoutSvc out, as this benchmark ran before 2026-12-06 (for side-by-side runs
// with older trees): the relay's deliveries then fail and wait for the sweep.
let withFanout = options.int("fanout", 1) != 0
let natsURL = try requireEnv("MESH_NATS_URL")
_ = try requireEnv("MESH_BIN_DIR")

var logger = Logger(label: "bench.provision")
logger.logLevel = .warning

let bus = try await BusConnection.connect(BusConfiguration(servers: [natsURL], name: "bench-provision"), logger: logger)
try await bus.waitUntilConnected()
if CommandLine.arguments.dropFirst().first == "register-node" {
    var r = Mesh_V1_RegisterNodeRequest()
    r.enrollmentToken = options.string("token", "")
    r.name = options.string("name", "bench node")
    r.publicKey = WireGuardKeyPair.generate().publicKey
    r.endpoint = "198.51.100.10:51820"
    r.listenPort = 51820
    print(try await ProvisionClient(bus: bus, timeout: .seconds(30)).registerNode(r).node.id)
    await bus.close()
    exit(0)
}
let logDir = URL(fileURLWithPath: ProcessInfo.processInfo.environment["MESH_BENCH_OUTPUT"] ?? NSTemporaryDirectory())
    .appendingPathComponent("provision-bench")
try FileManager.default.createDirectory(at: logDir, withIntermediateDirectories: true)

let db = try await TestDatabase.create(prefix: "bench_prov")
let adminID = UUID(), userID = UUID()
let allocatorProcs = try await ServiceProcesses.start("AllocatorSvc", natsURL: natsURL, databaseURL: db.url, environment: [:],
                                                      bus: bus, logDir: logDir)
// FanoutSvc takes every committed change from ProvisionSvc's outbox relay, as in the running system:
// without it the relay's deliveries fail and every change is retried on the next one.
let fanoutProcs = !withFanout ? [] : try await ServiceProcesses.start("FanoutSvc", natsURL: natsURL, databaseURL: db.url, environment: [:],
                                                                     bus: bus, logDir: logDir)
// ProvisionSvc replicas, each with its own /metrics port for the phase breakdown.
let metricsPorts = try (0..<replicas).map { _ in try freeLoopbackPort() }
var provisionProcs: [ManagedProcess] = []
let provisionPath = TestEnvironment.binDir.appendingPathComponent("ProvisionSvc").path
for i in 0..<replicas {
    let port = metricsPorts[i]
    provisionProcs.append(try ManagedProcess(name: "ProvisionSvc-\(i)", executable: provisionPath, environment: [
        "MESH_NATS_URL": natsURL, "MESH_DATABASE_URL": db.url, "MESH_INSTANCE": "provisionsvc-\(i)",
        "MESH_RATE_LIMIT_EXEMPT": userID.lowercased, "MESH_METRICS_ADDRESS": "127.0.0.1:\(port)",
        "MESH_LOG_LEVEL": ProcessInfo.processInfo.environment["MESH_LOG_LEVEL"] ?? "info",
    ], logDir: logDir))
}
try await ServiceProcesses.waitForInstances(bus: bus, service: MeshServiceName.provision,
                                            instances: Set((0..<replicas).map { "provisionsvc-\($0)" }), timeout: .seconds(60),
                                            processes: provisionProcs)

let client = ProvisionClient(bus: bus, timeout: .seconds(30))
var tr = Mesh_V1_CreateTenantRequest()
tr.name = "bench tenant"
tr.plan = .enterprise
let tenant = try await client.createTenant(tr)
func makeUser(_ id: UUID, _ role: Mesh_V1_Role) async throws -> Mesh_V1_Caller {
    var r = Mesh_V1_CreateUserRequest()
    r.id = id.lowercased
    r.tenantID = tenant.id
    r.name = "bench \(role.key)"
    r.role = role
    _ = try await client.createUser(r)
    var c = Mesh_V1_Caller()
    c.tenantID = tenant.id
    c.userID = id.lowercased
    c.role = role
    return c
}
let admin = try await makeUser(adminID, .admin)
let user = try await makeUser(userID, .owner)
for i in 0..<nodeCount {
    let token = try await client.createEnrollmentToken(caller: admin)
    var r = Mesh_V1_RegisterNodeRequest()
    r.enrollmentToken = token.token
    r.name = "node \(i)"
    r.publicKey = WireGuardKeyPair.generate().publicKey
    r.endpoint = "198.51.100.\(10 + i):51820"
    r.listenPort = 51820
    _ = try await client.registerNode(r)
}

func createDevice(_ i: Int) async throws -> Mesh_V1_CreateDeviceResponse {
    // Distinct labels, as real devices have ("bench 17" → bench-17.quazzar.mesh).
    try await client.createDevice(caller: user, label: "bench \(i)", type: .iphone)
}

func scrape() throws -> [String: (sum: Double, count: Double)] {
    var total: [String: (sum: Double, count: Double)] = [:]
    for port in metricsPorts {
        let text = try runProgram("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"])
        for (k, v) in histogramSums(text, metric: "mesh_provision_device_phase_seconds", label: "phase") {
            let e = total[k] ?? (0, 0)
            total[k] = (e.sum + v.sum, e.count + v.count)
        }
        for (k, v) in histogramSums(text, metric: "mesh_bus_request_duration_seconds", label: "endpoint") where k == "device-create" {
            let e = total["handler"] ?? (0, 0)
            total["handler"] = (e.sum + v.sum, e.count + v.count)
        }
    }
    return total
}

let phaseOrder = ["identify", "precheck", "keygen", "allocate", "commit", "config", "qr"]
func printBreakdown(_ before: [String: (sum: Double, count: Double)], _ after: [String: (sum: Double, count: Double)], clientMean: Double) {
    func mean(_ k: String) -> Double? {
        guard let a = after[k] else { return nil }
        let b = before[k] ?? (0, 0)
        let n = a.count - b.count
        return n > 0 ? (a.sum - b.sum) / n * 1e9 : nil
    }
    guard let handler = mean("handler") else { say("    (no phase metrics)"); return }
    var accounted = 0.0
    for k in phaseOrder {
        guard let m = mean(k) else { continue }
        accounted += m
        say("    \(pad(k, 34))\(pad(formatNanos(m), 11))\(String(format: "%5.1f%%", m / clientMean * 100))")
    }
    say("    \(pad("rest of the handler", 34))\(pad(formatNanos(handler - accounted), 11))\(String(format: "%5.1f%%", (handler - accounted) / clientMean * 100))")
    say("    \(pad("bus, queueing, encode/decode", 34))\(pad(formatNanos(clientMean - handler), 11))\(String(format: "%5.1f%%", (clientMean - handler) / clientMean * 100))")
    say("    \(pad("total (client-side mean)", 34))\(formatNanos(clientMean))")
}

say("provision: device creations through NATS, Enterprise tenant, rate limit off for the user by configuration,")
say("  \(replicas) ProvisionSvc + 1 AllocatorSvc + \(withFanout ? 1 : 0) FanoutSvc (release builds), \(nodeCount) nodes in each config, \(machineLine())")

// Warm-up: connections opened, statements prepared, code paths touched.
let warm = await closedLoop(concurrency: concurrency, total: 200) { i in _ = try await createDevice(1_000_000 + i) }
if warm.errors > 0 { throw BenchError("\(warm.errors) warm-up creations failed; see \(logDir.path)") }
let sampleResponse = try await createDevice(2_000_000)

var results: [(Int, LoadResult)] = []
var next = 0
for conc in levels {
    let total = conc == 1 ? sequentialCount : count
    let before = try scrape()
    let base = next
    let r = await closedLoop(concurrency: conc, total: total) { i in _ = try await createDevice(base + i) }
    next += total
    let after = try scrape()
    results.append((conc, r))
    say("\n  \(conc) concurrent: \(r.samples.count) devices in \(String(format: "%.2f", Double(r.elapsedNanos) / 1e9)) s = \(String(format: "%.0f", r.throughput)) devices/s; p50 \(millis(r.samples.p50)) ms, p99 \(millis(r.samples.p99)) ms, max \(millis(r.samples.max)) ms, errors \(r.errors)")
    say("  where the time goes (mean per device, measured inside ProvisionSvc by phase):")
    printBreakdown(before, after, clientMean: r.samples.mean)
}

// The same pieces measured alone in this process, one at a time.
say("\n  the parts alone (this process, sequential):")
let keygen = await closedLoop(concurrency: 1, total: 2_000) { _ in _ = WireGuardKeyPair.generate() }
say("    \(pad("X25519 keygen (swift-crypto)", 34))p50 \(pad(formatNanos(keygen.samples.p50), 11))p99 \(formatNanos(keygen.samples.p99))")
let config = sampleResponse.config
let qr = await closedLoop(concurrency: 1, total: 300) { _ in _ = try MeshQR.svg(for: config) }
say("    \(pad("MeshQR.svg (\(config.utf8.count)-byte config)", 34))p50 \(pad(formatNanos(qr.samples.p50), 11))p99 \(formatNanos(qr.samples.p99))")
let allocClient = AllocatorClient(bus: bus, timeout: .seconds(10))
let allocRTT = await closedLoop(concurrency: 1, total: 300) { _ in
    _ = try await allocClient.allocate(tenantID: tenant.id, ownerID: UUID().lowercased, kind: .device)
}
say("    \(pad("allocator request over NATS", 34))p50 \(pad(formatNanos(allocRTT.samples.p50), 11))p99 \(formatNanos(allocRTT.samples.p99))")

if let (_, r) = results.last {
    say("\n  goals at \(concurrency) concurrent: p50 ≤ 5 ms \(r.samples.p50 <= 5_000_000 ? "met" : "missed") (\(millis(r.samples.p50)) ms), p99 ≤ 20 ms \(r.samples.p99 <= 20_000_000 ? "met" : "missed") (\(millis(r.samples.p99)) ms), ≥ 300 devices/s \(r.throughput >= 300 ? "met" : "missed") (\(String(format: "%.0f", r.throughput)))")
}
for p in provisionProcs + allocatorProcs + fanoutProcs { await p.terminate() }
await bus.close()
await db.drop()

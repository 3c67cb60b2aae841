// Address allocations through NATS against the real AllocatorSvc executables (1 and 3 replicas),
// with 0, 30,000 and 65,000 addresses already used in one tenant's /16, plus pgbench's single-row
// INSERT rate on the same server in the same run. See docs/benchmarks.md ("AllocatorSvc").
//
//   AllocatorBench [--replicas 1,3] [--fills 0,30000,65000] [--concurrency 16] [--count 2000]
//                  [--batch 500] [--sequential 500] [--pgbench-seconds 10]
//
// Needs MESH_NATS_URL, MESH_DATABASE_URL (admin: a database per replica count is created and
// dropped), MESH_PG_BINDIR, and MESH_BIN_DIR pointing at release builds of AllocatorSvc.
import BenchSupport
import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport

let options = Options()
let replicaCounts = options.ints("replicas", [1, 3])
let fills = options.ints("fills", [0, 30_000, 65_000])
let concurrency = options.int("concurrency", 16)
let count = options.int("count", 2_000)
let batch = options.int("batch", 500)
let sequentialCount = options.int("sequential", 500)
let pgSeconds = options.int("pgbench-seconds", 10)
let natsURL = try requireEnv("MESH_NATS_URL")
let bindir = try requireEnv("MESH_PG_BINDIR")
_ = try requireEnv("MESH_BIN_DIR")

var logger = Logger(label: "bench.allocator")
logger.logLevel = .warning

let bus = try await BusConnection.connect(BusConfiguration(servers: [natsURL], name: "bench-allocator"), logger: logger)
try await bus.waitUntilConnected()
let client = AllocatorClient(bus: bus, timeout: .seconds(30))
let logDir = URL(fileURLWithPath: ProcessInfo.processInfo.environment["MESH_BENCH_OUTPUT"] ?? NSTemporaryDirectory())
    .appendingPathComponent("allocator-bench")
try FileManager.default.createDirectory(at: logDir, withIntermediateDirectories: true)

/// The tenant's layout, read back from tenant_prefixes.
struct Layout { var size: Int; var nodeBlock: Int
    var nodeCapacity: Int { nodeBlock - 1 }            // hosts 1 ..< nodeBlock
    var deviceCapacity: Int { size - 1 - nodeBlock }   // hosts nodeBlock ... size-2
}

/// Sets the tenant to exactly `nodes` node and `devices` device leases, the way the allocator's
/// bump pointers would have left them after that many allocations (hosts in order from the start
/// of each range).
func fill(_ store: Store, tenant: UUID, layout: Layout, nodes: Int, devices: Int) async throws {
    try await store.write { tx in
        try tx.execute("DELETE FROM free_hosts WHERE tenant_id = $1", tenant)
        try tx.execute("DELETE FROM leases WHERE tenant_id = $1", tenant)
        try tx.execute("""
            INSERT INTO leases (tenant_id, host, owner_id, kind)
            SELECT $1, h, gen_random_uuid(), 'node' FROM generate_series(1, $2::int) AS h
            """, tenant, nodes)
        try tx.execute("""
            INSERT INTO leases (tenant_id, host, owner_id, kind)
            SELECT $1, h, gen_random_uuid(), 'device' FROM generate_series($2::int, $3::int) AS h
            """, tenant, layout.nodeBlock, layout.nodeBlock + devices - 1)
        try tx.execute("UPDATE tenant_prefixes SET next_node_host = $2, next_device_host = $3 WHERE tenant_id = $1",
                       tenant, nodes + 1, layout.nodeBlock + devices)
    }
    // Statistics as autovacuum would have them for a table of this size. An empty table is left
    // never-analysed, as in a new deployment: analysed while empty, its statistics would make the
    // planner cache sequential-scan plans in AllocatorSvc's connections, which then scan the
    // growing table on every allocation until autovacuum's next ANALYZE (a minute away).
    if nodes + devices > 0 {
        for table in ["leases", "tenant_prefixes", "free_hosts"] { try await store.executeScript("VACUUM ANALYZE \(table)") }
    }
}

/// Drops the device leases made since the fill (host ≥ `pointer`) and rewinds the bump pointer.
func rewind(_ store: Store, tenant: UUID, pointer: Int) async throws {
    try await store.write { tx in
        try tx.execute("DELETE FROM leases WHERE tenant_id = $1 AND kind = 'device' AND host >= $2", tenant, pointer)
        try tx.execute("UPDATE tenant_prefixes SET next_device_host = $2 WHERE tenant_id = $1", tenant, pointer)
    }
}

/// `total` device allocations in batches of at most `batch`, rewinding after each, so every
/// allocation happens between `fill` and `fill + batch` used addresses.
func allocations(_ store: Store, tenant: UUID, pointer: Int, concurrency: Int, total: Int) async throws -> LoadResult {
    var samples: [UInt64] = []
    var elapsed: UInt64 = 0
    var errors = 0
    var done = 0
    let tenantID = tenant.lowercased
    while done < total {
        let n = min(batch, total - done)
        let r = await closedLoop(concurrency: concurrency, total: n) { _ in
            let resp = try await client.allocate(tenantID: tenantID, ownerID: UUID().lowercased, kind: .device)
            if resp.existing { throw BenchError("a fresh owner got an existing lease") }
        }
        samples += r.samples.sorted
        elapsed += r.elapsedNanos
        errors += r.errors
        done += n
        try await rewind(store, tenant: tenant, pointer: pointer)
    }
    return LoadResult(samples: Samples(samples), elapsedNanos: elapsed, errors: errors)
}

say("allocator: device allocations through NATS (AllocatorSvc release build), one tenant /16, \(machineLine())")
var worstP99: UInt64 = 0
var worstRatio = Double.infinity
for replicas in replicaCounts {
    let db = try await TestDatabase.create(prefix: "bench_alloc")
    let env = ["MESH_LOG_LEVEL": "warning"]
    let procs = try await ServiceProcesses.start("AllocatorSvc", count: replicas, natsURL: natsURL, databaseURL: db.url,
                                                 environment: env, bus: bus, logDir: logDir)
    do {
        let store = Store(StoreConfiguration(url: db.url, poolSize: 2, schema: "allocator"), logger: logger)
        let tenant = UUID()
        let prefixes = try await client.ensureTenant(tenant.lowercased)
        let row = try await store.query("SELECT v4_length, node_block FROM tenant_prefixes WHERE tenant_id = $1", tenant).first!
        let layout = Layout(size: 1 << (32 - (try row.decode("v4_length", as: Int.self))), nodeBlock: try row.decode("node_block"))
        say("\n  \(replicas) replica\(replicas == 1 ? "" : "s"), tenant \(prefixes.ipv4Prefix): \(layout.nodeCapacity) node + \(layout.deviceCapacity) device addresses")

        // pgbench's single-row INSERT on this server, same client count, same run.
        // In public: pgbench connects with the default search path, not AllocatorSvc's schema.
        try await store.executeScript("CREATE TABLE public.bench_rows (id bigserial PRIMARY KEY, k bigint NOT NULL, v text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        let pg = try pgbench(bindir: bindir, url: db.url, script: """
            \\set k random(1, 1000000000)
            INSERT INTO bench_rows (k, v) VALUES (:k, 'payload-0123456789abcdef');
            """, clients: concurrency, seconds: pgSeconds)
        say("  pgbench single-row INSERT, \(concurrency) clients: \(String(format: "%.0f", pg)) tps")

        // Warm up: every replica's connections opened and statements prepared.
        try await fill(store, tenant: tenant, layout: layout, nodes: 0, devices: 0)
        _ = try await allocations(store, tenant: tenant, pointer: layout.nodeBlock, concurrency: concurrency, total: 100 * replicas)

        var fillNotes: [String] = []
        say("  used      nodes+devices   conc  allocs  allocs/s   p50 ms   p99 ms   max ms   /pgbench  errors")
        for f in fills {
            // Nodes are about 1/16 of the used addresses; at 65,000 the node block must hold what the
            // device range cannot, and `batch` device addresses must stay free for the measurement.
            let nodes = min(layout.nodeCapacity, max(f / 16, f - (layout.deviceCapacity - batch)))
            let devices = f - nodes
            guard devices + batch <= layout.deviceCapacity, nodes <= layout.nodeCapacity else {
                say("  \(f): does not fit in the tenant prefix; skipped")
                continue
            }
            let t0 = monotonicNanos()
            try await fill(store, tenant: tenant, layout: layout, nodes: nodes, devices: devices)
            let fillTime = Double(monotonicNanos() - t0) / 1e9
            let pointer = layout.nodeBlock + devices
            for (conc, total) in [(1, sequentialCount), (concurrency, count)] {
                let r = try await allocations(store, tenant: tenant, pointer: pointer, concurrency: conc, total: total)
                let ratio = r.throughput / pg
                if conc == concurrency {
                    worstRatio = min(worstRatio, ratio)
                }
                worstP99 = max(worstP99, r.samples.p99)
                say("  \(pad(String(f), 10))\(pad("\(nodes)+\(devices)", 16))\(pad(String(conc), 6))\(pad(String(r.samples.count), 8))\(pad(String(format: "%.0f", r.throughput), 11))\(pad(millis(r.samples.p50), 9))\(pad(millis(r.samples.p99), 9))\(pad(millis(r.samples.max), 9))\(pad(String(format: "%.2f", ratio), 10))\(r.errors)")
            }
            fillNotes.append("\(f) used: \(nodes) node + \(devices) device leases written in \(String(format: "%.2f", fillTime)) s")
        }
        say("  (" + fillNotes.joined(separator: "; ") + ")")
        store.close()
    } catch {
        for p in procs { await p.terminate() }
        await db.drop()
        throw error
    }
    for p in procs { await p.terminate() }
    await db.drop()
}
say("\n  goal p99 ≤ 5 ms at every fill level: \(worstP99 <= 5_000_000 ? "met" : "missed") (worst p99 \(millis(worstP99)) ms)")
say("  goal throughput ≥ 50% of pgbench single-row INSERT (at \(concurrency) concurrent): \(worstRatio >= 0.5 ? "met" : "missed") (worst \(String(format: "%.2f", worstRatio)))")
await bus.close()

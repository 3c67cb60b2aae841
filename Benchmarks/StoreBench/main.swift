// Single-row INSERT transactions per second through MeshStore (`Store.write` with one INSERT)
// against pgbench running the same INSERT on the same server with the same number of clients.
// See docs/benchmarks.md ("Store").
//
//   StoreBench [--clients 1,8] [--seconds 5] [--rounds 3]
//
// The four figures of a round run one after the other; the goal is judged on the median ratio.
//
// Needs MESH_DATABASE_URL (an admin URL: a scratch database is created and dropped) and
// MESH_PG_BINDIR (pgbench). scripts/bench-store.sh starts PostgreSQL and runs this.
import BenchSupport
import Foundation
import Logging
import MeshStore
import MeshTestSupport

let options = Options()
let clientCounts = options.ints("clients", [1, 8])
let seconds = options.int("seconds", 5)
let rounds = options.int("rounds", 3)
let bindir = try requireEnv("MESH_PG_BINDIR")
_ = try requireEnv("MESH_DATABASE_URL")

var logger = Logger(label: "bench.store")
logger.logLevel = .warning

let db = try await TestDatabase.create(prefix: "bench_store")
let setup = Store(StoreConfiguration(url: db.url, poolSize: 1), logger: logger)
try await setup.executeScript("""
    CREATE TABLE bench_rows (id bigserial PRIMARY KEY, k bigint NOT NULL, v text NOT NULL, at timestamptz NOT NULL DEFAULT now());
    """)
let settings = try await setup.query("SELECT current_setting('fsync') AS f, current_setting('synchronous_commit') AS s, version() AS v").first!
let fsync: String = try settings.decode("f"), sync: String = try settings.decode("s")
setup.close()

// The same statement on both sides: one bigint parameter and a constant text.
let insertSQL: SQL = "INSERT INTO bench_rows (k, v) VALUES ($1, 'payload-0123456789abcdef')"
let pgbenchAutocommit = """
    \\set k random(1, 1000000000)
    INSERT INTO bench_rows (k, v) VALUES (:k, 'payload-0123456789abcdef');
    """
let pgbenchExplicit = """
    \\set k random(1, 1000000000)
    BEGIN ISOLATION LEVEL READ COMMITTED;
    INSERT INTO bench_rows (k, v) VALUES (:k, 'payload-0123456789abcdef');
    COMMIT;
    """

/// Runs `op` from `clients` workers for `seconds`; returns transactions per second.
func timedLoad(clients: Int, seconds: Int, _ op: @escaping @Sendable () async throws -> Void) async throws -> Double {
    let done = SharedCounter()
    let deadline = monotonicNanos() + UInt64(seconds) * 1_000_000_000
    let start = monotonicNanos()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<clients {
            group.addTask {
                while monotonicNanos() < deadline {
                    try await op()
                    _ = done.next()
                }
            }
        }
        try await group.waitForAll()
    }
    return Double(done.current) / (Double(monotonicNanos() - start) / 1e9)
}

say("store: single-row INSERT transactions/s, \(seconds) s per figure, fsync=\(fsync) synchronous_commit=\(sync), \(machineLine())")
say("  clients  round  pgbench INSERT  pgbench BEGIN/INSERT/COMMIT  Store.write  Store.query (autocommit)  write/pgbench")
for clients in clientCounts {
    let store = Store(StoreConfiguration(url: db.url, poolSize: clients), logger: logger)
    // Open every connection and prepare the statement before timing.
    _ = try await timedLoad(clients: clients, seconds: 1) { _ = try await store.write { tx in try tx.execute(insertSQL, Int.random(in: 1...1_000_000_000)) } }
    var ratios: [Double] = []
    for round in 1...rounds {
        let pgAuto = try pgbench(bindir: bindir, url: db.url, script: pgbenchAutocommit, clients: clients, seconds: seconds)
        let write = try await timedLoad(clients: clients, seconds: seconds) {
            _ = try await store.write { tx in try tx.execute(insertSQL, Int.random(in: 1...1_000_000_000)) }
        }
        let pgExplicit = try pgbench(bindir: bindir, url: db.url, script: pgbenchExplicit, clients: clients, seconds: seconds)
        let query = try await timedLoad(clients: clients, seconds: seconds) {
            _ = try await store.query(insertSQL, Int.random(in: 1...1_000_000_000))
        }
        ratios.append(write / pgAuto)
        say("  \(pad(String(clients), 9))\(pad(String(round), 7))\(pad(String(format: "%.0f", pgAuto), 16))\(pad(String(format: "%.0f", pgExplicit), 29))\(pad(String(format: "%.0f", write), 13))\(pad(String(format: "%.0f", query), 26))\(String(format: "%.2f", write / pgAuto))")
    }
    let median = ratios.sorted()[(ratios.count - 1) / 2]
    say("  \(clients) clients: Store.write / pgbench INSERT = \(ratios.map { String(format: "%.2f", $0) }.joined(separator: ", ")), median \(String(format: "%.2f", median)); goal ≥ 0.70: \(median >= 0.7 ? "met" : "missed")")
    store.close()
}
await db.drop()

// Request/reply round trip on loopback through MeshBus, against plain nats.c doing the same in
// the same run on the same nats-server. See docs/benchmarks.md ("Bus").
//
//   BusBench --c-binary PATH [--count 20000] [--warmup 2000] [--payload 32] [--rounds 3]
//
// Needs MESH_NATS_URL (scripts/bench-bus.sh starts a nats-server and builds the C program).
import BenchSupport
import Foundation
import Logging
import MeshBus

let options = Options()
let count = options.int("count", 20_000)
let warmup = options.int("warmup", 2_000)
let payloadSize = options.int("payload", 32)
let rounds = options.int("rounds", 3)
let cBinary = options.string("c-binary", "")
let url = try requireEnv("MESH_NATS_URL")

var logger = Logger(label: "bench.bus")
logger.logLevel = .warning

func connect(_ name: String) async throws -> BusConnection {
    let c = try await BusConnection.connect(BusConfiguration(servers: [url], name: name), logger: logger)
    try await c.waitUntilConnected()
    return c
}

/// Sequential requests; returns the timed samples.
func measure(_ client: BusConnection, subject: String) async throws -> Samples {
    let payload = [UInt8](repeating: 0x78, count: payloadSize)
    var samples: [UInt64] = []
    samples.reserveCapacity(count)
    for i in 0..<(warmup + count) {
        let t0 = monotonicNanos()
        let reply = try await client.request(subject, payload, timeout: .seconds(5))
        let t1 = monotonicNanos()
        precondition(reply.payload.count == payloadSize)
        if i >= warmup { samples.append(t1 - t0) }
    }
    return Samples(samples)
}

struct CResult { var p50: Double; var p99: Double; var mean: Double }

func runC(global: Bool) throws -> CResult {
    var args = [url, "\(count)", "\(warmup)", "\(payloadSize)"]
    if global { args.append("global") }
    let out = try runProgram(cBinary, args)
    var fields: [String: Double] = [:]
    for part in out.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
        let kv = part.split(separator: "=")
        if kv.count == 2 { fields[String(kv[0])] = Double(kv[1]) }
    }
    guard let p50 = fields["p50_us"], let p99 = fields["p99_us"], let mean = fields["mean_us"] else {
        throw BenchError("unexpected output from \(cBinary): \(out)")
    }
    return CResult(p50: p50, p99: p99, mean: mean)
}

// The replier side: a BusService echo endpoint, and a raw subscription that publishes replies itself.
let server = try await connect("bench-bus-server")
let client = try await connect("bench-bus-client")
let service = try BusService(connection: server, name: "bench-echo", version: "1.0.0",
                             endpoints: [ServiceEndpoint(name: "echo", subject: "bench.swift.echo") { $0.payload }], logger: logger)
let serviceTask = Task { try await service.run() }
await service.waitUntilReady()
let rawSub = try server.subscribe("bench.swift.raw")
let rawTask = Task.detached {
    for await m in rawSub {
        if let reply = m.reply { try? server.publish(reply, m.payload) }
    }
}
try await server.flush()

say("bus: request/reply round trip, \(payloadSize)-byte payload, \(count) sequential requests per figure after \(warmup) warm-up, \(machineLine())")
say("  round  \(pad("client → replier", 44))p50 µs    p99 µs    mean µs")
struct Row { var name: String; var p50: [Double] = []; var p99: [Double] = []; var mean: [Double] = [] }
var rows: [String: Row] = [:]
let order = ["c", "c-global", "swift-service", "swift-raw"]
let titles = ["c": "C nats.c → C callback replier",
              "c-global": "C nats.c → C callback (global delivery)",
              "swift-service": "MeshBus request → BusService endpoint",
              "swift-raw": "MeshBus request → raw subscription"]
@MainActor func record(_ key: String, _ round: Int, p50: Double, p99: Double, mean: Double) {
    var r = rows[key] ?? Row(name: titles[key]!)
    r.p50.append(p50); r.p99.append(p99); r.mean.append(mean)
    rows[key] = r
    say("  \(pad(String(round), 7))\(pad(titles[key]!, 44))\(pad(String(format: "%.1f", p50), 10))\(pad(String(format: "%.1f", p99), 10))\(String(format: "%.1f", mean))")
}
for round in 1...rounds {
    // Alternate the order every round so neither side always runs first.
    let keys = round % 2 == 1 ? order : order.reversed()
    for key in keys {
        switch key {
        case "c", "c-global":
            guard !cBinary.isEmpty else { continue }
            let r = try runC(global: key == "c-global")
            record(key, round, p50: r.p50, p99: r.p99, mean: r.mean)
        default:
            let s = try await measure(client, subject: key == "swift-service" ? "bench.swift.echo" : "bench.swift.raw")
            record(key, round, p50: Double(s.p50) / 1000, p99: Double(s.p99) / 1000, mean: s.mean / 1000)
        }
    }
}
func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[(s.count - 1) / 2] }
say("  median of \(rounds) rounds:")
for key in order {
    guard let r = rows[key] else { continue }
    say("    \(pad(r.name, 44))p50 \(pad(String(format: "%.1f µs", median(r.p50)), 11))p99 \(pad(String(format: "%.1f µs", median(r.p99)), 11))mean \(String(format: "%.1f µs", median(r.mean)))")
}
if let c = rows["c"] {
    for key in ["swift-service", "swift-raw"] {
        guard let s = rows[key] else { continue }
        let ratio = median(s.p50) / median(c.p50)
        say("    ratio \(pad(key, 14)) / C p50: \(String(format: "%.2f", ratio))×   p99: \(String(format: "%.2f", median(s.p99) / median(c.p99)))×   goal p50 ≤ 1.5×: \(ratio <= 1.5 ? "met" : "missed")")
    }
}
rawSub.unsubscribe()
serviceTask.cancel()
_ = await serviceTask.result
rawTask.cancel()
await client.close()
await server.close()

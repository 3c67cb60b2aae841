import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds (CLOCK_MONOTONIC), the clock every benchmark times with.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// A set of latency samples in nanoseconds.
public struct Samples: Sendable {
    /// Sorted ascending.
    public private(set) var sorted: [UInt64]

    public init(_ values: [UInt64]) { sorted = values.sorted() }

    public var count: Int { sorted.count }

    /// The nearest-rank percentile (`q` in 0...1): the smallest sample with at least `q` of all
    /// samples at or below it.
    public func percentile(_ q: Double) -> UInt64 {
        guard !sorted.isEmpty else { return 0 }
        let rank = Swift.max(1, Int((q * Double(sorted.count)).rounded(.up)))
        return sorted[min(rank, sorted.count) - 1]
    }

    public var p50: UInt64 { percentile(0.50) }
    public var p99: UInt64 { percentile(0.99) }
    public var max: UInt64 { sorted.last ?? 0 }
    public var mean: Double { sorted.isEmpty ? 0 : Double(sorted.reduce(0, +)) / Double(sorted.count) }
}

/// Formats nanoseconds as µs below 1 ms, ms below 1 s, else s.
public func formatNanos(_ ns: Double) -> String {
    if ns < 1_000_000 { return String(format: "%.1f µs", ns / 1_000) }
    if ns < 1_000_000_000 { return String(format: "%.2f ms", ns / 1_000_000) }
    return String(format: "%.3f s", ns / 1_000_000_000)
}

public func formatNanos(_ ns: UInt64) -> String { formatNanos(Double(ns)) }

/// Microseconds with one decimal, for tables.
public func micros(_ ns: UInt64) -> String { String(format: "%.1f", Double(ns) / 1_000) }

/// Milliseconds with two decimals, for tables.
public func millis(_ ns: UInt64) -> String { String(format: "%.2f", Double(ns) / 1_000_000) }

/// Pads `s` on the right to `width` characters.
public func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}

/// The result of a closed-loop load run.
public struct LoadResult: Sendable {
    public var samples: Samples
    public var elapsedNanos: UInt64
    public var errors: Int

    public init(samples: Samples, elapsedNanos: UInt64, errors: Int) {
        self.samples = samples
        self.elapsedNanos = elapsedNanos
        self.errors = errors
    }

    /// Completed operations per second (errors excluded).
    public var throughput: Double { Double(samples.count) / (Double(elapsedNanos) / 1e9) }
}

/// Runs `total` operations with `concurrency` workers, each starting its next operation as soon as
/// the previous one finished (a closed loop), and times every operation. `op` gets the operation's
/// index (0..<total). Errors are counted, not timed; the first few are printed.
public func closedLoop(concurrency: Int, total: Int, _ op: @escaping @Sendable (Int) async throws -> Void) async -> LoadResult {
    let next = SharedCounter()
    let printed = SharedCounter()
    let start = monotonicNanos()
    let (all, errors) = await withTaskGroup(of: ([UInt64], Int).self) { group in
        for _ in 0..<concurrency {
            group.addTask {
                var mine: [UInt64] = []
                mine.reserveCapacity(total / concurrency + 1)
                var errs = 0
                while true {
                    let i = next.next()
                    if i >= total { break }
                    let t0 = monotonicNanos()
                    do {
                        try await op(i)
                        mine.append(monotonicNanos() - t0)
                    } catch {
                        errs += 1
                        if printed.next() < 5 {
                            FileHandle.standardError.write(Data("  error: \(error)\n".utf8))
                        }
                    }
                }
                return (mine, errs)
            }
        }
        var merged: [UInt64] = []
        var errors = 0
        for await (s, e) in group {
            merged += s
            errors += e
        }
        return (merged, errors)
    }
    return LoadResult(samples: Samples(all), elapsedNanos: monotonicNanos() - start, errors: errors)
}

/// A counter shared by concurrent tasks.
public final class SharedCounter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    /// Returns the current value and adds one.
    public func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
    public var current: Int { value.load(ordering: .relaxed) }
}

/// Runs pgbench with a custom script against `url` and returns its TPS ("without initial
/// connection time"). `bindir` is where PostgreSQL's programs are (MESH_PG_BINDIR).
public func pgbench(bindir: String, url: String, script: String, clients: Int, seconds: Int,
                    prepared: Bool = true) throws -> Double {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UUID().uuidString).sql")
    try script.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    let threads = Swift.min(clients, ProcessInfo.processInfo.activeProcessorCount)
    let out = try runProgram("\(bindir)/pgbench", ["-n", "-c", "\(clients)", "-j", "\(threads)", "-T", "\(seconds)",
                                                   "-M", prepared ? "prepared" : "simple", "-f", file.path, url])
    guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") && $0.contains("without initial") }),
          let tps = Double(line.dropFirst(6).prefix(while: { $0 != " " })) else {
        throw BenchError("pgbench printed no tps line:\n\(out)")
    }
    return tps
}

/// Runs a program to completion and returns its standard output (standard error is passed through).
/// Throws when it exits non-zero.
///
/// Started with `posix_spawn` with an empty signal mask and default handlers: the Swift runtime's
/// threads block some signals, a child inherits the mask, and pgbench ends its `-T` run on SIGALRM.
public func runProgram(_ path: String, _ arguments: [String]) throws -> String {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw BenchError("pipe: errno \(errno)") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_addclose(&actions, fds[1])
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t()
    sigemptyset(&empty)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attr, argv, environ)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        throw BenchError("cannot start \(path): errno \(rc)")
    }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fds[0], &buf, buf.count)
        if n > 0 { out += buf[0..<n] } else if n == 0 || errno != EINTR { break }
    }
    close(fds[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let text = String(decoding: out, as: UTF8.self)
    guard status == 0 else { throw BenchError("\(path) \(arguments.joined(separator: " ")) failed (status \(status)):\n\(text)") }
    return text
}

/// A benchmark could not run.
public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Command-line options of the form `--name value`, with defaults.
public struct Options: Sendable {
    let values: [String: String]

    public init(_ args: [String] = Array(CommandLine.arguments.dropFirst())) {
        var v: [String: String] = [:]
        var i = 0
        while i < args.count {
            if args[i].hasPrefix("--") {
                let key = String(args[i].dropFirst(2))
                if i + 1 < args.count, !args[i + 1].hasPrefix("--") {
                    v[key] = args[i + 1]
                    i += 1
                } else {
                    v[key] = "true"
                }
            }
            i += 1
        }
        values = v
    }

    public func int(_ name: String, _ fallback: Int) -> Int { values[name].flatMap { Int($0) } ?? fallback }
    public func string(_ name: String, _ fallback: String) -> String { values[name] ?? fallback }
    public func flag(_ name: String) -> Bool { values[name] == "true" }
    /// A comma-separated list of integers.
    public func ints(_ name: String, _ fallback: [Int]) -> [Int] {
        values[name].map { $0.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } } ?? fallback
    }
}

/// An environment variable that must be set (the bench scripts export them from scripts/infra.sh).
public func requireEnv(_ name: String) throws -> String {
    guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else {
        throw BenchError("\(name) is not set: run this through scripts/bench.sh (or source the env file of scripts/infra.sh)")
    }
    return v
}

/// Load average and CPU count, printed with every benchmark so that a figure taken on a busy
/// machine can be recognised as such.
public func machineLine() -> String {
    let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    return "\(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load)"
}

/// The `_sum` and `_count` of every series of a Prometheus histogram in a `/metrics` text,
/// keyed by the value of `label`.
public func histogramSums(_ text: String, metric: String, label: String) -> [String: (sum: Double, count: Double)] {
    var out: [String: (sum: Double, count: Double)] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix(metric + "_sum{") || line.hasPrefix(metric + "_count{") {
        guard let open = line.firstIndex(of: "{"), let close = line.firstIndex(of: "}") else { continue }
        let labels = line[line.index(after: open)..<close]
        guard let kv = labels.split(separator: ",").first(where: { $0.hasPrefix(label + "=") }) else { continue }
        let key = kv.dropFirst(label.count + 2).dropLast()
        guard let value = Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces)) else { continue }
        var e = out[String(key)] ?? (0, 0)
        if line.hasPrefix(metric + "_sum{") { e.sum += value } else { e.count += value }
        out[String(key)] = e
    }
    return out
}

/// Prints a line and flushes at once, so figures appear as they are measured, also through a pipe.
public func say(_ line: String) {
    print(line)
    fflush(nil)
}

import Dispatch
import Foundation
import MeshNet
import Synchronization
import MeshSpawn

/// The node's packet filter and connection tracking, behind one small protocol: the access policy
/// is compiled by pure code (``FilterPlan``), and only this applies it. ``NFTablesFilter`` runs the
/// real tools (`nft` from Debian's nftables package, `conntrack` from its conntrack package);
/// ``RecordingPacketFilter`` keeps what it was given, for unit tests.
public protocol PacketFilter: Sendable {
    /// Applies an nftables script in one transaction (`nft -f`): all of it or nothing.
    func apply(_ script: String) async throws
    /// The flows the kernel tracks whose original source lies in one of `prefixes`.
    func trackedFlows(from prefixes: [IPPrefix]) async throws -> [TrackedFlow]
    /// Forgets tracked flows (each with every flow of the same verdict, ``TrackedFlow/deleteArguments``);
    /// their next packet is judged by the filter again as a new flow. Returns how many entries went.
    func forget(_ flows: [TrackedFlow]) async throws -> Int
}

/// A packet filter tool that failed.
public struct PacketFilterError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// True when the tool itself could not be started (it is not installed).
    public var toolMissing = false
}

/// nftables and conntrack through their command-line tools, in the network namespace of this process.
public struct NFTablesFilter: PacketFilter {
    public let nft: String
    public let conntrack: String
    /// Words put before each tool, e.g. `["ip", "netns", "exec", "blue"]` to act in another network
    /// namespace (tests and benchmarks).
    public let prefix: [String]

    public init(nft: String = "nft", conntrack: String = "conntrack", prefix: [String] = []) {
        self.nft = nft
        self.conntrack = conntrack
        self.prefix = prefix
    }

    public func apply(_ script: String) async throws {
        let r = try await ToolRunner.run(prefix + [nft, "-f", "-"], input: Array(script.utf8))
        guard r.status == 0 else {
            throw PacketFilterError(description: "nft -f failed (\(r.status)): \(String(decoding: r.stderr.prefix(800), as: UTF8.self))")
        }
    }

    public func trackedFlows(from prefixes: [IPPrefix]) async throws -> [TrackedFlow] {
        var flows: [TrackedFlow] = []
        for p in prefixes {
            let family = p.address.bitWidth == 32 ? "ipv4" : "ipv6"
            let r = try await ToolRunner.run(prefix + [conntrack, "-L", "-f", family, "-s", p.address.description, "--mask-src", Self.mask(p)])
            guard r.status == 0 else {
                throw PacketFilterError(description: "conntrack -L failed (\(r.status)): \(String(decoding: r.stderr.prefix(400), as: UTF8.self))")
            }
            let text = String(decoding: r.stdout, as: UTF8.self)
            for line in text.split(separator: "\n") {
                if let f = TrackedFlow(conntrackLine: line), p.contains(f.source) { flows.append(f) }
            }
        }
        return flows
    }

    /// The prefix's mask as conntrack wants it (dotted quad, or an IPv6 address).
    static func mask(_ p: IPPrefix) -> String {
        if p.address.bitWidth == 32 { return IPv4Address(IPPrefix.mask32(p.length)).description }
        let (h, l) = IPPrefix.mask128(p.length)
        return IPv6Address(high: h, low: l).description
    }

    public func forget(_ flows: [TrackedFlow]) async throws -> Int {
        var seen = Set<[String]>(), deleted = 0
        for f in flows {
            let args = f.deleteArguments
            guard seen.insert(args).inserted else { continue }
            let r = try await ToolRunner.run(prefix + [conntrack] + args)
            // "N flow entries have been deleted" on stderr; status 1 when there was none left.
            let text = String(decoding: r.stderr, as: UTF8.self)
            if let n = text.split(separator: " ").firstIndex(of: "flow").flatMap({ i in Int(text.split(separator: " ")[i - 1]) }) {
                deleted += n
            } else if r.status != 0 {
                throw PacketFilterError(description: "conntrack -D failed (\(r.status)): \(text.prefix(400))")
            }
        }
        return deleted
    }
}

/// Keeps every script and forgotten flow, and hands out the flows it is told about: for unit tests
/// of the enforcement logic. (The tests that prove enforcement run the real tools.)
public final class RecordingPacketFilter: PacketFilter {
    public struct Record: Sendable {
        public var scripts: [String] = []
        public var forgotten: [TrackedFlow] = []
        public var flows: [TrackedFlow] = []
        /// When set, the next ``apply(_:)`` fails with it.
        public var failNext: String?
    }

    public let record = Mutex(Record())

    public init() {}

    public func apply(_ script: String) async throws {
        try record.withLock { r in
            if let f = r.failNext {
                r.failNext = nil
                throw PacketFilterError(description: f)
            }
            r.scripts.append(script)
        }
    }

    public func trackedFlows(from prefixes: [IPPrefix]) async throws -> [TrackedFlow] {
        record.withLock { r in r.flows.filter { f in prefixes.contains { $0.contains(f.source) } } }
    }

    public func forget(_ flows: [TrackedFlow]) async throws -> Int {
        record.withLock { r in
            r.forgotten += flows
            let gone = Set(flows)
            r.flows.removeAll { gone.contains($0) }
            return flows.count
        }
    }
}

/// Runs a command to completion off Swift's cooperative threads (a blocking `waitpid` on a thread
/// of its own), with its standard input from bytes and its output collected through temporary files
/// (a pipe would fill up and stall a child with a large output).
enum ToolRunner {
    struct Result: Sendable {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
    }

    static func run(_ argv: [String], input: [UInt8] = []) async throws -> Result {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Result, any Error>) in
            DispatchQueue.global().async {
                c.resume(with: Swift.Result { try runBlocking(argv, input: input) })
            }
        }
    }

    static func runBlocking(_ argv: [String], input: [UInt8]) throws -> Result {
        let dir = FileManager.default.temporaryDirectory.path
        let base = "\(dir)/quazzar-tool-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let inPath = base + ".in", outPath = base + ".out", errPath = base + ".err"
        defer { unlink(inPath); unlink(outPath); unlink(errPath) }
        guard FileManager.default.createFile(atPath: inPath, contents: Data(input), attributes: [.posixPermissions: 0o600]) else {
            throw PacketFilterError(description: "cannot write \(inPath)")
        }
        let pid: pid_t
        do {
            pid = try ChildProcess.spawn(argv, environment: ChildProcess.currentEnvironment()) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            }
        } catch {
            throw PacketFilterError(description: "cannot start \(argv[0]): \(error.description)", toolMissing: error.errno == ENOENT)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw PacketFilterError(description: "waitpid: \(String(cString: strerror(errno)))") }
        }
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let out = FileManager.default.contents(atPath: outPath).map { [UInt8]($0) } ?? []
        let err = FileManager.default.contents(atPath: errPath).map { [UInt8]($0) } ?? []
        return Result(status: code, stdout: out, stderr: err)
    }
}

import Foundation
import MeshBus
import Synchronization
import MeshSpawn

/// A child process for tests (a service replica, nats-server, a node agent), with its output in a
/// log file. It is killed when the value is released if still running.
///
/// Started with `posix_spawn` and watched with `waitpid`: Foundation's `Process` does not always
/// notice that a child has exited, which would leave a test waiting forever.
public final class ManagedProcess: Sendable {
    public let name: String
    public let logFile: URL
    /// The process id.
    public let pid: Int32
    private let exit = Mutex<Int32?>(nil)
    /// Set once the test stops the process on purpose (``terminate(timeout:)``, ``kill9()``): from
    /// then on its exit is expected; before that, any exit is a crash (``checkAlive()``).
    private let stopRequested = Mutex(false)

    /// Starts `executable` with `arguments` and extra `environment`.
    public init(name: String, executable: String, arguments: [String] = [], environment: [String: String] = [:],
                logDir: URL) throws {
        self.name = name
        logFile = logDir.appendingPathComponent("\(name).log")
        let env = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }.map { "\($0.key)=\($0.value)" }
        let path = logFile.path
        do {
            // A service the test kills must not leave the test's own sockets open in a child it started.
            pid = try ChildProcess.spawn([executable] + arguments, environment: env) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            }
        } catch {
            throw TestSetupError.failed("cannot start \(executable): \(error.description)")
        }
    }

    /// Whether the process is still running (reaps it once it has exited).
    public var isRunning: Bool {
        exit.withLock { status in
            if status != nil { return false }
            var st: Int32 = 0
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid {
                status = st & 0x7f == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
                return false
            }
            return r == 0
        }
    }

    /// The exit status, once the process has exited.
    public var exitStatus: Int32? {
        _ = isRunning
        return exit.withLock { $0 }
    }

    /// Sends a signal.
    public func signal(_ sig: Int32) {
        if isRunning { kill(pid, sig) }
    }

    /// Whether the test has stopped the process on purpose.
    public var wasStopped: Bool { stopRequested.withLock { $0 } }

    /// Declares that the process ends on its own now (ending is what the test checks, e.g. a node
    /// whose bus access was revoked): its exit no longer counts as a crash.
    public func expectExit() { stopRequested.withLock { $0 = true } }

    /// Throws ``ProcessFailure`` when the process has exited although nobody stopped it (it crashed
    /// or gave up), with its exit status and the end of its log.
    public func checkAlive() throws {
        guard !isRunning, !wasStopped else { return }
        throw ProcessFailure(name: name, what: "exited unexpectedly with status \(exitStatus.map(String.init) ?? "?")", log: log())
    }

    /// Stops the process for good and checks how it ended: it must have been running until now
    /// (``checkAlive()``) and must exit 0 on SIGTERM within `timeout`.
    public func stopChecked(timeout: Duration = .seconds(10)) async throws {
        try checkAlive()
        guard !wasStopped else { return }
        let status = await terminate(timeout: timeout)
        guard status == 0 else {
            throw ProcessFailure(name: name, what: status.map { "exited with status \($0) on SIGTERM" } ?? "did not exit within \(timeout) of SIGTERM (killed)",
                                 log: log())
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the exit status, or nil if it
    /// had to be killed.
    @discardableResult
    public func terminate(timeout: Duration = .seconds(10)) async -> Int32? {
        stopRequested.withLock { $0 = true }
        guard isRunning else { return exitStatus }
        signal(SIGTERM)
        let deadline = ContinuousClock.now + timeout
        while isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if isRunning {
            await kill9()
            return nil
        }
        return exitStatus
    }

    /// SIGKILL, no grace.
    public func kill9() async {
        stopRequested.withLock { $0 = true }
        signal(SIGKILL)
        while isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }

    /// The log so far.
    public func log() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    deinit {
        if isRunning {
            kill(pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
        }
    }
}

/// A child process of a test that ended the wrong way: it crashed, gave up, or did not stop cleanly.
public struct ProcessFailure: Error, CustomStringConvertible {
    public let name: String
    public let what: String
    public let log: String

    public var description: String { "\(name) \(what); end of its log:\n\(log.suffix(4000))" }
}

/// Stops every process with ``ManagedProcess/stopChecked(timeout:)`` (all of them, even after a
/// failure) and throws the failures together.
public func stopChecked(_ processes: [ManagedProcess], timeout: Duration = .seconds(10)) async throws {
    var failures: [String] = []
    for p in processes {
        do { try await p.stopChecked(timeout: timeout) } catch { failures.append("\(error)") }
    }
    if !failures.isEmpty { throw TestSetupError.failed(failures.joined(separator: "\n\n")) }
}

/// Runs a command to completion and returns its exit status, its combined output (stderr after
/// stdout), and its stdout alone.
///
/// This uses `posix_spawn` and `waitpid` directly. Output goes to a temporary file rather than a
/// pipe: a command that starts a daemon would otherwise hand the pipe to the daemon, and reading to
/// end-of-file would never finish.
@discardableResult
public func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                input: String? = nil) throws -> (status: Int32, output: String, stdout: String) {
    let outPath = NSTemporaryDirectory() + "mesh-run-\(Nuid.next())"
    let errPath = outPath + ".err"
    defer { unlink(outPath); unlink(errPath) }
    var inPath = "/dev/null"
    if let input {
        inPath = NSTemporaryDirectory() + "mesh-in-\(Nuid.next())"
        try Data(input.utf8).write(to: URL(fileURLWithPath: inPath))
    }
    defer { if input != nil { unlink(inPath) } }

    let argv = [executable] + arguments
    let env = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }.map { "\($0.key)=\($0.value)" }
    let pid: pid_t
    do {
        pid = try ChildProcess.spawn(argv, environment: env) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
    } catch {
        throw TestSetupError.failed("cannot run \(executable): \(error.description)")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    let exited = status & 0x7f == 0
    return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), stdout + stderr, stdout)
}

/// ``run(_:_:environment:input:)`` from async code: the wait happens on a thread of its own
/// (``offPool(_:)``), so a slow command (a fuzzer, a ping that gets no answer) never holds one of
/// Swift's cooperative threads. Async callers get this overload; only sync code blocks.
@discardableResult
public func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                input: String? = nil) async throws -> (status: Int32, output: String, stdout: String) {
    try await offPool { try run(executable, arguments, environment: environment, input: input) }
}

/// Runs blocking work (a helper that waits for a child process: `ping`, `wg`, `dig`, `nc`) on a
/// thread of its own and awaits it, so that it does not hold one of Swift's cooperative threads,
/// of which there is one per core: on two cores, two tests blocked in such helpers stalled every
/// other test of the process, their deadlines running meanwhile.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
        Thread { c.resume(with: Result { try work() }) }.start()
    }
}

/// A private nats-server and PostgreSQL, for tests that restart them (so the shared ones stay up).
/// Started with `scripts/infra.sh`, the same script `make test` and `make up` use.
public final class PrivateInfra: Sendable {
    public let dir: URL
    public let natsURL: String
    public let databaseURL: String

    public init(name: String) throws {
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("mesh-\(name)-\(Nuid.short())")
        let script = TestEnvironment.repoRoot.appendingPathComponent("scripts/infra.sh").path
        let r = try run(script, ["start", dir.path], environment: ["MESH_NATS_PORT": "", "MESH_PG_PORT": ""].filter { !$0.value.isEmpty })
        guard r.status == 0 else { throw TestSetupError.failed("infra.sh start failed: \(r.output)") }
        let env = try String(contentsOf: dir.appendingPathComponent("env"), encoding: .utf8)
        func value(_ key: String) -> String {
            env.split(separator: "\n").first { $0.hasPrefix("export \(key)=") }.map { String($0.dropFirst("export \(key)=".count)) } ?? ""
        }
        natsURL = value("MESH_NATS_URL")
        databaseURL = value("MESH_DATABASE_URL")
    }

    /// Stops nats-server only, and returns once it has exited and its port takes no connection (so
    /// that ``start()`` can bind it again and no client reaches the old server meanwhile).
    public func stopNats() throws {
        let pid = try String(contentsOf: dir.appendingPathComponent("nats.pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let port = Int(try String(contentsOf: dir.appendingPathComponent("nats.port"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        _ = try run("/bin/kill", [pid])
        // `kill -0` succeeds on a zombie that init has not reaped yet: read the process state instead.
        func exited() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
            return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while !(exited() && !acceptsConnections(host: "127.0.0.1", port: port)) {
            guard ContinuousClock.now < deadline else { throw TestSetupError.failed("nats-server \(pid) did not stop within 60 s") }
            usleep(20_000)
        }
        try? FileManager.default.removeItem(at: dir.appendingPathComponent("nats.pid"))
    }

    /// Starts both again on the same ports.
    public func start() throws {
        let script = TestEnvironment.repoRoot.appendingPathComponent("scripts/infra.sh").path
        let natsPort = try String(contentsOf: dir.appendingPathComponent("nats.port"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let monPort = try String(contentsOf: dir.appendingPathComponent("nats.monitor"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let r = try run(script, ["start", dir.path], environment: ["MESH_NATS_PORT": natsPort, "MESH_NATS_MONITOR_PORT": monPort])
        guard r.status == 0 else { throw TestSetupError.failed("infra.sh start failed: \(r.output)") }
    }

    /// Stops PostgreSQL only (fast shutdown: connections are terminated).
    public func stopPostgres() throws {
        let pgbin = try run("/bin/sh", ["-c", ". \(dir.path)/env; echo $MESH_PG_BINDIR"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let r = try run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(pgbin)/pg_ctl", "-D", dir.appendingPathComponent("pg/data").path, "-m", "fast", "-w", "stop"])
        guard r.status == 0 else { throw TestSetupError.failed("pg_ctl stop failed: \(r.output)") }
    }

    /// Stops both and removes the folder.
    public func shutdown() {
        let script = TestEnvironment.repoRoot.appendingPathComponent("scripts/infra.sh").path
        _ = try? run(script, ["stop", dir.path])
        try? FileManager.default.removeItem(at: dir)
    }

    deinit { shutdown() }
}

extension Nuid {
    /// A short random id (8 lowercase characters) for names with length limits.
    public static func short() -> String { String(next().lowercased().prefix(8)) }
}

/// A nats-server of a test's own (JetStream off, random port), so that services started by one test
/// never answer another test's requests. Starting one takes a few milliseconds. It can be killed and
/// started again on the same port (``kill()``, ``start()``), for outage tests.
public final class TestNatsServer: Sendable {
    public let url: String
    public let port: Int
    let host: String
    let name: String
    let extraArguments: [String]
    private let current: Mutex<ManagedProcess?>

    /// Starts the server listening on `host` (a bridge address lets network namespaces reach it).
    public init(name: String = "t", host: String = "127.0.0.1", extraArguments: [String] = []) throws {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = Int.random(in: 20000...60000)
            do {
                let p = try Self.spawn(name: name, host: host, port: port, extraArguments: extraArguments)
                if waitListening(host: host, port: port, while: p) {
                    self.current = Mutex(p)
                    self.port = port
                    self.url = "nats://\(host):\(port)"
                    self.host = host
                    self.name = name
                    self.extraArguments = extraArguments
                    return
                }
                lastError = TestSetupError.failed("nats-server did not listen on \(port): \(p.log())")
            } catch {
                lastError = error
            }
        }
        throw lastError ?? TestSetupError.failed("nats-server did not start")
    }

    static func spawn(name: String, host: String, port: Int, extraArguments: [String]) throws -> ManagedProcess {
        try ManagedProcess(name: "nats-\(name)-\(port)", executable: TestEnvironment.which("nats-server"),
                           arguments: ["-a", host, "-p", "\(port)"] + extraArguments,
                           logDir: TestEnvironment.outputDir("nats"))
    }

    var process: ManagedProcess? { current.withLock { $0 } }

    /// Stops the server (SIGKILL).
    public func stop() async { await kill() }

    /// Kills the server (SIGKILL), as a crash would; ``start()`` brings it back on the same port.
    public func kill() async {
        if let p = current.withLock({ p -> ManagedProcess? in defer { p = nil }; return p }) { await p.kill9() }
    }

    /// Starts the server again on the same port and with the same arguments, and waits until it listens.
    public func start() throws {
        guard process == nil else { return }
        let p = try Self.spawn(name: name, host: host, port: port, extraArguments: extraArguments)
        guard waitListening(host: host, port: port, while: p) else {
            throw TestSetupError.failed("nats-server did not listen on \(port) again: \(p.log().suffix(2000))")
        }
        current.withLock { $0 = p }
    }

    /// The server's log so far (every start appends to the same file).
    public func log() -> String {
        (try? String(contentsOf: TestEnvironment.outputDir("nats").appendingPathComponent("nats-\(name)-\(port).log"), encoding: .utf8)) ?? ""
    }
}

/// Whether something accepts TCP connections on host:port now.
func acceptsConnections(host: String, port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr(host)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// Waits (up to 30 s: a bound, the machine may be busy) until something accepts TCP connections on
/// host:port, while `process` runs.
func waitListening(host: String, port: Int, while process: ManagedProcess) -> Bool {
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
        if acceptsConnections(host: host, port: port) { return true }
        if !process.isRunning { return false }
        usleep(10_000)
    }
    return false
}

/// nats-servers joined in a cluster (routes between all of them), on fixed ports so that one can
/// be stopped and started again while clients fail over to the others.
public final class TestNatsCluster: @unchecked Sendable {
    public let clientPorts: [Int]
    let clusterPorts: [Int]
    let name: String
    private var servers: [ManagedProcess?]

    public init(size: Int, name: String = "cl") throws {
        // Reserved for the life of the test process (freeLoopbackPort), so a server started again
        // finds its ports free.
        clientPorts = try (0..<size).map { _ in try freeLoopbackPort() }
        clusterPorts = try (0..<size).map { _ in try freeLoopbackPort() }
        self.name = name
        servers = Array(repeating: nil, count: size)
        for i in 0..<size { try start(i) }
    }

    /// All client URLs, comma-separated, as MESH_NATS_URL takes them.
    public var urls: String { clientPorts.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",") }

    /// Starts server `i` (again).
    public func start(_ i: Int) throws {
        let routes = clusterPorts.enumerated().filter { $0.offset != i }.map { "nats://127.0.0.1:\($0.element)" }.joined(separator: ",")
        let p = try ManagedProcess(name: "nats-\(name)-\(i)-\(Nuid.short())", executable: TestEnvironment.which("nats-server"),
                                   arguments: ["-a", "127.0.0.1", "-p", "\(clientPorts[i])", "-n", "\(name)-\(i)",
                                               "--cluster_name", name, "--cluster", "nats://127.0.0.1:\(clusterPorts[i])", "--routes", routes],
                                   logDir: TestEnvironment.outputDir("nats"))
        guard waitListening(host: "127.0.0.1", port: clientPorts[i], while: p) else {
            throw TestSetupError.failed("cluster nats-server \(i) did not start: \(p.log())")
        }
        servers[i] = p
    }

    /// Kills server `i` (SIGKILL).
    public func kill(_ i: Int) async {
        await servers[i]?.kill9()
        servers[i] = nil
    }

    public func stop() async {
        for i in servers.indices { await kill(i) }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now, and that no other process is handed until
/// this one exits.
///
/// A port read back from a bind to port 0 and released is free only for a moment: any process that
/// binds port 0 meanwhile (a service's metrics listener, another test's picker, an outgoing
/// connection's local port) may be given the same one, and the server meant for it then fails with
/// "address in use" while the other process answers in its place. So the port is drawn below the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`), which port 0 and `connect` never use,
/// and reserved among the pickers of every test process by an exclusive lock on a file named after
/// it, held until this process exits.
public func freeLoopbackPort() throws -> Int {
    try PortReservations.shared.reserve()
}

final class PortReservations: Sendable {
    static let shared = PortReservations()
    static let directory = "/tmp/quazzar-mesh-ports"
    /// The lock files' descriptors, open for the life of the process.
    private let held = Mutex<[Int: Int32]>([:])
    private let range: ClosedRange<Int>

    private init() {
        // Below the ephemeral range, above the ports services use by convention.
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let low = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
        range = 20_000...max(20_001, min(low, 65_536) - 1)
        mkdir(Self.directory, 0o1777)
    }

    func reserve() throws -> Int {
        for _ in 0..<1_000 {
            let port = Int.random(in: range)
            if held.withLock({ $0[port] != nil }) { continue }
            let fd = open("\(Self.directory)/\(port)", O_CREAT | O_RDWR | O_CLOEXEC, 0o666)
            guard fd >= 0 else { throw TestSetupError.failed("open \(Self.directory)/\(port): errno \(errno)") }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { close(fd); continue }
            guard Self.canBind(port) else { close(fd); continue }
            held.withLock { $0[port] = fd }
            return port
        }
        throw TestSetupError.failed("no free loopback port in \(range) after 1,000 tries")
    }

    /// Whether a listener could bind 127.0.0.1:`port` now.
    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } } == 0
    }
}

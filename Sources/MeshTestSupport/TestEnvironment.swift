import Foundation
import Logging
import MeshBus
import MeshStore

/// Where the real servers for integration tests are. `scripts/test.sh` starts nats-server and
/// PostgreSQL and exports their URLs; run by hand without them, the integration tests are skipped
/// with that reason — unless `MESH_REQUIRE_INFRA=1` (set by `make test`), which turns the skip
/// into a failure.
public enum TestEnvironment {
    public static var natsURL: String? { ProcessInfo.processInfo.environment["MESH_NATS_URL"] }
    public static var databaseURL: String? { ProcessInfo.processInfo.environment["MESH_DATABASE_URL"] }
    public static var requireInfra: Bool { ProcessInfo.processInfo.environment["MESH_REQUIRE_INFRA"] == "1" }

    /// True when the servers are available, or when they are required (so that the test runs and fails).
    public static var hasInfra: Bool { (natsURL != nil && databaseURL != nil) || requireInfra }
    /// The reason shown when integration tests are skipped.
    public static let skipReason = "needs nats-server and PostgreSQL: run `make test` (or export MESH_NATS_URL and MESH_DATABASE_URL)"

    /// Whether the tests run as root (network namespaces and WireGuard need it).
    public static var isRoot: Bool { getuid() == 0 }

    /// What a suite needs that is missing here: root, the test servers, programs on PATH.
    public static func missing(root: Bool = false, infra: Bool = false, tools: [String] = []) -> [String] {
        var out: [String] = []
        if root && !isRoot { out.append("root (network namespaces, WireGuard)") }
        if infra && (natsURL == nil || databaseURL == nil) { out.append("nats-server and PostgreSQL (MESH_NATS_URL, MESH_DATABASE_URL)") }
        for tool in tools where !FileManager.default.isExecutableFile(atPath: which(tool)) { out.append("`\(tool)` on PATH") }
        return out
    }

    /// Whether a suite with these needs runs: when nothing is missing, and always under `make test`
    /// (`MESH_REQUIRE_INFRA=1`), where a missing piece must fail the suite (see ``require(root:infra:tools:)``)
    /// rather than skip it. Use as `.enabled(if: TestEnvironment.runs(...), "needs ...")`.
    public static func runs(root: Bool = false, infra: Bool = false, tools: [String] = []) -> Bool {
        requireInfra || missing(root: root, infra: infra, tools: tools).isEmpty
    }

    /// Throws a failure naming what is missing. Called from the `init()` of a suite gated with
    /// ``runs(root:infra:tools:)``, so that under `make test` each of its tests fails with the reason.
    public static func require(root: Bool = false, infra: Bool = false, tools: [String] = []) throws {
        let gone = missing(root: root, infra: infra, tools: tools)
        guard gone.isEmpty else { throw TestSetupError.failed("missing: \(gone.joined(separator: ", ")) (scripts/deps.sh installs the tools; run as root)") }
    }

    /// The repository root, found from this file's path.
    public static let repoRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    /// The folder holding the built executables (`MESH_BIN_DIR`, else `.build/debug`).
    public static var binDir: URL {
        if let d = ProcessInfo.processInfo.environment["MESH_BIN_DIR"] { return URL(fileURLWithPath: d) }
        return repoRoot.appendingPathComponent(".build/debug")
    }

    /// A folder for logs and artifacts of one test, under `.test-output/`.
    public static func outputDir(_ name: String) -> URL {
        let base = ProcessInfo.processInfo.environment["MESH_TEST_OUTPUT"].map { URL(fileURLWithPath: $0) }
            ?? repoRoot.appendingPathComponent(".test-output")
        let dir = base.appendingPathComponent(name)
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A logger for tests: warnings and above to stderr unless `MESH_TEST_LOG_LEVEL` says otherwise.
    public static func logger(_ label: String) -> Logger {
        var l = Logger(label: label)
        l.logLevel = ProcessInfo.processInfo.environment["MESH_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return l
    }

    /// The NATS URL, or a test failure explaining what is missing.
    public static func requireNatsURL() throws -> String {
        guard let u = natsURL else { throw TestSetupError.missing("MESH_NATS_URL") }
        return u
    }

    /// The admin database URL, or a test failure explaining what is missing.
    public static func requireDatabaseURL() throws -> String {
        guard let u = databaseURL else { throw TestSetupError.missing("MESH_DATABASE_URL") }
        return u
    }

    /// Connects to the test NATS server.
    public static func connectBus(_ name: String, url: String? = nil, inboxPrefix: String = "_INBOX") async throws -> BusConnection {
        let u = try url ?? requireNatsURL()
        let servers = u.split(separator: ",").map { String($0) }
        return try await BusConnection.connect(BusConfiguration(servers: servers, name: name, inboxPrefix: inboxPrefix), logger: logger("test.bus"))
    }
}

/// A test could not be set up.
public enum TestSetupError: Error, CustomStringConvertible {
    case missing(String)
    case failed(String)

    public var description: String {
        switch self {
        case .missing(let v): "\(v) is not set: \(TestEnvironment.skipReason)"
        case .failed(let why): why
        }
    }
}

/// A database of its own for one test, created from the admin URL and dropped by ``drop()``.
public struct TestDatabase: Sendable {
    /// Connection URL of the new database.
    public let url: String
    public let name: String
    let adminURL: String

    /// Creates a fresh, empty database, on the shared test server or on the one `adminURL` names
    /// (a ``PrivateInfra``'s, for tests that stop PostgreSQL).
    public static func create(prefix: String = "t", adminURL: String? = nil) async throws -> TestDatabase {
        let admin = try adminURL ?? TestEnvironment.requireDatabaseURL()
        let name = "\(prefix)_\(Nuid.next().lowercased())"
        let store = Store(StoreConfiguration(url: admin, poolSize: 1), logger: TestEnvironment.logger("test.db"))
        try await store.executeScript("CREATE DATABASE \(name)")
        store.close()
        return TestDatabase(url: replaceDatabase(in: admin, with: name), name: name, adminURL: admin)
    }

    /// A search path over every service's schema, for tests that read the tables of several
    /// services at once (the services themselves each see only their own).
    public static let allSchemas = "provision,allocator,fanout"

    /// Drops the database (terminating leftover connections).
    public func drop() async {
        let store = Store(StoreConfiguration(url: adminURL, poolSize: 1), logger: TestEnvironment.logger("test.db"))
        try? await store.executeScript("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        store.close()
    }

    /// Replaces the path (database name) of a `postgresql://` URL.
    public static func replaceDatabase(in url: String, with name: String) -> String {
        guard var c = URLComponents(string: url) else { return url }
        c.path = "/" + name
        return c.string ?? url
    }
}

extension TestEnvironment {
    /// The full path of a program on PATH (or the name itself if not found).
    public static func which(_ program: String) -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return program
    }
}

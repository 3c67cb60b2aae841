import Dispatch
import Foundation
import Logging
import Metrics
import Synchronization

/// Connection settings for ``Store``.
public struct StoreConfiguration: Sendable {
    /// A libpq connection string or URI, e.g. `postgresql://mesh@127.0.0.1:5432/mesh`.
    public var url: String
    /// Upper bound of pooled connections.
    public var poolSize: Int
    /// How long a transaction waits for a free connection.
    public var acquireTimeout: Duration
    /// Shown in `pg_stat_activity`.
    public var applicationName: String
    /// The PostgreSQL schema that holds the tables of the one service using this store; first on
    /// every connection's search path. nil: the database's default search path.
    public var schema: String?

    public init(url: String, poolSize: Int = 8, acquireTimeout: Duration = .seconds(10), applicationName: String = "quazzar-mesh",
                schema: String? = nil) {
        self.url = url
        self.poolSize = poolSize
        self.acquireTimeout = acquireTimeout
        self.applicationName = applicationName
        self.schema = schema
    }
}

/// Transaction isolation levels.
public enum IsolationLevel: String, Sendable {
    case readCommitted = "READ COMMITTED"
    case repeatableRead = "REPEATABLE READ"
    case serializable = "SERIALIZABLE"
}

/// The handle a transaction body uses. Statements are parameterised only: SQL text and values
/// never mix, so nothing a caller passes can change a statement.
public struct Transaction: ~Copyable {
    let connection: PGConnection

    /// Runs a statement and returns its rows.
    @discardableResult
    public func query(_ sql: SQL, _ params: (any PGEncodable)?...) throws -> [Row] {
        try connection.execute(sql.text, params).rows
    }

    /// Runs a statement and returns the first row, if any.
    public func queryFirst(_ sql: SQL, _ params: (any PGEncodable)?...) throws -> Row? {
        try connection.execute(sql.text, params).rows.first
    }

    /// Runs a statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: SQL, _ params: (any PGEncodable)?...) throws -> Int {
        try connection.execute(sql.text, params).affectedRows
    }

    /// Runs a statement given as an array of parameters.
    @discardableResult
    public func query(_ sql: SQL, parameters: [(any PGEncodable)?]) throws -> [Row] {
        try connection.execute(sql.text, parameters).rows
    }

    /// Runs several statements in one round trip (a libpq pipeline) and returns their results in
    /// order. The server runs them one after another, exactly as separate calls would, so a later
    /// statement sees what an earlier one wrote; the first failure is thrown and the statements
    /// after it do nothing. Use it for statements that do not need each other's results in Swift.
    @discardableResult
    public func batch(_ statements: [Statement]) throws -> [QueryResult] {
        try connection.executeBatch(statements.map { ($0.sql.text, $0.params) })
    }
}

/// One statement of a ``Transaction/batch(_:)``.
public struct Statement: Sendable {
    let sql: SQL
    let params: [(any PGEncodable)?]

    public init(_ sql: SQL, _ params: (any PGEncodable)?...) {
        self.sql = sql
        self.params = params
    }
}

/// The PostgreSQL store: a pool of libpq connections, transactions written as closures, LISTEN,
/// and versioned migrations.
///
/// Transaction bodies are synchronous and run on the connection's own thread, so a transaction
/// never holds a connection across an `await` on something else (a bus request, say).
public final class Store: Sendable {
    public let configuration: StoreConfiguration
    let logger: Logger
    private let pool: Pool

    /// Creates the store. Connections are opened lazily, so this succeeds while PostgreSQL is down.
    public init(_ configuration: StoreConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.pool = Pool(size: configuration.poolSize)
    }

    /// Runs `body` in a transaction and commits it. A thrown error rolls back and is rethrown.
    /// Serialization failures and deadlocks are retried up to `retries` times with jittered backoff.
    @discardableResult
    public func write<T: Sendable>(isolation: IsolationLevel = .readCommitted, retries: Int = 8,
                                   _ body: @escaping @Sendable (borrowing Transaction) throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await withConnection { conn in
                    try Self.runTransaction(conn, isolation: isolation, readOnly: false, body)
                }
            } catch let e as StoreError where e.isTransient && attempt < retries {
                attempt += 1
                StoreMetrics.retries.increment()
                let backoff = Double(min(1 << attempt, 64)) * Double.random(in: 0.5...1.5)
                try await Task.sleep(for: .milliseconds(backoff))
            }
        }
    }

    /// Runs `body` in a read-only transaction.
    public func read<T: Sendable>(isolation: IsolationLevel = .readCommitted,
                                  _ body: @escaping @Sendable (borrowing Transaction) throws -> T) async throws -> T {
        try await withConnection { conn in
            try Self.runTransaction(conn, isolation: isolation, readOnly: true, body)
        }
    }

    /// Runs one statement in autocommit mode (no BEGIN/COMMIT round trips) and returns its rows.
    /// For a single statement this is as atomic as a transaction and costs one round trip.
    @discardableResult
    public func query(_ sql: SQL, _ params: (any PGEncodable)?...) async throws -> [Row] {
        try await query(sql: sql, parameters: params)
    }

    /// ``query(_:_:)`` with the parameters as an array.
    public func query(sql: SQL, parameters params: [(any PGEncodable)?]) async throws -> [Row] {
        let text = sql.text
        let boxed = SendableParams(params)
        return try await withConnection { conn in try conn.execute(text, boxed.values).rows }
    }

    /// Runs SQL outside a transaction block (e.g. `CREATE DATABASE`). Several statements allowed.
    public func executeScript(_ sql: String) async throws {
        try await withConnection { conn in try conn.executeScript(sql) }
    }

    /// Sends a notification (`pg_notify`) outside any transaction.
    public func notify(channel: String, payload: String = "") async throws {
        try await write { tx in try tx.execute("SELECT pg_notify($1, $2)", channel, payload) }
    }

    private static func runTransaction<T>(_ conn: PGConnection, isolation: IsolationLevel, readOnly: Bool,
                                          _ body: (borrowing Transaction) throws -> T) throws -> T {
        // BEGIN goes out with the body's first statement (PGConnection.pendingBegin): one round
        // trip for both. A body that runs no statement never opens a transaction at all.
        conn.pendingBegin = "BEGIN ISOLATION LEVEL \(isolation.rawValue)" + (readOnly ? " READ ONLY" : "")
        defer { conn.pendingBegin = nil }
        do {
            let tx = Transaction(connection: conn)
            let value = try body(tx)
            if conn.pendingBegin == nil { try conn.executeScript("COMMIT") }
            return value
        } catch {
            if conn.pendingBegin == nil, conn.isHealthy { try? conn.executeScript("ROLLBACK") }
            throw error
        }
    }

    /// Borrows a healthy connection, runs `work` on its queue, and returns it to the pool.
    func withConnection<T: Sendable>(_ work: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        let conn = try await pool.acquire(timeout: configuration.acquireTimeout, url: configuration.url)
        let appName = configuration.applicationName, schema = configuration.schema
        let logger = self.logger
        let result: Result<T, any Error> = await withCheckedContinuation { cont in
            conn.queue.async {
                do {
                    if !conn.isHealthy {
                        try conn.connect(applicationName: appName, schema: schema)
                    }
                    cont.resume(returning: .success(try work(conn)))
                } catch {
                    if case StoreError.connectionLost(let why) = error {
                        logger.warning("database connection lost", metadata: ["db.connection": "\(conn.id)", "error": "\(why)"])
                    }
                    cont.resume(returning: .failure(error))
                }
            }
        }
        pool.release(conn)
        return try result.get()
    }

    /// Closes idle connections; in-flight transactions finish first.
    public func close() {
        pool.closeIdle()
    }

    // MARK: LISTEN

    /// Listens on `channels` over a dedicated connection. The stream yields notifications and, after
    /// a lost connection is re-established (with backoff), a ``ListenEvent/reconnected`` marker:
    /// notifications sent during the outage are gone, so a consumer should re-read its state then.
    public func listen(_ channels: [String]) -> AsyncStream<ListenEvent> {
        let (stream, cont) = AsyncStream<ListenEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let listener = Listener(url: configuration.url, appName: configuration.applicationName + "-listen",
                                channels: channels, logger: logger, continuation: cont)
        cont.onTermination = { _ in listener.stop() }
        listener.start()
        return stream
    }

    /// Something a LISTEN stream reports.
    public enum ListenEvent: Sendable, Equatable {
        /// LISTEN is in place (first time and after every reconnect); anything earlier may be missed.
        case listening
        case notification(StoreNotification)
        /// The connection was lost; the listener is reconnecting.
        case disconnected
        case reconnected
    }
}

/// A fixed-size pool. Waiters are served in order; a timed-out waiter gets ``StoreError/poolTimeout``.
final class Pool: Sendable {
    private struct State {
        var idle: [PGConnection] = []
        var created = 0
        var waiters: [(id: Int, cont: CheckedContinuation<PGConnection, any Error>)] = []
        var nextWaiter = 0
    }
    private let state = Mutex(State())
    let size: Int

    init(size: Int) { self.size = max(1, size) }

    func acquire(timeout: Duration, url: String) async throws -> PGConnection {
        enum Decision { case ready(PGConnection), create(Int), wait }
        let decision: Decision = state.withLock { s in
            if let c = s.idle.popLast() { return .ready(c) }
            if s.created < size {
                s.created += 1
                return .create(s.created)
            }
            return .wait
        }
        switch decision {
        case .ready(let c): return c
        case .create(let id): return PGConnection(url: url, id: id)
        case .wait: break
        }
        return try await withCheckedThrowingContinuation { cont in
            let id = state.withLock { s -> Int? in
                if let c = s.idle.popLast() {
                    cont.resume(returning: c)
                    return nil
                }
                s.nextWaiter += 1
                s.waiters.append((s.nextWaiter, cont))
                return s.nextWaiter
            }
            guard let id else { return }
            busyTimer.asyncAfter(deadline: .now() + Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18) {
                let waiter = self.state.withLock { s -> CheckedContinuation<PGConnection, any Error>? in
                    guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return s.waiters.remove(at: i).cont
                }
                waiter?.resume(throwing: StoreError.poolTimeout)
            }
        }
    }

    func release(_ c: PGConnection) {
        let waiter = state.withLock { s -> CheckedContinuation<PGConnection, any Error>? in
            if !s.waiters.isEmpty { return s.waiters.removeFirst().cont }
            s.idle.append(c)
            return nil
        }
        waiter?.resume(returning: c)
    }

    func closeIdle() {
        state.withLock { s in
            s.created -= s.idle.count
            s.idle.removeAll()
        }
    }
}

/// Parameters are immutable values handed to one connection's thread.
struct SendableParams: @unchecked Sendable {
    let values: [(any PGEncodable)?]
    init(_ values: [(any PGEncodable)?]) { self.values = values }
}

private let busyTimer = DispatchQueue(label: "mesh.store.timer")

/// The LISTEN loop: a dedicated thread that polls the connection's socket.
final class Listener: @unchecked Sendable {
    private let url: String
    private let appName: String
    private let channels: [String]
    private let logger: Logger
    private let continuation: AsyncStream<Store.ListenEvent>.Continuation
    private let stopped = Atomic<Bool>(false)

    init(url: String, appName: String, channels: [String], logger: Logger, continuation: AsyncStream<Store.ListenEvent>.Continuation) {
        self.url = url
        self.appName = appName
        self.channels = channels
        self.logger = logger
        self.continuation = continuation
    }

    func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "mesh.store.listen"
        t.start()
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    private func loop() {
        var backoffMs = 50
        var everConnected = false
        var inOutage = false
        let conn = PGConnection(url: url, id: 0)
        while !stopped.load(ordering: .relaxed) {
            do {
                try conn.connect(applicationName: appName)
                for ch in channels {
                    // Channel names are identifiers; quote them. They come from code, never from input.
                    try conn.executeScript("LISTEN \"\(ch.replacingOccurrences(of: "\"", with: "\"\""))\"")
                }
                continuation.yield(everConnected ? .reconnected : .listening)
                everConnected = true
                inOutage = false
                backoffMs = 50
                while !stopped.load(ordering: .relaxed) {
                    var pfd = pollfd(fd: conn.socket, events: Int16(POLLIN), revents: 0)
                    let r = poll(&pfd, 1, 250)
                    if r < 0 && errno != EINTR { throw StoreError.connectionLost("poll: \(errno)") }
                    if r > 0 {
                        for n in try conn.drainNotifications() { continuation.yield(.notification(n)) }
                    }
                }
            } catch {
                if stopped.load(ordering: .relaxed) { break }
                if everConnected && !inOutage { continuation.yield(.disconnected) }
                inOutage = true
                logger.warning("LISTEN connection failed; retrying", metadata: ["error": "\(error)", "retry.ms": "\(backoffMs)"])
                usleep(UInt32(backoffMs * 1000))
                backoffMs = min(backoffMs * 2, 2000)
            }
        }
        continuation.finish()
    }
}

enum StoreMetrics {
    static let retries = Counter(label: "mesh_store_transaction_retries_total")
}

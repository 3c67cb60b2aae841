import CPostgres
import Dispatch
import Foundation
import Glibc

/// One libpq connection. It is used by one transaction at a time (the pool guarantees that), and
/// every call on it runs on its own serial queue, off Swift's cooperative threads, because libpq
/// blocks.
final class PGConnection: @unchecked Sendable {
    let queue: DispatchQueue
    let url: String
    private(set) var conn: OpaquePointer?
    /// Prepared statement names by SQL text, valid until the connection is re-established.
    private var prepared: [String: String] = [:]
    private(set) var broken = false
    let id: Int

    init(url: String, id: Int) {
        self.url = url
        self.id = id
        queue = DispatchQueue(label: "mesh.store.conn.\(id)")
    }

    deinit {
        if let conn { PQfinish(conn) }
    }

    /// Connects (or reconnects). Runs on the connection's queue.
    func connect(applicationName: String, schema: String? = nil) throws {
        if let conn { PQfinish(conn) }
        conn = nil
        prepared.removeAll()
        let keys = ["dbname", "application_name", "connect_timeout", "options"]
        // A service's schema comes first on the search path, so its unqualified names are its own tables.
        let searchPath = schema.map { " -c search_path=\($0),public" } ?? ""
        let values = [url, applicationName, "5", "-c TimeZone=UTC -c DateStyle=ISO" + searchPath]
        let c = withCStrings(keys) { k in withCStrings(values) { v in PQconnectdbParams(k, v, 1) } }
        guard let c else { throw StoreError.connectFailed("out of memory") }
        if PQstatus(c) != CONNECTION_OK {
            let msg = String(cString: PQerrorMessage(c)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(c)
            throw StoreError.connectFailed(msg)
        }
        // Server notices ("relation already exists, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(c, { _, _ in }, nil)
        conn = c
        broken = false
    }

    var isHealthy: Bool {
        guard let conn, !broken else { return false }
        return PQstatus(conn) == CONNECTION_OK
    }

    func markBroken() { broken = true }

    /// The `BEGIN` of a transaction that has not sent a statement yet. The first statement takes it
    /// along in one pipeline (``executeBatch(_:)``), so a transaction costs one round trip less:
    /// `BEGIN` never travels alone.
    var pendingBegin: String?

    /// Runs a parameterised statement through a cached prepared statement.
    func execute(_ sql: String, _ params: [(any PGEncodable)?]) throws -> QueryResult {
        guard let conn else { throw StoreError.connectionLost("not connected") }
        if pendingBegin != nil { return try executeBatch([(sql, params)])[0] }
        let name: String
        if let n = prepared[sql] {
            name = n
        } else {
            name = "s\(prepared.count + 1)"
            let r = PQprepare(conn, name, sql, Int32(params.count), nil)
            defer { PQclear(r) }
            try check(r)
            prepared[sql] = name
        }
        let texts: [String?] = params.map { $0?.pgText }
        let result: OpaquePointer? = withOptionalCStrings(texts) { ptrs in
            PQexecPrepared(conn, name, Int32(texts.count), ptrs, nil, nil, 0)
        }
        defer { PQclear(result) }
        try check(result)
        return QueryResult(result!)
    }

    /// Sends the pending `BEGIN` (if any), each statement (prepared first if this connection has
    /// not seen it) and a sync in one libpq pipeline: one round trip for all of them. The server
    /// runs them in order, exactly as separate calls would; the sync does not end a transaction
    /// that `BEGIN` opened. The first error is the one thrown (the commands after it come back
    /// aborted and did nothing).
    func executeBatch(_ statements: [(sql: String, params: [(any PGEncodable)?])]) throws -> [QueryResult] {
        guard let conn else { throw StoreError.connectionLost("not connected") }
        if statements.isEmpty && pendingBegin == nil { return [] }
        func lost() -> StoreError {
            broken = true
            return StoreError.connectionLost(String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        enum Step { case begin, prepare(sql: String, name: String), statement }
        var steps: [Step] = []
        guard PQenterPipelineMode(conn) == 1 else { throw lost() }
        var sent = true
        if let begin = pendingBegin {
            pendingBegin = nil
            sent = PQsendQueryParams(conn, begin, 0, nil, nil, nil, nil, 0) == 1
            steps.append(.begin)
        }
        var preparing: [String: String] = [:]
        for (sql, params) in statements where sent {
            var name = prepared[sql] ?? preparing[sql]
            if name == nil {
                let fresh = "s\(prepared.count + preparing.count + 1)"
                sent = PQsendPrepare(conn, fresh, sql, Int32(params.count), nil) == 1
                steps.append(.prepare(sql: sql, name: fresh))
                preparing[sql] = fresh
                name = fresh
            }
            let texts: [String?] = params.map { $0?.pgText }
            if sent {
                sent = withOptionalCStrings(texts) { ptrs in PQsendQueryPrepared(conn, name!, Int32(texts.count), ptrs, nil, nil, 0) } == 1
                steps.append(.statement)
            }
        }
        if sent { sent = PQpipelineSync(conn) == 1 }
        guard sent else { throw lost() }

        // One result per command, each followed by a NULL, then the sync's own result.
        var results: [OpaquePointer] = []
        defer { results.forEach { PQclear($0) } }
        for _ in steps {
            guard let r = PQgetResult(conn) else { throw lost() }
            results.append(r)
            while let extra = PQgetResult(conn) { PQclear(extra) }
        }
        guard let sync = PQgetResult(conn) else { throw lost() }
        let synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC
        PQclear(sync)
        guard synced, PQexitPipelineMode(conn) == 1 else { throw lost() }

        // Statements the server prepared stay prepared, even if a later command failed.
        for (step, r) in zip(steps, results) {
            if case .prepare(let sql, let name) = step, PQresultStatus(r) == PGRES_COMMAND_OK { prepared[sql] = name }
        }
        var out: [QueryResult] = []
        out.reserveCapacity(statements.count)
        for (step, r) in zip(steps, results) {
            try check(r)
            if case .statement = step { out.append(QueryResult(r)) }
        }
        return out
    }

    /// Runs SQL without parameters through the simple protocol (several statements allowed).
    func executeScript(_ sql: String) throws {
        guard let conn else { throw StoreError.connectionLost("not connected") }
        if let begin = pendingBegin {
            pendingBegin = nil
            try executeScript(begin)
        }
        let r = PQexec(conn, sql)
        defer { PQclear(r) }
        try check(r)
    }

    private func check(_ r: OpaquePointer?) throws {
        guard let r else {
            broken = true
            throw StoreError.connectionLost(conn.map { String(cString: PQerrorMessage($0)) } ?? "no connection")
        }
        let status = PQresultStatus(r)
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY { return }
        let sqlstate = field(r, 67) ?? ""
        let message = field(r, 77) ?? String(cString: PQresultErrorMessage(r))
        if sqlstate.isEmpty || (conn.map { PQstatus($0) != CONNECTION_OK } ?? true) {
            broken = true
            throw StoreError.connectionLost(message.isEmpty ? String(cString: PQerrorMessage(conn)) : message)
        }
        let err = StoreError.from(sqlstate: sqlstate, message: message, constraint: field(r, 110), column: field(r, 99))
        if case .connectionLost = err { broken = true }
        throw err
    }

    private func field(_ r: OpaquePointer, _ code: Int32) -> String? {
        guard let p = PQresultErrorField(r, code) else { return nil }
        return String(cString: p)
    }

    /// The raw socket, for LISTEN loops.
    var socket: Int32 { conn.map { PQsocket($0) } ?? -1 }

    /// Reads pending input and returns the notifications received.
    func drainNotifications() throws -> [StoreNotification] {
        guard let conn else { throw StoreError.connectionLost("not connected") }
        if PQconsumeInput(conn) == 0 {
            broken = true
            throw StoreError.connectionLost(String(cString: PQerrorMessage(conn)))
        }
        var out: [StoreNotification] = []
        while let n = PQnotifies(conn) {
            out.append(StoreNotification(channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra)))
            PQfreemem(n)
        }
        return out
    }
}

/// A result copied out of libpq, so it can outlive the PGresult.
public struct QueryResult: Sendable {
    /// The rows returned.
    public let rows: [Row]
    /// Rows affected by INSERT/UPDATE/DELETE.
    public let affectedRows: Int

    init(_ r: OpaquePointer) {
        let nf = Int(PQnfields(r)), nt = Int(PQntuples(r))
        let cols = ColumnIndex((0..<nf).map { String(cString: PQfname(r, Int32($0))) })
        var total = 0
        for t in 0..<nt { for f in 0..<nf { total += Int(PQgetlength(r, Int32(t), Int32(f))) } }
        let base = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: total)
        var used = 0
        var spans: [(start: Int, length: Int)] = []
        spans.reserveCapacity(nt * nf)
        for t in 0..<nt {
            for f in 0..<nf {
                if PQgetisnull(r, Int32(t), Int32(f)) == 1 {
                    spans.append((0, -1))
                } else {
                    let len = Int(PQgetlength(r, Int32(t), Int32(f)))
                    spans.append((used, len))
                    if len > 0 {
                        let p = UnsafeRawPointer(PQgetvalue(r, Int32(t), Int32(f))!).assumingMemoryBound(to: UInt8.self)
                        (base.baseAddress! + used).initialize(from: p, count: len)
                    }
                    used += len
                }
            }
        }
        let storage = ResultStorage(columns: cols, fieldCount: nf, base: base, spans: spans)
        let rows = (0..<nt).map { Row(result: storage, row: $0) }
        self.rows = rows
        affectedRows = Int(String(cString: PQcmdTuples(r))) ?? 0
    }
}

/// A notification received by LISTEN.
public struct StoreNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String

    public init(channel: String, payload: String) {
        self.channel = channel
        self.payload = payload
    }
}

func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let dup = strings.map { strdup($0) } + [nil]
    defer { dup.forEach { free($0) } }
    return dup.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
}

func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    if strings.isEmpty { return body(nil) }
    let dup = strings.map { $0.map { strdup($0) } ?? nil }
    defer { dup.forEach { free($0) } }
    return dup.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
}

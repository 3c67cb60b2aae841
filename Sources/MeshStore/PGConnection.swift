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
    func connect(applicationName: String) throws {
        if let conn { PQfinish(conn) }
        conn = nil
        prepared.removeAll()
        let keys = ["dbname", "application_name", "connect_timeout", "options"]
        let values = [url, applicationName, "5", "-c TimeZone=UTC -c DateStyle=ISO"]
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

    /// Runs a parameterised statement through a cached prepared statement.
    func execute(_ sql: String, _ params: [(any PGEncodable)?]) throws -> QueryResult {
        guard let conn else { throw StoreError.connectionLost("not connected") }
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

    /// Runs SQL without parameters through the simple protocol (several statements allowed).
    func executeScript(_ sql: String) throws {
        guard let conn else { throw StoreError.connectionLost("not connected") }
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
        var rows: [Row] = []
        rows.reserveCapacity(nt)
        for t in 0..<nt {
            var vals: [String?] = []
            vals.reserveCapacity(nf)
            for f in 0..<nf {
                if PQgetisnull(r, Int32(t), Int32(f)) == 1 {
                    vals.append(nil)
                } else {
                    let len = Int(PQgetlength(r, Int32(t), Int32(f)))
                    let p = UnsafeRawPointer(PQgetvalue(r, Int32(t), Int32(f))!)
                    vals.append(String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self))
                }
            }
            rows.append(Row(columns: cols, values: vals))
        }
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

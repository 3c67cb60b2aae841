import Foundation
import MeshStore
import MeshTestSupport
import Synchronization
import Testing

private let schema = ServiceSchema(name: "storetest", migrations: [
    Migration(version: 1, name: "items", sql: "CREATE TABLE items (id bigserial PRIMARY KEY, name text UNIQUE NOT NULL, n int NOT NULL DEFAULT 0)"),
    Migration(version: 2, name: "counter", sql: "CREATE TABLE counter (k int PRIMARY KEY, v int NOT NULL); INSERT INTO counter VALUES (1, 0)"),
])

func withStore<T>(_ body: (Store, TestDatabase) async throws -> T) async throws -> T {
    let db = try await TestDatabase.create(prefix: "store")
    let store = Store(StoreConfiguration(url: db.url, poolSize: 6, schema: schema.name), logger: TestEnvironment.logger("test.store"))
    do {
        let v = try await body(store, db)
        store.close()
        await db.drop()
        return v
    } catch {
        store.close()
        await db.drop()
        throw error
    }
}

/// A thread-safe counter shared by concurrent transaction bodies.
final class Counter: Sendable {
    private let n = Atomic<Int>(0)
    func increment() { n.wrappingAdd(1, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}

@Suite(.timeLimit(.minutes(5)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct StoreTests {
    @Test func migrationsAreIdempotentAndRaceSafe() async throws {
        try await withStore { store, db in
            // Four independent pools (separate sessions, as separate processes would be) migrate at once.
            let results = try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let s = Store(StoreConfiguration(url: db.url, poolSize: 1, schema: schema.name), logger: TestEnvironment.logger("m"))
                        defer { s.close() }
                        return try await s.migrate(schema)
                    }
                }
                return try await group.reduce(into: [[Int]]()) { $0.append($1) }
            }
            // Exactly one of them applied each version; the others saw it applied.
            #expect(results.flatMap { $0 }.sorted() == [1, 2])
            #expect(try await store.migrate(schema).isEmpty)
            let versions = try await store.read { tx in try tx.query("SELECT version FROM schema_migrations ORDER BY version").map { try $0.decode("version", as: Int.self) } }
            #expect(versions == [1, 2])
        }
    }

    @Test func thrownErrorRollsBack() async throws {
        struct Boom: Error {}
        try await withStore { store, _ in
            try await store.migrate(schema)
            await #expect(throws: Boom.self) {
                try await store.write { tx in
                    try tx.execute("INSERT INTO items (name) VALUES ($1)", "ghost")
                    throw Boom()
                }
            }
            let count = try await store.read { tx in try tx.queryFirst("SELECT count(*) AS c FROM items")!.decode("c", as: Int.self) }
            #expect(count == 0)
        }
    }

    @Test func uniqueViolationIsTyped() async throws {
        try await withStore { store, _ in
            try await store.migrate(schema)
            try await store.write { tx in try tx.execute("INSERT INTO items (name) VALUES ($1)", "one") }
            await #expect(throws: StoreError.uniqueViolation(constraint: "items_name_key")) {
                try await store.write { tx in try tx.execute("INSERT INTO items (name) VALUES ($1)", "one") }
            }
        }
    }

    /// BEGIN travels with a transaction's first statement in one pipeline. Whatever that first
    /// statement does — succeed, fail with a typed error, fail to parse, or never run — the
    /// transaction's outcome and the connection afterwards must be what they were with a separate BEGIN.
    @Test func beginTravelsWithTheFirstStatement() async throws {
        struct Boom: Error {}
        try await withStore { store, _ in
            try await store.migrate(schema)
            // The isolation level asked for is the one the pipelined BEGIN set.
            let level = try await store.write(isolation: .serializable) { tx in
                try tx.queryFirst("SELECT current_setting('transaction_isolation') AS l")!.decode("l", as: String.self)
            }
            #expect(level == "serializable")
            let readOnly = try await store.read { tx in
                try tx.queryFirst("SELECT current_setting('transaction_read_only') AS r")!.decode("r", as: String.self)
            }
            #expect(readOnly == "on")
            // Two statements in one transaction: both or neither.
            try await store.write { tx in
                try tx.execute("INSERT INTO items (name) VALUES ($1)", "a")
                try tx.execute("INSERT INTO items (name) VALUES ($1)", "b")
            }
            await #expect(throws: Boom.self) {
                try await store.write { tx in
                    try tx.execute("INSERT INTO items (name) VALUES ($1)", "c")
                    throw Boom()
                }
            }
            // The first statement fails (typed), on a statement this connection has and has not prepared.
            for _ in 0..<8 {
                await #expect(throws: StoreError.uniqueViolation(constraint: "items_name_key")) {
                    try await store.write { tx in try tx.execute("INSERT INTO items (name) VALUES ($1)", "a") }
                }
            }
            // A statement that does not parse: a typed error, and the connections stay usable.
            await #expect(throws: StoreError.self) {
                try await store.write { tx in try tx.execute("INSERT INTO no_such_table VALUES ($1)", 1) }
            }
            // A body that runs nothing, or throws before running anything.
            let nothing = try await store.write { _ in 42 }
            #expect(nothing == 42)
            await #expect(throws: Boom.self) { try await store.write { _ -> Int in throw Boom() } }
            // Every connection of the pool is still in a clean state: no transaction left open.
            let names = try await withThrowingTaskGroup(of: [String].self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        try await store.read { tx in
                            try tx.query("SELECT name FROM items ORDER BY name").map { try $0.decode("name", as: String.self) }
                        }
                    }
                }
                return try await group.reduce(into: [[String]]()) { $0.append($1) }
            }
            #expect(names.allSatisfy { $0 == ["a", "b"] }, "\(names)")
            let open = try await store.query("""
                SELECT count(*) AS n FROM pg_stat_activity
                WHERE datname = current_database() AND state LIKE 'idle in transaction%'
                """)
            #expect(try open[0].decode("n", as: Int.self) == 0)
        }
    }

    /// Several statements in one round trip: in order, each seeing the ones before it; the first
    /// failure thrown, typed, and the transaction rolled back as a whole.
    @Test func batchesRunInOrderAndFailAsAWhole() async throws {
        try await withStore { store, _ in
            try await store.migrate(schema)
            let results = try await store.write { tx in
                try tx.batch([
                    Statement("INSERT INTO items (name, n) VALUES ($1, $2)", "x", 1),
                    Statement("INSERT INTO items (name, n) VALUES ($1, $2)", "y", 2),   // same text: prepared once
                    Statement("UPDATE items SET n = n * 10 WHERE name = $1", "x"),
                    Statement("SELECT name, n FROM items ORDER BY name"),
                ])
            }
            #expect(results.count == 4)
            #expect(results[0].affectedRows == 1 && results[2].affectedRows == 1)
            #expect(try results[3].rows.map { "\(try $0.decode("name", as: String.self))=\(try $0.decode("n", as: Int.self))" } == ["x=10", "y=2"])

            // A unique violation in the middle: typed, and the statements before it roll back with the rest.
            for _ in 0..<4 {
                await #expect(throws: StoreError.uniqueViolation(constraint: "items_name_key")) {
                    try await store.write { tx in
                        try tx.execute("UPDATE items SET n = n + 1 WHERE name = $1", "y")
                        try tx.batch([
                            Statement("INSERT INTO items (name) VALUES ($1)", "z"),
                            Statement("INSERT INTO items (name) VALUES ($1)", "x"),
                            Statement("INSERT INTO items (name) VALUES ($1)", "never"),
                        ])
                    }
                }
            }
            // A batch whose statement does not parse, as the transaction's first command.
            await #expect(throws: StoreError.self) {
                try await store.write { tx in
                    try tx.batch([Statement("INSERT INTO items (name) VALUES ($1)", "w"), Statement("SELEKT 1")])
                }
            }
            let rows = try await store.query("SELECT name, n FROM items ORDER BY name")
            #expect(try rows.map { "\(try $0.decode("name", as: String.self))=\(try $0.decode("n", as: Int.self))" } == ["x=10", "y=2"])
            // The statements prepared by failed batches still work on every connection.
            for i in 0..<12 {
                try await store.write { tx in try tx.batch([Statement("INSERT INTO items (name) VALUES ($1)", "after \(i)")]) }
            }
            #expect(try await store.query("SELECT count(*) AS c FROM items")[0].decode("c", as: Int.self) == 14)
            #expect(try await store.write { tx in try tx.batch([]) }.isEmpty)
        }
    }

    @Test func serializationFailuresAreRetried() async throws {
        try await withStore { store, _ in
            try await store.migrate(schema)
            let attempts = Counter()
            // Read-modify-write under SERIALIZABLE from many tasks: conflicts are certain, and every
            // increment must still land exactly once after retries.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await store.write(isolation: .serializable, retries: 50) { tx in
                            attempts.increment()
                            let v = try tx.queryFirst("SELECT v FROM counter WHERE k = 1")!.decode("v", as: Int.self)
                            try tx.execute("UPDATE counter SET v = $1 WHERE k = 1", v + 1)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let v = try await store.read { tx in try tx.queryFirst("SELECT v FROM counter")!.decode("v", as: Int.self) }
            #expect(v == 20)
            #expect(attempts.value > 20, "expected at least one retried serialization failure")
        }
    }

    @Test func listenNotifyIsDelivered() async throws {
        try await withStore { store, _ in
            let events = store.listen(["mesh_test"])
            var it = events.makeAsyncIterator()
            #expect(try await next(&it, "store event") == .listening)
            try await store.notify(channel: "mesh_test", payload: "hello")
            try await store.write { tx in try tx.execute("SELECT pg_notify('mesh_test', $1)", "from-tx") }
            #expect(try await next(&it, "store event") == .notification(StoreNotification(channel: "mesh_test", payload: "hello")))
            #expect(try await next(&it, "store event") == .notification(StoreNotification(channel: "mesh_test", payload: "from-tx")))
        }
    }

    @Test func valuesRoundTrip() async throws {
        try await withStore { store, _ in
            let id = UUID()
            let when = Date(timeIntervalSince1970: 1_790_000_000.123456)
            let bytes = ByteA([0, 1, 2, 0xfe, 0xff])
            let row = try await store.read { tx in
                try tx.queryFirst("""
                    SELECT $1::uuid AS u, $2::timestamptz AS t, $3::bytea AS b, $4::bool AS f, $5::text AS n,
                           $6::bigint AS big, 'Zürich 🚀'::text AS s, $7::bigint AS low, true AS yes, ''::text AS empty
                    """, id, when, bytes, false, nil, Int64.max, Int64.min)!
            }
            #expect(try row.decode("low", as: Int64.self) == Int64.min)
            #expect(try row.decode("yes", as: Bool.self) == true)
            #expect(try row.decode("empty", as: String.self) == "")
            #expect(throws: StoreError.self) { try row.decode("big", as: Int32.self) }
            #expect(throws: StoreError.self) { try row.decode("low", as: UInt64.self) }
            #expect(throws: StoreError.self) { try row.decode("s", as: UUID.self) }
            #expect(throws: StoreError.self) { try row.decode("empty", as: Int.self) }
            #expect(try row.decode("u", as: UUID.self) == id)
            #expect(abs(try row.decode("t", as: Date.self).timeIntervalSince1970 - when.timeIntervalSince1970) < 0.000_001)
            #expect(try row.decode("b", as: ByteA.self) == bytes)
            #expect(try row.decode("f", as: Bool.self) == false)
            #expect(try row.decodeIfPresent("n", as: String.self) == nil)
            #expect(try row.decode("big", as: Int64.self) == Int64.max)
            #expect(try row.decode("s", as: String.self) == "Zürich 🚀")
            #expect(throws: StoreError.self) { try row.decode("n", as: String.self) }
            #expect(throws: StoreError.self) { try row.decode("missing", as: String.self) }
            // Instants PostgreSQL cannot hold (and NaN) are written as its infinities, not a crash.
            let far = try await store.read { tx in
                try tx.queryFirst("""
                    SELECT $1::timestamptz = 'infinity' AS a, $2::timestamptz = '-infinity' AS b, $3::timestamptz = 'infinity' AS c,
                           $4::timestamptz > '294000-01-01 00:00:00+00' AND $4::timestamptz < 'infinity' AS d
                    """, Date(timeIntervalSince1970: 1e300), Date(timeIntervalSince1970: -1e300), Date(timeIntervalSince1970: .nan),
                    Date(timeIntervalSince1970: 9_223_372_036_853))!
            }
            #expect(try far.decode("a", as: Bool.self) && far.decode("b", as: Bool.self) && far.decode("c", as: Bool.self) && far.decode("d", as: Bool.self))
        }
    }

    /// Text arrays as PostgreSQL prints them, every quoting case included, and the rows of one
    /// result each keep their own values (they share one buffer).
    @Test func textArraysAndRowsRoundTrip() async throws {
        try await withStore { store, _ in
            let awkward = ["plain", "", "with space", "comma,inside", "quote\"inside", "back\\slash", "{brace}", "NULL", "null", "Zürich 🚀", "  padded  "]
            let json = String(decoding: try JSONEncoder().encode(awkward), as: UTF8.self)
            let row = try await store.read { tx in
                try tx.queryFirst("""
                    SELECT ARRAY(SELECT e.v FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY e(v, n) ORDER BY e.n) AS a,
                           ARRAY[]::text[] AS empty, ARRAY['x', NULL]::text[] AS with_null, ARRAY[['a'], ['b']]::text[] AS nested
                    """, json)!
            }
            #expect(try row.decode("a", as: [String].self) == awkward)
            #expect(try row.decode("empty", as: [String].self) == [])
            #expect(throws: StoreError.self) { try row.decode("with_null", as: [String].self) }
            #expect(throws: StoreError.self) { try row.decode("nested", as: [String].self) }
            let rows = try await store.read { tx in
                try tx.query("SELECT g AS n, CASE WHEN g % 2 = 0 THEN NULL ELSE repeat('v', g) END AS s FROM generate_series(1, 9) g ORDER BY g")
            }
            #expect(try rows.map { try $0.decode("n", as: Int.self) } == Array(1...9))
            #expect(try rows.map { try $0.decodeIfPresent("s", as: String.self) } == (1...9).map { $0 % 2 == 0 ? nil : String(repeating: "v", count: $0) })
        }
    }

    /// A timestamp read as microseconds is exactly PostgreSQL's own count, before and after 1970.
    @Test func timestampsReadAsExactMicroseconds() async throws {
        try await withStore { store, _ in
            let rows = try await store.read { tx in
                try tx.query("""
                    SELECT t, (extract(epoch FROM t) * 1000000)::bigint AS us
                    FROM unnest(ARRAY['2026-12-07 15:40:01.123456+00', '2026-12-07 15:40:01+00', '1969-12-31 23:59:59.999999+00',
                                      '1900-02-28 01:02:03.5+00', '9999-12-31 23:59:59.999999+00', now()::text]::timestamptz[]) t
                    """)
            }
            #expect(rows.count == 6)
            for r in rows {
                #expect(try r.decode("t", as: PGMicroseconds.self).value == r.decode("us", as: Int64.self), "\((try? r.decode("t", as: String.self)) ?? "")")
            }
        }
    }

    /// Columns are found by name among many (the lookup table is open-addressed: names that
    /// collide must still each find their own), and a repeated name gives its first column.
    @Test func everyColumnIsFoundByName() async throws {
        try await withStore { store, _ in
            // 300 generated columns c0…c299, then a few fixed names (the SQL type takes no runtime text).
            try await store.write { tx in
                try tx.execute("""
                    DO $$ BEGIN
                      EXECUTE 'CREATE VIEW wide AS SELECT '
                        || (SELECT string_agg(format('%s::int AS c%s', g, g), ', ' ORDER BY g) FROM generate_series(0, 299) g)
                        || ', 300 AS id, 301 AS tenant_id, 302 AS t_id, 303 AS owner_user_id, 304 AS x, 305 AS "ü_col"';
                    END $$
                    """)
            }
            let row = try await store.read { tx in try tx.queryFirst("SELECT *, 7 AS id, 8 AS x FROM wide")! }
            let names = (0..<300).map { "c\($0)" } + ["id", "tenant_id", "t_id", "owner_user_id", "x", "ü_col"]
            for (i, n) in names.enumerated() { #expect(try row.decode(n, as: Int.self) == i, "\(n)") }
            // Read backwards, the guess (the column after the last one found) always misses; read
            // after "ü_col", the column it guesses is the second "id" and "x", and still the first wins.
            for (i, n) in names.enumerated().reversed() { #expect(try row.decode(n, as: Int.self) == i, "\(n)") }
            #expect(try row.decode("ü_col", as: Int.self) == 305 && row.decode("id", as: Int.self) == 300)
            #expect(try row.decode("id", as: Int.self) == 300 && row.decode("x", as: Int.self) == 304)
            for absent in ["c300", "C1", "c", "ü", "tenant", "id ", ""] {
                #expect(throws: StoreError.self, "\(absent)") { try row.decode(absent, as: Int.self) }
            }
        }
    }

    @Test func parametersCannotInjectSQL() async throws {
        try await withStore { store, _ in
            try await store.migrate(schema)
            let evil = "x'); DROP TABLE items; --"
            try await store.write { tx in try tx.execute("INSERT INTO items (name) VALUES ($1)", evil) }
            let name = try await store.read { tx in try tx.queryFirst("SELECT name FROM items")!.decode("name", as: String.self) }
            #expect(name == evil)
        }
    }
}

@Suite(.timeLimit(.minutes(5)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .serialized)
struct StoreRecoveryTests {
    @Test func lostConnectionIsTypedAndThePoolRecovers() async throws {
        let infra = try PrivateInfra(name: "pgrestart")
        defer { infra.shutdown() }
        let store = Store(StoreConfiguration(url: infra.databaseURL, poolSize: 2), logger: TestEnvironment.logger("t"))
        let one = try await store.read { tx in try tx.queryFirst("SELECT 1 AS one")!.decode("one", as: Int.self) }
        #expect(one == 1)
        let events = store.listen(["restart_test"])
        var it = events.makeAsyncIterator()
        #expect(try await next(&it, "store event") == .listening)

        try infra.stopPostgres()
        do {
            _ = try await store.read { tx in try tx.query("SELECT 1") }
            Issue.record("a query against a stopped server must fail")
        } catch let e as StoreError {
            switch e {
            case .connectionLost, .connectFailed: break
            default: Issue.record("expected connectionLost/connectFailed, got \(e)")
            }
        }
        #expect(try await next(&it, "store event") == .disconnected)

        try infra.start()
        // The pool reconnects on the next transaction, and the listener re-subscribes.
        try await waitUntil("the pool reconnects after the restart", interval: .milliseconds(100)) {
            (try? await store.read({ tx in try tx.query("SELECT 1") })) != nil
        }
        #expect(try await next(&it, "store event") == .reconnected)
        try await store.notify(channel: "restart_test", payload: "back")
        #expect(try await next(&it, "store event") == .notification(StoreNotification(channel: "restart_test", payload: "back")))
        store.close()
    }
}

/// Rows decode from the bytes of a result (`init(pgBytes:)`), other callers from text
/// (`init(pgText:)`): both must read every input alike, the malformed ones included.
struct DecodingAgreementTests {
    func agree<T: PGDecodable & Equatable>(_ type: T.Type, _ inputs: [String]) {
        for text in inputs {
            var copy = text
            let fromBytes = copy.withUTF8 { T(pgBytes: $0) }
            #expect(fromBytes == T(pgText: text), "\(T.self) from \"\(text)\"")
        }
    }

    /// Integers have one parser for bytes and text: what it reads, as PostgreSQL prints numbers.
    @Test func integersReadWhatPostgreSQLPrints() {
        let cases: [(String, Int64?, Int32?, UInt32?, UInt64?)] = [
            ("0", 0, 0, 0, 0), ("-0", 0, 0, 0, 0), ("+7", 7, 7, 7, 7), ("42", 42, 42, 42, 42), ("-42", -42, -42, nil, nil),
            ("9223372036854775807", .max, nil, nil, 9_223_372_036_854_775_807), ("-9223372036854775808", .min, nil, nil, nil),
            ("9223372036854775808", nil, nil, nil, 9_223_372_036_854_775_808), ("-9223372036854775809", nil, nil, nil, nil),
            ("4294967295", 4_294_967_295, nil, .max, 4_294_967_295), ("4294967296", 4_294_967_296, nil, nil, 4_294_967_296),
            ("2147483647", 2_147_483_647, .max, 2_147_483_647, 2_147_483_647), ("-2147483648", -2_147_483_648, .min, nil, nil),
            ("2147483648", 2_147_483_648, nil, 2_147_483_648, 2_147_483_648), ("-2147483649", -2_147_483_649, nil, nil, nil),
        ]
        for (text, i64, i32, u32, u64) in cases {
            #expect(Int64(pgText: text) == i64 && Int(pgText: text).map(Int64.init) == i64, "\(text)")
            #expect(Int32(pgText: text) == i32 && UInt32(pgText: text) == u32 && UInt64(pgText: text) == u64, "\(text)")
        }
        for bad in ["", "-", "+", "1.5", " 1", "1 ", "0x10", "١", "1e3", "--1", "+-1"] {
            #expect(Int64(pgText: bad) == nil && Int32(pgText: bad) == nil && UInt64(pgText: bad) == nil, "\(bad)")
        }
    }

    @Test func bytesAndTextAgree() {
        agree(Bool.self, ["t", "f", "true", "false", "1", "0", "T", "", "yes"])
        agree(UUID.self, ["123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000", "123e4567e89b12d3a456426614174000",
                          "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000", "g23e4567-e89b-12d3-a456-426614174000", ""])
        agree(Date.self, ["2026-11-25 08:50:01.123456+00", "2026-11-25 08:50:01+00", "2026-11-25 08:50:01.5+00:00", "2026-11-25 08:50:01+01",
                          "2026-11-25 08:50:01", "2026-11-25", "infinity", ""])
        agree(PGMicroseconds.self, ["2026-11-25 08:50:01.123456+00", "1969-12-31 23:59:59.999999+00", "2026-11-25 08:50:01+01", ""])
        agree(ByteA.self, ["\\x", "\\x00ff", "\\x0", "\\xzz", "00ff", ""])
        agree([String].self, ["{}", "{a,b}", "{\"a b\",\"\"}", "{NULL}", "{null}", "{\"NULL\"}", "{a,}", "{{a}}", "a", "", "{\"a}"])
        agree(String.self, ["", "plain", "Zürich 🚀"])
    }
}

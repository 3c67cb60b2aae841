import Logging

/// The tables of one service: a PostgreSQL schema that only that service reads and writes, and the
/// migrations that build it. Every service that has tables declares one (docs/architecture.md).
public struct ServiceSchema: Sendable {
    /// The PostgreSQL schema name, e.g. `provision`.
    public var name: String
    public var migrations: [Migration]

    public init(name: String, migrations: [Migration]) {
        self.name = name
        self.migrations = migrations
    }
}

/// One schema change. Versions are applied in ascending order, each in its own transaction, and
/// recorded in the schema's own `schema_migrations`.
public struct Migration: Sendable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

extension Store {
    /// A fixed advisory-lock key that serialises migrations across every process sharing the database.
    static let migrationLockKey: Int64 = 0x6d65_7368_6d69_6772  // "meshmigr"

    /// Applies the schema's migrations not yet applied, in the store's schema (which must be
    /// `schema.name`). Safe to call from many processes at once: they queue on an advisory lock, and
    /// each sees what the others applied. Returns the versions it applied.
    @discardableResult
    public func migrate(_ schema: ServiceSchema) async throws -> [Int] {
        precondition(configuration.schema == schema.name, "a store migrates only its own schema")
        let sorted = schema.migrations.sorted { $0.version < $1.version }
        precondition(Set(sorted.map(\.version)).count == sorted.count, "duplicate migration versions")
        let logger = self.logger, name = schema.name
        precondition(name.allSatisfy { $0.isLowercase || $0 == "_" }, "schema names are lowercase identifiers")
        return try await withConnection { conn in
            if !conn.isHealthy { try conn.connect(applicationName: "mesh-migrate", schema: name) }
            // Session-level lock on this connection; released below even when a migration fails.
            _ = try conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", [Int32(truncatingIfNeeded: Self.migrationLockKey), name])
            defer { _ = try? conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", [Int32(truncatingIfNeeded: Self.migrationLockKey), name]) }
            try conn.executeScript("CREATE SCHEMA IF NOT EXISTS \(name)")
            try conn.executeScript("""
                CREATE TABLE IF NOT EXISTS \(name).schema_migrations (
                  version bigint PRIMARY KEY,
                  name text NOT NULL,
                  applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let applied = Set(try conn.execute("SELECT version FROM \(name).schema_migrations", []).rows.map { try $0.decode("version", as: Int.self) })
            var done: [Int] = []
            for m in sorted where !applied.contains(m.version) {
                try conn.executeScript("BEGIN")
                do {
                    try conn.executeScript(m.sql)
                    _ = try conn.execute("INSERT INTO \(name).schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name])
                    try conn.executeScript("COMMIT")
                } catch {
                    try? conn.executeScript("ROLLBACK")
                    throw error
                }
                logger.info("migration applied", metadata: ["db.schema": "\(name)", "db.migration": "\(m.version) \(m.name)"])
                done.append(m.version)
            }
            return done
        }
    }
}

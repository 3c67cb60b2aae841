import Logging

/// One schema change. Versions are applied in ascending order, each in its own transaction, and
/// recorded in `schema_migrations`.
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

    /// Applies the migrations not yet applied. Safe to call from many processes at once: they queue
    /// on an advisory lock, and each sees what the others applied. Returns the versions it applied.
    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws -> [Int] {
        let sorted = migrations.sorted { $0.version < $1.version }
        precondition(Set(sorted.map(\.version)).count == sorted.count, "duplicate migration versions")
        let logger = self.logger
        return try await withConnection { conn in
            if !conn.isHealthy { try conn.connect(applicationName: "mesh-migrate") }
            // Session-level lock on this connection; released below even when a migration fails.
            _ = try conn.execute("SELECT pg_advisory_lock($1)", [Self.migrationLockKey])
            defer { _ = try? conn.execute("SELECT pg_advisory_unlock($1)", [Self.migrationLockKey]) }
            try conn.executeScript("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                  version bigint PRIMARY KEY,
                  name text NOT NULL,
                  applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let applied = Set(try conn.execute("SELECT version FROM schema_migrations", []).rows.map { try $0.decode("version", as: Int.self) })
            var done: [Int] = []
            for m in sorted where !applied.contains(m.version) {
                try conn.executeScript("BEGIN")
                do {
                    try conn.executeScript(m.sql)
                    _ = try conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name])
                    try conn.executeScript("COMMIT")
                } catch {
                    try? conn.executeScript("ROLLBACK")
                    throw error
                }
                logger.info("migration applied", metadata: ["db.migration": "\(m.version) \(m.name)"])
                done.append(m.version)
            }
            return done
        }
    }
}

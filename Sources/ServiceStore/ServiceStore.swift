import ArgumentParser
import MeshDomain
import Foundation
import Logging
import MeshStore
import ServiceKit

/// The database options of a service that has tables.
public struct StoreOptions: ParsableArguments, Sendable {
    @Option(name: .customLong("database-url"), help: "PostgreSQL URL; the password may come from MESH_DATABASE_PASSWORD instead (env MESH_DATABASE_URL).")
    public var databaseURL: String = Env.string("MESH_DATABASE_URL", "postgresql://mesh@127.0.0.1:5432/mesh")

    @Option(name: .customLong("db-pool-size"), help: "Pooled database connections (env MESH_DB_POOL_SIZE).")
    public var dbPoolSize: Int = Env.int("MESH_DB_POOL_SIZE", 8)

    public init() {}

    /// The secrets of the database connection.
    public static let secrets = [SecretSetting("MESH_DATABASE_PASSWORD", "The database password, added to --database-url.")]

    public func validate() throws {
        guard (1...1000).contains(dbPoolSize) else { throw ValidationError("--db-pool-size (MESH_DB_POOL_SIZE) must be between 1 and 1000") }
    }

    /// The database URL with the password from MESH_DATABASE_PASSWORD[_FILE] added, if set.
    public func resolvedDatabaseURL() throws -> String {
        guard let password = try Env.secret("MESH_DATABASE_PASSWORD"), var comps = URLComponents(string: databaseURL) else {
            return databaseURL
        }
        comps.password = password
        return comps.string ?? databaseURL
    }
}

/// Opens a service's own schema: a store whose connections see the service's tables first, with
/// the schema's migrations applied (waiting, with backoff, up to two minutes for PostgreSQL).
public enum ServiceStore {
    public static func open(_ options: StoreOptions, schema: ServiceSchema, applicationName: String, logger: Logger) async throws -> Store {
        let store = Store(StoreConfiguration(url: try options.resolvedDatabaseURL(), poolSize: options.dbPoolSize,
                                             applicationName: applicationName, schema: schema.name), logger: logger)
        try await migrateWithRetry(store, schema: schema, logger: logger)
        return store
    }

    /// Applies the schema, waiting (with backoff, up to two minutes) for PostgreSQL to accept connections.
    public static func migrateWithRetry(_ store: Store, schema: ServiceSchema, logger: Logger) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        var delay = Duration.milliseconds(200)
        while true {
            do {
                try await store.migrate(schema)
                return
            } catch let e as StoreError {
                switch e {
                case .connectFailed, .connectionLost, .poolTimeout:
                    if ContinuousClock.now > deadline { throw e }
                    logger.warning("database not reachable yet; retrying", metadata: ["error": "\(e)"])
                    try await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                default:
                    throw e
                }
            }
        }
    }
}

extension MeshError {
    /// The one mapping of storage failures to domain errors, for every service with tables: a
    /// `MeshError` passes through; a database that cannot be reached or lost the connection (or
    /// cancelled a statement that ran too long) is `unavailable`, which the caller may retry;
    /// anything else is `internal`. The cause is logged here, and never shown to the client.
    public static func fromStore(_ error: any Error, logger: Logger, metadata: Logger.Metadata = [:]) -> MeshError {
        switch error {
        case let e as MeshError:
            return e
        case let e as StoreError:
            switch e {
            case .connectionLost, .connectFailed, .poolTimeout, .closed, .queryCanceled:
                logger.error("database unavailable", metadata: metadata.merging(["error": "\(e)"]) { _, new in new })
                return .unavailable("database unavailable")
            default:
                logger.error("database error", metadata: metadata.merging(["error": "\(e)"]) { _, new in new })
                return .internal("internal error")
            }
        default:
            logger.error("unexpected error", metadata: metadata.merging(["error": "\(error)"]) { _, new in new })
            return .internal("internal error")
        }
    }
}

import Foundation
import Logging
import MeshBus
import MeshStore
import ServiceLifecycle

/// What a service gets to build itself from.
public struct ServiceContext: Sendable {
    public let bus: BusConnection
    /// nil for services that do not use the database.
    public let store: Store?
    public let logger: Logger
}

/// The start-up every service executable shares: logging and metrics, the database (migrated, with
/// retries while PostgreSQL comes up), the bus, the ADR-32 service, and a `ServiceGroup` that stops
/// everything on SIGTERM/SIGINT.
public enum ServiceHost {
    /// Builds and runs a service until it is told to stop.
    public static func run(
        name: String, description: String, common: CommonOptions, useStore: Bool,
        inboxPrefix: String = "_INBOX",
        build: (ServiceContext) async throws -> (endpoints: [ServiceEndpoint], services: [any Service])
    ) async throws {
        _ = Observability.bootstrap(level: common.logLevel, format: common.logFormat)
        var logger = Logger(label: name)
        logger[metadataKey: "instance"] = "\(common.instance)"

        var store: Store?
        if useStore {
            let s = Store(StoreConfiguration(url: try common.resolvedDatabaseURL(), poolSize: common.dbPoolSize,
                                             applicationName: name), logger: logger)
            try await migrateWithRetry(s, logger: logger)
            store = s
        }
        let bus = try await BusConnection.connect(try common.busConfiguration(name: name, inboxPrefix: inboxPrefix), logger: logger)
        let context = ServiceContext(bus: bus, store: store, logger: logger)
        let (endpoints, extra) = try await build(context)
        var services: [any Service] = [BusConnectionService(connection: bus)]
        // Every service answers $SRV.PING/INFO/STATS, even one with no endpoints of its own (the Gateway).
        services.append(try BusService(connection: bus, name: name, version: MeshVersion.current, description: description,
                                       metadata: ["instance": common.instance], endpoints: endpoints, logger: logger))
        services.append(contentsOf: extra)
        if let metrics = MetricsServer(address: common.metricsAddress, logger: logger) { services.append(metrics) }
        logger.info("starting", metadata: ["service.version": "\(MeshVersion.current)"])
        try await ServiceRunner.run(services, logger: logger)
        store?.close()
        logger.info("stopped")
    }

    /// Applies the schema, waiting (with backoff, up to two minutes) for PostgreSQL to accept connections.
    public static func migrateWithRetry(_ store: Store, logger: Logger) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        var delay = Duration.milliseconds(200)
        while true {
            do {
                try await store.migrate(MeshSchema.migrations)
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

import Foundation
import Logging
import MeshBus
import MeshDomain
import ServiceLifecycle

/// What a service gets to build itself from.
public struct ServiceContext: Sendable {
    public let bus: BusConnection
    public let logger: Logger
}

/// What a service is made of: the request endpoints it serves on the bus, its long-running parts, and
/// what to close after they stopped (a database pool, say).
public struct ServiceParts: Sendable {
    public var endpoints: [ServiceEndpoint]
    public var services: [any Service]
    public var onStop: @Sendable () -> Void
    /// The id the service announces on `$SRV.*` (a random one when nil).
    public var serviceID: String?
    /// Extra `$SRV.INFO` metadata.
    public var metadata: [String: String]

    public init(endpoints: [ServiceEndpoint] = [], services: [any Service] = [], serviceID: String? = nil, metadata: [String: String] = [:],
                onStop: @escaping @Sendable () -> Void = {}) {
        self.endpoints = endpoints
        self.services = services
        self.serviceID = serviceID
        self.metadata = metadata
        self.onStop = onStop
    }
}

/// The start-up every executable shares: logging and metrics, the bus, the ADR-32 service, and a
/// `ServiceGroup` that stops everything on SIGTERM/SIGINT. A service with tables opens its own store
/// in `build` (ServiceStore), so executables without a database link no database library.
public enum ServiceHost {
    /// Builds and runs a service until it is told to stop.
    public static func run(
        name: String, description: String, common: CommonOptions, inboxPrefix: String = "_INBOX",
        build: (ServiceContext) async throws -> ServiceParts
    ) async throws {
        try await run(name: name, description: description, common: common, connect: { logger in
            (try await BusConnection.connect(try common.busConfiguration(name: name, inboxPrefix: inboxPrefix), logger: logger), (), logger)
        }, build: { ctx, _ in try await build(ctx) })
    }

    /// Builds and runs a service whose bus connection needs more than the common options (a node
    /// registers first, then connects with its own identity): `connect` makes the connection and
    /// whatever `build` needs besides, and may add metadata to the logger it returns.
    public static func run<Prepared: Sendable>(
        name: String, description: String, common: CommonOptions,
        connect: (Logger) async throws -> (BusConnection, Prepared, Logger),
        build: (ServiceContext, Prepared) async throws -> ServiceParts
    ) async throws {
        _ = Observability.bootstrap(level: common.logLevel, format: common.logFormat)
        var initial = Logger(label: name)
        initial[metadataKey: "instance"] = "\(common.instanceName)"
        let (bus, prepared, logger) = try await connect(initial)
        let parts = try await build(ServiceContext(bus: bus, logger: logger), prepared)
        var services: [any Service] = [BusConnectionService(connection: bus)]
        // Every service answers $SRV.PING/INFO/STATS, even one with no endpoints of its own (the Gateway).
        services.append(try BusService(connection: bus, name: name, id: parts.serviceID, version: MeshVersion.current, description: description,
                                       metadata: parts.metadata.merging(["instance": common.instanceName]) { a, _ in a },
                                       endpoints: parts.endpoints, logger: logger))
        services.append(contentsOf: parts.services)
        if let metrics = MetricsServer(address: common.metricsAddress, logger: logger) { services.append(metrics) }
        logger.info("starting", metadata: ["service.version": "\(MeshVersion.current)"])
        defer { parts.onStop() }
        try await ServiceRunner.run(services, logger: logger)
        logger.info("stopped")
    }
}

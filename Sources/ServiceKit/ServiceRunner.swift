import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import ServiceLifecycle
import SwiftProtobuf

/// Keeps the bus connection open while the other services run, and drains it last on shutdown
/// (it is the first service in the group, and groups stop in reverse order).
///
/// nats.c retries a lost connection for ever, except after an authentication error while
/// (re)connecting: then it closes the connection for good. A process whose bus is closed serves
/// nothing, so instead of idling on a dead connection it stops with an error and a non-zero exit,
/// and its supervisor (compose's `restart:`, systemd's `Restart=`) starts it again.
public struct BusConnectionService: Service {
    public let connection: BusConnection

    public init(connection: BusConnection) { self.connection = connection }

    public func run() async throws {
        let events = connection.events()
        let closed = await cancelWhenGracefulShutdown { () async -> Bool in
            if connection.isClosed { return true }
            for await event in events where event == .closed { return true }
            return false
        }
        if closed && !connection.isClosing {
            throw BusError.closed
        }
        await connection.drain(timeout: .seconds(3))
    }
}

/// Runs an executable's services until SIGTERM or SIGINT, then shuts them down gracefully within
/// a bounded time (8 s graceful, 1 s forced), so every service exits 0 well within 10 s.
public enum ServiceRunner {
    public static func run(_ services: [any Service], logger: Logger) async throws {
        var config = ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        config.maximumGracefulShutdownDuration = .seconds(8)
        config.maximumCancellationDuration = .seconds(1)
        try await ServiceGroup(configuration: config).run()
    }
}

extension ServiceEndpoint {
    /// An endpoint that decodes a protobuf request and encodes a protobuf response. Bytes that do
    /// not decode as `Request` get an `invalidArgument` error instead of reaching the handler; any
    /// thrown ``MeshError`` goes back to the caller as a typed error. The endpoint's `$SRV.INFO`
    /// metadata names both message types (`request`, `response`: protobuf full names).
    public static func proto<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ name: String, subject: String, queueGroup: String? = BusService.defaultQueueGroup, maxConcurrency: Int = 64,
        _ handler: @escaping @Sendable (Request, BusRequest) async throws -> Response
    ) -> ServiceEndpoint {
        ServiceEndpoint(name: name, subject: subject, queueGroup: queueGroup,
                        metadata: ["request": Request.protoMessageName, "response": Response.protoMessageName],
                        maxConcurrency: maxConcurrency) { raw in
            let request: Request
            do {
                request = try Request(serializedBytes: raw.payload)
            } catch {
                throw MeshError.invalidArgument(field: "", message: "malformed \(Request.protoMessageName) message")
            }
            do {
                return try await handler(request, raw).serializedBytes()
            } catch let e as MeshError {
                throw e
            } catch is CancellationError {
                throw MeshError.unavailable("service shutting down")
            }
        }
    }
}

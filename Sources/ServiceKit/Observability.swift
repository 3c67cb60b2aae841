import Foundation
import Logging
import Metrics
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import Prometheus
import ServiceLifecycle

/// Process-wide logging and metrics set-up for the executables. Libraries never call this; they
/// take a `Logger` and use the global metrics factory.
public enum Observability {
    /// The Prometheus registry behind `/metrics`.
    static let registry = PrometheusCollectorRegistry()

    private static let once: Void = {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }()

    /// Bootstraps swift-log (text or JSON lines on stderr) and swift-metrics (Prometheus).
    public static func bootstrap(level: String, format: String) -> Logger.Level {
        let lvl = Logger.Level(rawValue: level.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var h: any LogHandler = format == "json" ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            h.logLevel = lvl
            return h
        }
        _ = once
        return lvl
    }

    /// Ensures metrics are collected even when logging was set up elsewhere (tests).
    public static func bootstrapMetrics() { _ = once }

    /// The current metrics in Prometheus text format.
    public static func prometheusText() -> String {
        var buffer = [UInt8]()
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}

/// One JSON object per line: `{"ts","level","label","msg", ...metadata}`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object: [String: String] = ["ts": ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withInternetDateTime, .withFractionalSeconds]),
                                        "level": event.level.rawValue, "label": label, "msg": event.message.description]
        for (k, v) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { object[k] = "\(v)" }
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        data.append(0x0a)
        FileHandle.standardError.write(data)
    }
}

/// Serves `GET /metrics` (Prometheus text format) and `GET /healthz` on a small NIO HTTP server.
public struct MetricsServer: Service {
    let host: String
    let port: Int
    let logger: Logger

    /// `address` is `host:port`; nil when it is empty (no metrics endpoint) or not `host:port`.
    public init?(address: String, logger: Logger) {
        guard let (host, port) = Self.parse(address) else { return nil }
        self.host = host
        self.port = port
        self.logger = logger
    }

    /// The host and port of `host:port` (an IPv6 host in brackets loses them), nil for anything else.
    public static func parse(_ address: String) -> (host: String, port: Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        let host = address[..<colon]
        guard !host.isEmpty else { return nil }
        return (String(host.hasPrefix("[") && host.hasSuffix("]") ? host.dropFirst().dropLast() : host), port)
    }

    public func run() async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap { channel.pipeline.addHandler(MetricsHandler()) }
            }
            .bind(host: host, port: port).get()
        logger.info("metrics listening", metadata: ["http.address": "\(host):\(port)"])
        try? await gracefulShutdown()
        try await channel.close()
    }
}

final class MetricsHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let (status, body): (HTTPResponseStatus, String) = switch head.uri {
        case "/metrics": (.ok, Observability.prometheusText())
        case "/healthz": (.ok, "ok\n")
        default: (.notFound, "not found\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: head.uri == "/metrics" ? "text/plain; version=0.0.4" : "text/plain")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

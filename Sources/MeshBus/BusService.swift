import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// A request delivered to a service endpoint.
public struct BusRequest: Sendable {
    public var subject: String
    public var payload: [UInt8]
    public var headers: BusHeaders
    /// Where the reply goes; nil for a plain publish (the handler's result is then dropped).
    public var reply: String?

    /// The caller's request id header, if any.
    public var requestID: String? { headers[BusHeaderName.requestID] }
}

/// One endpoint of a service: a subject (wildcards allowed), the queue group that spreads requests
/// over replicas, and the handler.
public struct ServiceEndpoint: Sendable {
    public var name: String
    public var subject: String
    /// nil subscribes without a queue group (every instance gets every message).
    public var queueGroup: String?
    public var metadata: [String: String]
    /// Requests handled at once by this endpoint on this instance.
    public var maxConcurrency: Int
    public var handler: @Sendable (BusRequest) async throws -> [UInt8]

    public init(name: String, subject: String, queueGroup: String? = BusService.defaultQueueGroup,
                metadata: [String: String] = [:], maxConcurrency: Int = 64,
                handler: @escaping @Sendable (BusRequest) async throws -> [UInt8]) {
        self.name = name
        self.subject = subject
        self.queueGroup = queueGroup
        self.metadata = metadata
        self.maxConcurrency = maxConcurrency
        self.handler = handler
    }
}

/// A service on the bus, discoverable and observable through the NATS service protocol (ADR-32):
/// it answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (for all services, its name, and its id),
/// keeps per-endpoint request, error and processing-time counts, and reports errors in the
/// `Nats-Service-Error` and `Nats-Service-Error-Code` headers.
///
/// Run it inside a `ServiceGroup`: on graceful shutdown it drains its subscriptions, finishes the
/// requests in flight, and returns.
public final class BusService: Service, Sendable {
    /// The queue group every endpoint uses unless told otherwise.
    public static let defaultQueueGroup = "q"

    /// The kind of service, shared by all its replicas (A-Z, a-z, 0-9, '-', '_').
    public let name: String
    /// The instance id, unique per process.
    public let id: String
    public let version: String
    public let serviceDescription: String
    public let metadata: [String: String]
    let endpoints: [ServiceEndpoint]
    let connection: BusConnection
    let logger: Logger
    let started = Date()
    private let stats: Mutex<[EndpointStats]>
    private let readiness = Mutex<[CheckedContinuation<Void, Never>]?>([])

    struct EndpointStats {
        var requests = 0
        var errors = 0
        var lastError = ""
        var processingNanos: Int64 = 0
    }

    /// Creates the service. Nothing is subscribed until ``run()``.
    ///
    /// - Parameter id: the instance id; a new unique one when nil. A fixed id (a subject token) lets
    ///   a bus user be permitted to answer discovery under that id only.
    public init(connection: BusConnection, name: String, id: String? = nil, version: String, description: String = "",
                metadata: [String: String] = [:], endpoints: [ServiceEndpoint], logger: Logger) throws {
        guard !name.isEmpty, name.utf8.allSatisfy({ c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f
        }) else { throw BusError.invalidSubject("service name \(name)") }
        guard SemVer.isValid(version) else { throw BusError.invalidSubject("service version \(version) is not SemVer") }
        for e in endpoints { try Subjects.validate(e.subject, wildcards: true) }
        self.connection = connection
        self.name = name
        if let id, !Subjects.isToken(id) { throw BusError.invalidSubject("service id " + id) }
        self.id = id ?? Nuid.next()
        self.version = version
        self.serviceDescription = description
        self.metadata = metadata
        self.endpoints = endpoints
        self.stats = Mutex(endpoints.map { _ in EndpointStats() })
        var l = logger
        l[metadataKey: "service.name"] = "\(name)"
        l[metadataKey: "service.id"] = "\(self.id)"
        self.logger = l
    }

    /// Subscribes every endpoint and the discovery subjects, then serves until graceful shutdown
    /// or cancellation.
    public func run() async throws {
        let subs = try endpoints.map { try connection.subscribe($0.subject, queue: $0.queueGroup) }
        let discovery: [(BusSubscription, Verb)] = try Verb.allCases.flatMap { verb in
            try ["$SRV.\(verb.rawValue)", "$SRV.\(verb.rawValue).\(name)", "$SRV.\(verb.rawValue).\(name).\(id)"].map {
                (try connection.subscribe($0), verb)
            }
        }
        // Make sure the server has every subscription before anyone is told we are ready.
        try? await connection.flush()
        let waiters = readiness.withLock { r -> [CheckedContinuation<Void, Never>] in defer { r = nil }; return r ?? [] }
        waiters.forEach { $0.resume() }
        logger.info("service started", metadata: ["service.version": "\(version)", "service.endpoints": "\(endpoints.map(\.subject))"])

        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for (i, sub) in subs.enumerated() {
                    group.addTask { await self.serve(endpoint: i, subscription: sub) }
                }
                for (sub, verb) in discovery {
                    group.addTask {
                        for await m in sub { self.answerDiscovery(verb, m) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.info("service draining")
            for s in subs { s.drain(timeout: .seconds(5)) }
            for (s, _) in discovery { s.unsubscribe() }
        }
        logger.info("service stopped")
    }

    /// Returns once ``run()`` has subscribed everything (useful in tests and start-up ordering).
    public func waitUntilReady() async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let now = readiness.withLock { r -> Bool in
                guard r != nil else { return true }
                r!.append(cont)
                return false
            }
            if now { cont.resume() }
        }
    }

    private func serve(endpoint index: Int, subscription: BusSubscription) async {
        let endpoint = endpoints[index]
        await withTaskGroup(of: Void.self) { group in
            var inFlight = 0
            for await message in subscription {
                if inFlight >= endpoint.maxConcurrency {
                    await group.next()
                    inFlight -= 1
                }
                inFlight += 1
                group.addTask { await self.handle(index, endpoint, message) }
            }
        }
    }

    private func handle(_ index: Int, _ endpoint: ServiceEndpoint, _ message: BusMessage) async {
        let start = ContinuousClock.now
        let request = BusRequest(subject: message.subject, payload: message.payload, headers: message.headers, reply: message.reply)
        var failure: (code: Int, text: String, body: [UInt8])?
        var response: [UInt8] = []
        do {
            response = try await endpoint.handler(request)
        } catch let e as any BusServiceError {
            failure = (e.serviceErrorCode, e.serviceErrorMessage, e.serviceErrorBody)
            if e.serviceErrorCode >= 500 {
                logger.error("request failed", metadata: meta(endpoint, message, e))
            } else {
                logger.info("request rejected", metadata: meta(endpoint, message, e))
            }
        } catch is CancellationError {
            failure = (503, "service shutting down", [])
        } catch {
            failure = (500, "internal error", [])
            logger.error("request failed", metadata: meta(endpoint, message, error))
        }
        let elapsed = ContinuousClock.now - start
        let nanos = elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        stats.withLock { all in
            all[index].requests += 1
            all[index].processingNanos += nanos
            if let failure {
                all[index].errors += 1
                all[index].lastError = "\(failure.code):\(failure.text)"
            }
        }
        let dims = [("service", name), ("endpoint", endpoint.name)]
        Counter(label: "mesh_bus_requests_total", dimensions: dims).increment()
        if failure != nil { Counter(label: "mesh_bus_request_errors_total", dimensions: dims).increment() }
        Metrics.Timer(label: "mesh_bus_request_duration_seconds", dimensions: dims).recordNanoseconds(nanos)

        guard let reply = message.reply else { return }
        do {
            if let failure {
                var h = BusHeaders()
                h[BusHeaderName.serviceError] = failure.text
                h[BusHeaderName.serviceErrorCode] = String(failure.code)
                try connection.publish(reply, failure.body, headers: h)
            } else {
                try connection.publish(reply, response)
            }
        } catch {
            logger.error("reply failed", metadata: ["nats.subject": "\(message.subject)", "error": "\(error)"])
        }
    }

    private func meta(_ e: ServiceEndpoint, _ m: BusMessage, _ error: any Error) -> Logger.Metadata {
        var md: Logger.Metadata = ["nats.subject": "\(m.subject)", "endpoint": "\(e.name)", "error": "\(error)"]
        if let rid = m.headers[BusHeaderName.requestID] { md["request.id"] = "\(rid)" }
        return md
    }

    // MARK: Discovery (ADR-32)

    enum Verb: String, CaseIterable {
        case ping = "PING"
        case info = "INFO"
        case stats = "STATS"
    }

    private func answerDiscovery(_ verb: Verb, _ m: BusMessage) {
        guard let reply = m.reply else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body: Data?
        switch verb {
        case .ping:
            body = try? encoder.encode(PingResponse(name: name, id: id, version: version, metadata: metadata))
        case .info:
            body = try? encoder.encode(info())
        case .stats:
            body = try? encoder.encode(currentStats())
        }
        if let body { try? connection.publish(reply, [UInt8](body)) }
    }

    /// The service's `$SRV.INFO` answer.
    public func info() -> InfoResponse {
        InfoResponse(name: name, id: id, version: version, metadata: metadata, description: serviceDescription,
                     endpoints: endpoints.map { .init(name: $0.name, subject: $0.subject, queue_group: $0.queueGroup ?? "", metadata: $0.metadata) })
    }

    /// The service's `$SRV.STATS` answer.
    public func currentStats() -> StatsResponse {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return StatsResponse(
            name: name, id: id, version: version, metadata: metadata, started: formatter.string(from: started),
            endpoints: zip(endpoints, stats.withLock { $0 }).map { e, s in
                return .init(name: e.name, subject: e.subject, queue_group: e.queueGroup ?? "", num_requests: s.requests,
                             num_errors: s.errors, last_error: s.lastError, processing_time: s.processingNanos,
                             average_processing_time: s.requests == 0 ? 0 : s.processingNanos / Int64(s.requests))
            })
    }

    /// `io.nats.micro.v1.ping_response`.
    public struct PingResponse: Codable, Sendable {
        public var type = "io.nats.micro.v1.ping_response"
        public var name: String
        public var id: String
        public var version: String
        public var metadata: [String: String]
    }

    /// `io.nats.micro.v1.info_response`.
    public struct InfoResponse: Codable, Sendable {
        public var type = "io.nats.micro.v1.info_response"
        public var name: String
        public var id: String
        public var version: String
        public var metadata: [String: String]
        public var description: String
        public var endpoints: [EndpointInfo]

        public struct EndpointInfo: Codable, Sendable {
            public var name: String
            public var subject: String
            public var queue_group: String
            public var metadata: [String: String]
        }
    }

    /// `io.nats.micro.v1.stats_response`.
    public struct StatsResponse: Codable, Sendable {
        public var type = "io.nats.micro.v1.stats_response"
        public var name: String
        public var id: String
        public var version: String
        public var metadata: [String: String]
        public var started: String
        public var endpoints: [EndpointStatsInfo]

        public struct EndpointStatsInfo: Codable, Sendable {
            public var name: String
            public var subject: String
            public var queue_group: String
            public var num_requests: Int
            public var num_errors: Int
            public var last_error: String
            public var processing_time: Int64
            public var average_processing_time: Int64
        }
    }
}

/// Semantic Versioning 2.0.0 check (the grammar from semver.org, without regex support).
public enum SemVer {
    /// Whether `s` is a valid SemVer string such as `1.2.3`, `1.0.0-rc.1+build.5`.
    public static func isValid(_ s: String) -> Bool {
        var core = Substring(s)
        var build: Substring?
        if let plus = core.firstIndex(of: "+") {
            build = core[core.index(after: plus)...]
            core = core[..<plus]
        }
        var pre: Substring?
        if let dash = core.firstIndex(of: "-") {
            pre = core[core.index(after: dash)...]
            core = core[..<dash]
        }
        let nums = core.split(separator: ".", omittingEmptySubsequences: false)
        guard nums.count == 3, nums.allSatisfy({ n in
            !n.isEmpty && n.allSatisfy({ $0.isASCII && $0.isNumber }) && !(n.count > 1 && n.first == "0")
        }) else { return false }
        func ids(_ p: Substring, numericNoLeadingZero: Bool) -> Bool {
            p.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { id in
                guard !id.isEmpty, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else { return false }
                if numericNoLeadingZero, id.allSatisfy({ $0.isNumber }), id.count > 1, id.first == "0" { return false }
                return true
            }
        }
        if let pre, !ids(pre, numericNoLeadingZero: true) { return false }
        if let build, !ids(build, numericNoLeadingZero: false) { return false }
        return true
    }
}

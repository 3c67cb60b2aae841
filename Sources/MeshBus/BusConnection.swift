import CNats
import Glibc
import Dispatch
import Logging
import Synchronization

/// Blocking nats.c calls (connect, flush) run here, never on Swift's cooperative pool.
let busBlockingQueue = DispatchQueue(label: "mesh.bus.blocking", attributes: .concurrent)

/// A connection to nats-server through nats.c.
///
/// The connection reconnects forever with exponential backoff and buffers publishes made during
/// an outage. Subscriptions are `AsyncSequence`s; requests are `async` with a timeout and honour
/// task cancellation. Every reply goes to one shared inbox subscription, so a request costs a
/// publish and a dictionary lookup, not a subscription.
public final class BusConnection: Sendable {
    /// The nats.c connection. nats.c connections are thread-safe.
    nonisolated(unsafe) let nc: OpaquePointer
    let context: ConnectionContext
    private let closing = Atomic<Bool>(false)
    let mux: RequestMux
    /// The configuration the connection was made with.
    public let configuration: BusConfiguration
    let logger: Logger

    private init(nc: OpaquePointer, context: ConnectionContext, mux: RequestMux, configuration: BusConfiguration, logger: Logger) {
        self.nc = nc
        self.context = context
        self.mux = mux
        self.configuration = configuration
        self.logger = logger
    }

    deinit {
        natsConnection_Destroy(nc)
    }

    /// Connects to the configured servers.
    ///
    /// With `retryOnFailedConnect` (the default) this returns even when no server is reachable yet;
    /// the connection keeps trying in the background and publishes are buffered meanwhile.
    ///
    /// A refusal by the server is final: nats.c closes the connection (or, without
    /// `retryOnFailedConnect`, this throws). There is one exception, and only that one is tried
    /// again: libnats before 3.8 cannot send a nonce signature whose first byte is 0, so the
    /// signature callback holds such a signature back instead of letting nats.c send a CONNECT
    /// without one (``SignatureEncoding``, docs/security.md "Refused connections"). nats.c 3.4 then
    /// gives up a first connection, so it is made again here, with a new nonce.
    public static func connect(_ configuration: BusConfiguration, logger: Logger) async throws -> BusConnection {
        // Each attempt fails this way with probability 1/256, so eight in a row do not happen.
        let attempts = 8
        for attempt in 1...attempts {
            let context = ConnectionContext(configuration: configuration, logger: logger)
            do {
                let connection = try await connectOnce(configuration, context: context, logger: logger)
                guard attempt < attempts, context.signaturesRefusedBeforeConnecting > 0, !connection.isConnected else {
                    if !connection.isConnected {
                        logger.warning("bus not connected yet; retrying in the background", metadata: ["nats.servers": "\(configuration.servers)"])
                    }
                    return connection
                }
                await connection.close()
            } catch where attempt < attempts && context.signaturesRefusedBeforeConnecting > 0 {
            }
            logger.debug("nonce signature held back before the first CONNECT; connecting again", metadata: ["nats.attempt": "\(attempt)"])
        }
        throw BusError.nats(status: -1, text: "every nonce signature was held back", operation: "connect")
    }

    /// Nonce signatures held back from nats.c in this process so far, because the loaded libnats
    /// would have sent them as no signature (``SignatureEncoding``; also the metric
    /// `mesh_bus_nonce_signatures_held_back_total`). For tests and diagnosis.
    public static var nonceSignaturesHeldBack: Int { SignatureEncoding.heldBack.load(ordering: .relaxed) }

    /// Whether the loaded libnats drops a nonce signature whose first byte is 0 (before 3.8.0).
    public static var libnatsDropsLeadingZeroSignatures: Bool { SignatureEncoding.dropsLeadingZero }

    private static func connectOnce(_ configuration: BusConfiguration, context: ConnectionContext, logger: Logger) async throws -> BusConnection {
        BusRuntime.initialise()
        if context.credentials != nil {
            _ = try context.jwtAndSeed()   // a missing or malformed file fails here, with its name
        }
        var opts: OpaquePointer?
        try check(natsOptions_Create(&opts), "options")
        defer { natsOptions_Destroy(opts) }
        try configure(opts!, configuration, context)

        let retained = Unmanaged.passRetained(context).toOpaque()
        try check(natsOptions_SetClosedCB(opts, onClosed, retained), "closed callback")
        try check(natsOptions_SetDisconnectedCB(opts, onDisconnected, retained), "disconnected callback")
        try check(natsOptions_SetReconnectedCB(opts, onReconnected, retained), "reconnected callback")
        try check(natsOptions_SetErrorHandler(opts, onAsyncError, retained), "error handler")
        try check(natsOptions_SetCustomReconnectDelay(opts, reconnectDelay, retained), "reconnect delay")
        if configuration.retryOnFailedConnect {
            try check(natsOptions_SetRetryOnFailedConnect(opts, true, onConnected, retained), "retry on failed connect")
        }
        if context.credentials != nil {
            // Our own callbacks for `.creds` files too (not natsOptions_SetUserCredentialsFromFiles),
            // so that every signature goes through ``signatureCallback``.
            try check(natsOptions_SetUserCredentialsCallbacks(opts, userJWTCallback, retained, signatureCallback, retained), "credentials")
        }

        let optsBox = UnsafeSendable(opts!)
        let connected: Result<UnsafeSendable<OpaquePointer>, BusError> = await withCheckedContinuation { cont in
            busBlockingQueue.async {
                var nc: OpaquePointer?
                let s = natsConnection_Connect(&nc, optsBox.value)
                if s == NATS_OK || s == NATS_NOT_YET_CONNECTED, let nc {
                    cont.resume(returning: .success(UnsafeSendable(nc)))
                } else {
                    cont.resume(returning: .failure(natsError(s, "connect")))
                }
            }
        }
        let nc: OpaquePointer
        switch connected {
        case .success(let box): nc = box.value
        case .failure(let e):
            Unmanaged<ConnectionContext>.fromOpaque(retained).release()
            throw e
        }
        let mux = RequestMux(inbox: "\(configuration.inboxPrefix).\(Nuid.next())")
        let connection = BusConnection(nc: nc, context: context, mux: mux, configuration: configuration, logger: logger)
        try connection.startMux()
        if natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED {
            context.noteConnected()
            logger.info("bus connected", metadata: ["nats.server": "\(connection.connectedURL ?? "?")"])
        }
        return connection
    }

    private static func configure(_ opts: OpaquePointer, _ c: BusConfiguration, _ ctx: ConnectionContext) throws {
        guard !c.servers.isEmpty else { throw BusError.nats(status: -1, text: "no server URL configured", operation: "options") }
        var cStrings = c.servers.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        try cStrings.withUnsafeMutableBufferPointer { buf in
            try buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) { p in
                try check(natsOptions_SetServers(opts, p, Int32(buf.count)), "servers")
            }
        }
        try check(natsOptions_SetName(opts, c.name), "name")
        try check(natsOptions_SetTimeout(opts, c.connectTimeout.milliseconds), "timeout")
        try check(natsOptions_SetMaxReconnect(opts, -1), "max reconnect")
        try check(natsOptions_SetReconnectBufSize(opts, Int32(clamping: c.reconnectBufferBytes)), "reconnect buffer")
        try check(natsOptions_SetPingInterval(opts, c.pingInterval.milliseconds), "ping interval")
        try check(natsOptions_SetMaxPingsOut(opts, Int32(c.maxPingsOut)), "max pings out")
        try check(natsOptions_SetSendAsap(opts, c.sendAsap), "send asap")
        try check(natsOptions_SetNoRandomize(opts, false), "randomize")
        // One shared pool of delivery threads instead of a thread per subscription: a process that
        // simulates a thousand nodes would otherwise start a thousand threads.
        try check(natsOptions_UseGlobalMessageDelivery(opts, true), "global delivery")
        try check(natsOptions_SetCustomInboxPrefix(opts, c.inboxPrefix), "inbox prefix")
        switch c.credentials {
        case .token(let t)?:
            try check(natsOptions_SetToken(opts, t), "token")
        case .userPassword(let u, let p)?:
            try check(natsOptions_SetUserInfo(opts, u, p), "user info")
        case .jwt, .credsFile, nil:
            break   // JWT credentials go through the callbacks set in connectOnce

        }
        if let tls = c.tls {
            try check(natsOptions_SetSecure(opts, true), "tls")
            if let ca = tls.caFile { try check(natsOptions_LoadCATrustedCertificates(opts, ca), "tls ca") }
            if let cert = tls.certFile, let key = tls.keyFile {
                try check(natsOptions_LoadCertificatesChain(opts, cert, key), "tls certificate")
            }
            if let host = tls.expectedHostname { try check(natsOptions_SetExpectedHostname(opts, host), "tls hostname") }
        }
    }

    private func startMux() throws {
        let ctx = SubscriptionContext(subject: mux.inbox + ".*", limit: Int.max, logger: logger) { [mux] message in
            mux.deliver(message)
        }
        _ = try subscribeRaw(mux.inbox + ".*", queue: nil, context: ctx)
    }

    // MARK: Publishing

    /// Publishes a message. It is written at once when connected, and buffered during a reconnect.
    public func publish(_ subject: String, _ payload: [UInt8], headers: BusHeaders = BusHeaders(), reply: String? = nil) throws {
        try Subjects.validate(subject, wildcards: false)
        if headers.isEmpty {
            let s = payload.withUnsafeBytes { buf in
                if let reply {
                    natsConnection_PublishRequest(nc, subject, reply, buf.baseAddress, Int32(buf.count))
                } else {
                    natsConnection_Publish(nc, subject, buf.baseAddress, Int32(buf.count))
                }
            }
            try Self.check(s, "publish")
            return
        }
        var msg: OpaquePointer?
        let created = payload.withUnsafeBytes { buf in
            natsMsg_Create(&msg, subject, reply, buf.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(buf.count))
        }
        try Self.check(created, "message")
        defer { natsMsg_Destroy(msg) }
        for (k, v) in headers.entries {
            try Self.check(natsMsgHeader_Add(msg, k, v), "header")
        }
        try Self.check(natsConnection_PublishMsg(nc, msg), "publish")
    }

    /// Waits until the server has processed everything published so far (a PING/PONG round trip).
    public func flush(timeout: Duration = .seconds(2)) async throws {
        let ms = timeout.milliseconds
        let nc = UnsafeSendable(self.nc)
        let s: natsStatus = await withCheckedContinuation { cont in
            busBlockingQueue.async { cont.resume(returning: natsConnection_FlushTimeout(nc.value, ms)) }
        }
        try Self.check(s, "flush")
    }

    /// The same as ``flush(timeout:)`` but blocking the calling thread. Only for code already off
    /// Swift's cooperative pool, such as a store transaction body, which runs on its connection's thread.
    public func flushBlocking(timeout: Duration = .seconds(2)) throws {
        try Self.check(natsConnection_FlushTimeout(nc, timeout.milliseconds), "flush")
    }

    // MARK: Subscribing

    /// Subscribes to `subject` (wildcards allowed). With `queue`, the server spreads messages over
    /// every subscriber in that queue group.
    public func subscribe(_ subject: String, queue: String? = nil) throws -> BusSubscription {
        try Subjects.validate(subject, wildcards: true)
        if let queue { try Subjects.validate(queue, wildcards: false) }
        let (stream, continuation) = AsyncStream<BusMessage>.makeStream(
            bufferingPolicy: .bufferingNewest(configuration.subscriptionBufferLimit))
        let ctx = SubscriptionContext(subject: subject, limit: configuration.subscriptionBufferLimit, logger: logger) { m in
            if case .dropped = continuation.yield(m) {
                BusMetrics.dropped.increment()
            }
        }
        ctx.onFinish = { continuation.finish() }
        let sub = try subscribeRaw(subject, queue: queue, context: ctx)
        let box = SubscriptionHandle(sub: sub)
        continuation.onTermination = { _ in box.unsubscribe() }
        return BusSubscription(subject: subject, queue: queue, stream: stream, handle: box)
    }

    func subscribeRaw(_ subject: String, queue: String?, context: SubscriptionContext) throws -> OpaquePointer {
        var sub: OpaquePointer?
        let retained = Unmanaged.passRetained(context).toOpaque()
        let s: natsStatus
        if let queue {
            s = natsConnection_QueueSubscribe(&sub, nc, subject, queue, onMessage, retained)
        } else {
            s = natsConnection_Subscribe(&sub, nc, subject, onMessage, retained)
        }
        guard s == NATS_OK, let sub else {
            Unmanaged<SubscriptionContext>.fromOpaque(retained).release()
            throw Self.natsError(s, "subscribe \(subject)")
        }
        // nats.c calls this once the subscription is closed and its handler has returned for the
        // last time: the only safe moment to drop the context.
        natsSubscription_SetOnCompleteCB(sub, onSubscriptionComplete, retained)
        return sub
    }

    // MARK: Requests

    /// Sends a request and waits for one reply.
    ///
    /// - Throws: ``BusError/noResponders(subject:)`` when nothing serves the subject (nats-server's
    ///   503 status, which nats.c hands over as an empty message), ``BusError/timeout(subject:)``,
    ///   ``BusError/service(code:description:body:)`` when the service replied with an ADR-32 error,
    ///   and `CancellationError` when the task is cancelled.
    public func request(_ subject: String, _ payload: [UInt8], headers: BusHeaders = BusHeaders(),
                        timeout: Duration = .seconds(5)) async throws -> BusMessage {
        let token = mux.nextToken()
        let reply = mux.inbox + "." + String(token)
        let reply1: BusMessage = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<BusMessage, any Error>) in
                mux.register(token, subject: subject, continuation: cont)
                if Task.isCancelled {
                    mux.fail(token, CancellationError())
                    return
                }
                do {
                    try publish(subject, payload, headers: headers, reply: reply)
                } catch {
                    mux.fail(token, error)
                    return
                }
                let mux = self.mux
                busBlockingQueue.asyncAfter(deadline: .now() + timeout.timeInterval) {
                    mux.fail(token, BusError.timeout(subject: subject))
                }
            }
        } onCancel: {
            mux.fail(token, CancellationError())
        }
        if let code = reply1.headers[BusHeaderName.serviceErrorCode] {
            throw BusError.service(code: Int(code) ?? 500, description: reply1.headers[BusHeaderName.serviceError] ?? "",
                                   body: reply1.payload)
        }
        return reply1
    }

    // MARK: State

    /// Whether the connection is currently connected.
    public var isConnected: Bool { natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED }

    /// Whether the connection has been closed for good.
    public var isClosed: Bool { natsConnection_IsClosed(nc) }

    /// The URL of the server currently connected to.
    public var connectedURL: String? {
        var buf = [CChar](repeating: 0, count: 512)
        guard natsConnection_GetConnectedUrl(nc, &buf, buf.count) == NATS_OK else { return nil }
        let s = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return s.isEmpty ? nil : s
    }

    /// A stream of connection events from now on. Each call returns an independent stream.
    public func events() -> AsyncStream<BusEvent> {
        context.makeEventStream()
    }

    /// The errors nats.c reports asynchronously from now on, in the server's words (for example a
    /// permission violation, which the server reports after the publish or subscribe returned).
    /// Each call returns an independent stream; it ends when the connection closes. nats.c keeps
    /// only the latest error text, so violations reported at the same moment may repeat the last one.
    public func asyncErrors() -> AsyncStream<String> {
        context.makeErrorStream()
    }

    /// Waits until connected, or throws ``BusError/timeout(subject:)``.
    public func waitUntilConnected(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !isConnected {
            if isClosed { throw BusError.closed }
            if ContinuousClock.now >= deadline { throw BusError.timeout(subject: "connect") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Whether ``drain(timeout:)`` or ``close()`` was called: a closed connection that was not
    /// closed on purpose was given up by nats.c.
    public var isClosing: Bool { closing.load(ordering: .relaxed) }

    /// Drains every subscription (pending messages are still handled), flushes, and closes.
    public func drain(timeout: Duration = .seconds(5)) async {
        closing.store(true, ordering: .relaxed)
        if isClosed { return }
        if natsConnection_DrainTimeout(nc, timeout.milliseconds) != NATS_OK {
            natsConnection_Close(nc)
        }
        await context.waitClosed()
    }

    /// Closes the connection at once.
    public func close() async {
        closing.store(true, ordering: .relaxed)
        if !isClosed { natsConnection_Close(nc) }
        await context.waitClosed()
    }

    // MARK: Errors

    static func check(_ s: natsStatus, _ op: String) throws {
        if s != NATS_OK { throw natsError(s, op) }
    }

    static func natsError(_ s: natsStatus, _ op: String) -> BusError {
        if s == NATS_CONNECTION_CLOSED { return .closed }
        if s == NATS_INVALID_SUBJECT { return .invalidSubject(op) }
        let text = String(cString: natsStatus_GetText(s))
        var detail = text
        if let last = nats_GetLastError(nil) {
            let l = String(cString: last)
            if !l.isEmpty && l != text { detail = "\(text): \(l)" }
        }
        // With "send as soon as possible", a publish writes to the socket itself, so a server that
        // just went away shows up here as an I/O error before the reader has noticed and switched
        // to reconnecting (and buffering).
        if [NATS_IO_ERROR, NATS_STALE_CONNECTION, NATS_CONNECTION_DISCONNECTED, NATS_NO_SERVER, NATS_NOT_YET_CONNECTED].contains(s) {
            return .connectionLost(operation: op, text: detail)
        }
        return .nats(status: Int32(bitPattern: s.rawValue), text: detail, operation: op)
    }
}

/// A value the compiler cannot prove Sendable but which is safe to hand to one other thread.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One-time process setup of nats.c.
enum BusRuntime {
    private static let once: Void = {
        _ = nats_Open(-1)
        // Two delivery threads match this machine class; requests are short.
        _ = nats_SetMessageDeliveryPoolSize(4)
    }()

    static func initialise() { _ = once }
}

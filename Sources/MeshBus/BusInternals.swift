import CNats
import Glibc
import Dispatch
import Foundation
import Logging
import Metrics
import Synchronization

/// State shared with nats.c's connection callbacks. nats.c holds one retained reference, dropped
/// in the closed callback.
final class ConnectionContext: Sendable {
    let configuration: BusConfiguration
    let logger: Logger
    private struct State {
        var eventContinuations: [Int: AsyncStream<BusEvent>.Continuation] = [:]
        var errorContinuations: [Int: AsyncStream<String>.Continuation] = [:]
        var nextID = 0
        var closed = false
        var closedWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    /// Where nats.c's credential callbacks take the user JWT and the nkey seed from: held in
    /// memory, or a `.creds` file read again at each (re)connect (so a replaced file is used).
    let credentials: BusCredentials?
    /// Signatures ``signatureCallback`` held back from nats.c (see ``SignatureEncoding``) while the
    /// connection had never been connected.
    private let refusedBeforeConnecting = Atomic<Int>(0)
    private let everConnected = Atomic<Bool>(false)

    init(configuration: BusConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        switch configuration.credentials {
        case .jwt?, .credsFile?: credentials = configuration.credentials
        default: credentials = nil
        }
    }

    /// The user JWT and seed, from memory or read from the `.creds` file now.
    func jwtAndSeed() throws -> (jwt: String, seed: String) {
        switch credentials {
        case .jwt(let jwt, let seed)?:
            return (jwt, seed)
        case .credsFile(let path)?:
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw BusError.invalidCredentials("cannot read the credentials file \(path)")
            }
            guard case .jwt(let jwt, let seed) = try BusCredentials.parseCreds(text) else {
                throw BusError.invalidCredentials("\(path) holds no user JWT and seed")
            }
            return (jwt, seed)
        default:
            throw BusError.invalidCredentials("no JWT credentials configured")
        }
    }

    func noteRefusedSignature() {
        SignatureEncoding.heldBack.add(1, ordering: .relaxed)
        SignatureEncoding.heldBackCounter.increment()
        if !everConnected.load(ordering: .relaxed) { refusedBeforeConnecting.add(1, ordering: .relaxed) }
    }

    func noteConnected() { everConnected.store(true, ordering: .relaxed) }

    /// Signatures held back before the connection was ever established.
    var signaturesRefusedBeforeConnecting: Int { refusedBeforeConnecting.load(ordering: .relaxed) }

    func makeEventStream() -> AsyncStream<BusEvent> {
        let (stream, cont) = AsyncStream<BusEvent>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id: Int? = state.withLock { s in
            if s.closed { return nil }
            s.nextID += 1
            s.eventContinuations[s.nextID] = cont
            return s.nextID
        }
        guard let id else {
            cont.yield(.closed)
            cont.finish()
            return stream
        }
        cont.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.eventContinuations.removeValue(forKey: id) }
        }
        return stream
    }

    func makeErrorStream() -> AsyncStream<String> {
        let (stream, cont) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let id: Int? = state.withLock { s in
            if s.closed { return nil }
            s.nextID += 1
            s.errorContinuations[s.nextID] = cont
            return s.nextID
        }
        guard let id else {
            cont.finish()
            return stream
        }
        cont.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.errorContinuations.removeValue(forKey: id) }
        }
        return stream
    }

    func emitError(_ text: String) {
        let conts = state.withLock { Array($0.errorContinuations.values) }
        for c in conts { c.yield(text) }
    }

    func emit(_ event: BusEvent) {
        let conts = state.withLock { Array($0.eventContinuations.values) }
        for c in conts { c.yield(event) }
    }

    func markClosed() {
        let (conts, waiters, errorConts) = state.withLock {
            s -> ([AsyncStream<BusEvent>.Continuation], [CheckedContinuation<Void, Never>], [AsyncStream<String>.Continuation]) in
            s.closed = true
            let c = Array(s.eventContinuations.values)
            s.eventContinuations.removeAll()
            let e = Array(s.errorContinuations.values)
            s.errorContinuations.removeAll()
            let w = s.closedWaiters
            s.closedWaiters.removeAll()
            return (c, w, e)
        }
        for e in errorConts { e.finish() }
        for c in conts {
            c.yield(.closed)
            c.finish()
        }
        for w in waiters { w.resume() }
    }

    func waitClosed() async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.closed { return true }
                s.closedWaiters.append(cont)
                return false
            }
            if resumeNow { cont.resume() }
        }
    }

    /// Exponential backoff with ±20% jitter, in milliseconds.
    func reconnectDelay(attempts: Int) -> Int64 {
        let minMs = Double(max(configuration.reconnectWaitMin.milliseconds, 1))
        let maxMs = Double(max(configuration.reconnectWaitMax.milliseconds, 1))
        let base = min(maxMs, minMs * pow2(min(attempts, 30)))
        let jitter = Double.random(in: 0.8...1.2)
        return Int64(base * jitter)
    }

    private func pow2(_ n: Int) -> Double { Double(1 << n) }
}

/// State shared with nats.c's message callback for one subscription.
final class SubscriptionContext: @unchecked Sendable {
    // Set once before the subscription starts, read by nats.c's threads afterwards.
    let subject: String
    let limit: Int
    let logger: Logger
    let deliver: @Sendable (BusMessage) -> Void
    var onFinish: (@Sendable () -> Void)?

    init(subject: String, limit: Int, logger: Logger, deliver: @escaping @Sendable (BusMessage) -> Void) {
        self.subject = subject
        self.limit = limit
        self.logger = logger
        self.deliver = deliver
    }
}

/// Owns the nats.c subscription pointer so that it can be unsubscribed exactly once.
final class SubscriptionHandle: Sendable {
    private let sub: Mutex<UnsafeSendable<OpaquePointer>?>

    init(sub: OpaquePointer) { self.sub = Mutex(UnsafeSendable(sub)) }

    func unsubscribe() {
        guard let s = sub.withLock({ v -> UnsafeSendable<OpaquePointer>? in defer { v = nil }; return v }) else { return }
        _ = natsSubscription_Unsubscribe(s.value)
        natsSubscription_Destroy(s.value)
    }

    func drain(timeout: Duration) {
        guard let s = sub.withLock({ $0 }) else { return }
        _ = natsSubscription_DrainTimeout(s.value, timeout.milliseconds)
    }

    deinit { unsubscribe() }
}

/// Routes replies arriving on the connection's one inbox subscription to waiting requests.
final class RequestMux: Sendable {
    let inbox: String
    private let counter = Atomic<UInt64>(0)
    private struct Waiter {
        var subject: String
        var continuation: CheckedContinuation<BusMessage, any Error>
    }
    private let waiters = Mutex<[UInt64: Waiter]>([:])

    init(inbox: String) { self.inbox = inbox }

    func nextToken() -> UInt64 { counter.wrappingAdd(1, ordering: .relaxed).newValue }

    func register(_ token: UInt64, subject: String, continuation: CheckedContinuation<BusMessage, any Error>) {
        waiters.withLock { $0[token] = Waiter(subject: subject, continuation: continuation) }
    }

    func fail(_ token: UInt64, _ error: any Error) {
        waiters.withLock { $0.removeValue(forKey: token) }?.continuation.resume(throwing: error)
    }

    func deliver(_ message: BusMessage) {
        guard let dot = message.subject.lastIndex(of: "."), let token = UInt64(message.subject[message.subject.index(after: dot)...]) else {
            return
        }
        guard let waiter = waiters.withLock({ $0.removeValue(forKey: token) }) else { return }
        if message.headers["Status"] == "503" && message.payload.isEmpty {
            waiter.continuation.resume(throwing: BusError.noResponders(subject: waiter.subject))
        } else {
            waiter.continuation.resume(returning: message)
        }
    }
}

/// A stream of messages from one subscription. Ending the iteration (or dropping the value)
/// unsubscribes.
public struct BusSubscription: AsyncSequence, Sendable {
    public typealias Element = BusMessage
    /// The subject (possibly with wildcards) subscribed to.
    public let subject: String
    /// The queue group, if any.
    public let queue: String?
    let stream: AsyncStream<BusMessage>
    let handle: SubscriptionHandle

    public func makeAsyncIterator() -> AsyncStream<BusMessage>.Iterator { stream.makeAsyncIterator() }

    /// Stops delivery now.
    public func unsubscribe() { handle.unsubscribe() }

    /// Stops taking new messages but delivers the ones already received; the stream then ends.
    public func drain(timeout: Duration = .seconds(5)) { handle.drain(timeout: timeout) }
}

/// Unique ids for inboxes and service instances (22 base62 characters, like NATS NUIDs).
public enum Nuid {
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// A new random id.
    public static func next() -> String {
        var rng = SystemRandomNumberGenerator()
        var out = [UInt8](repeating: 0, count: 22)
        for i in 0..<22 { out[i] = alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))] }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Subject syntax checks, so that a bad subject fails here with a clear error rather than as a
/// protocol error from the server.
public enum Subjects {
    /// Validates a subject: dot-separated non-empty tokens without whitespace; `*` and a final `>`
    /// only when `wildcards` is true.
    public static func validate(_ subject: String, wildcards: Bool) throws {
        guard !subject.isEmpty, subject.utf8.count <= 1024 else { throw BusError.invalidSubject(subject) }
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        for (i, t) in tokens.enumerated() {
            guard !t.isEmpty else { throw BusError.invalidSubject(subject) }
            for c in t.utf8 where c <= 0x20 || c == 0x7f { throw BusError.invalidSubject(subject) }
            if t == "*" || t == ">" {
                guard wildcards, t == "*" || i == tokens.count - 1 else { throw BusError.invalidSubject(subject) }
            } else if t.contains("*") || t.contains(">") {
                throw BusError.invalidSubject(subject)
            }
        }
    }

    /// Whether a token is safe to embed in a subject (ids, tenant ids).
    public static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 128 && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f
        }
    }
}

enum BusMetrics {
    static let dropped = Counter(label: "mesh_bus_dropped_messages_total")
    static let asyncErrors = Counter(label: "mesh_bus_async_errors_total")
}

// MARK: nats.c callbacks (C function pointers; no captures)

func messageFrom(_ msg: OpaquePointer) -> BusMessage {
    let subject = String(cString: natsMsg_GetSubject(msg))
    let reply = natsMsg_GetReply(msg).map { String(cString: $0) }
    let len = Int(natsMsg_GetDataLength(msg))
    var payload: [UInt8] = []
    if len > 0, let data = natsMsg_GetData(msg) {
        payload = [UInt8](UnsafeRawBufferPointer(start: data, count: len))
    }
    var headers = BusHeaders()
    var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
    var count: Int32 = 0
    if natsMsgHeader_Keys(msg, &keys, &count) == NATS_OK, let keys {
        for i in 0..<Int(count) {
            guard let k = keys[i] else { continue }
            var values: UnsafeMutablePointer<UnsafePointer<CChar>?>?
            var n: Int32 = 0
            if natsMsgHeader_Values(msg, k, &values, &n) == NATS_OK, let values {
                for j in 0..<Int(n) { if let v = values[j] { headers.add(String(cString: k), String(cString: v)) } }
                free(values)
            }
        }
        free(keys)
    }
    if natsMsg_IsNoResponders(msg) && headers["Status"] == nil {
        headers["Status"] = "503"
    }
    return BusMessage(subject: subject, reply: reply, headers: headers, payload: payload)
}

let onMessage: natsMsgHandler = { _, _, msg, closure in
    guard let msg, let closure else { return }
    let ctx = Unmanaged<SubscriptionContext>.fromOpaque(closure).takeUnretainedValue()
    let message = messageFrom(msg)
    natsMsg_Destroy(msg)
    ctx.deliver(message)
}

let onSubscriptionComplete: natsOnCompleteCB = { closure in
    guard let closure else { return }
    let ctx = Unmanaged<SubscriptionContext>.fromOpaque(closure).takeRetainedValue()
    ctx.onFinish?()
}

let onClosed: natsConnectionHandler = { nc, closure in
    guard let closure else { return }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeRetainedValue()
    // The last error the server sent, which says why when the server closed it (e.g. credentials revoked).
    var last: UnsafePointer<CChar>?
    if let nc, natsConnection_GetLastError(nc, &last) != NATS_OK, let last, last.pointee != 0 {
        ctx.logger.info("bus connection closed", metadata: ["nats.last_error": "\(String(cString: last))"])
    } else {
        ctx.logger.info("bus connection closed")
    }
    ctx.markClosed()
}

let onDisconnected: natsConnectionHandler = { nc, closure in
    guard let closure else { return }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    // nats.c also reports a disconnect when the connection is being closed on purpose.
    if let nc, natsConnection_IsClosed(nc) || natsConnection_IsDraining(nc) {
        ctx.emit(.disconnected)
        return
    }
    ctx.logger.warning("bus disconnected; reconnecting")
    ctx.emit(.disconnected)
}

let onReconnected: natsConnectionHandler = { nc, closure in
    guard let closure else { return }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    ctx.noteConnected()
    ctx.logger.info("bus reconnected")
    ctx.emit(.reconnected)
}

let onConnected: natsConnectionHandler = { _, closure in
    guard let closure else { return }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    ctx.noteConnected()
    ctx.logger.info("bus connected after retrying")
    ctx.emit(.connected)
}

let onAsyncError: natsErrHandler = { nc, sub, status, closure in
    guard let closure else { return }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    BusMetrics.asyncErrors.increment()
    var subject = "?"
    if let sub, let s = natsSubscription_GetSubject(sub) { subject = String(cString: s) }
    // The server's own words, e.g. `Permissions Violation for Publish to "..."`.
    var text = String(cString: natsStatus_GetText(status))
    var last: UnsafePointer<CChar>?
    if let nc, natsConnection_GetLastError(nc, &last) != NATS_OK, let last, last.pointee != 0 { text = String(cString: last) }
    ctx.logger.error("bus asynchronous error", metadata: ["nats.subject": "\(subject)", "nats.status": "\(text)"])
    ctx.emitError(text)
}

let reconnectDelay: natsCustomReconnectDelayHandler = { _, attempts, closure in
    guard let closure else { return 100 }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    return ctx.reconnectDelay(attempts: Int(attempts))
}

let userJWTCallback: natsUserJWTHandler = { jwtOut, errText, closure in
    guard let closure, let jwtOut else { return NATS_ERR }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    do {
        jwtOut.pointee = strdup(try ctx.jwtAndSeed().jwt)
        return NATS_OK
    } catch {
        errText?.pointee = strdup("\(error)")
        return NATS_ERR
    }
}

/// How nats.c puts the nonce signature into CONNECT.
///
/// libnats before 3.8.0 base64-encodes the signature with a function that treats its input as a C
/// string: a signature whose first byte is 0 (one Ed25519 signature in 256, since the nonce is
/// random) comes out as no text at all, so nats.c sends a CONNECT without `sig` and nats-server
/// refuses valid credentials ("Signature missing", Authorization Violation). Fixed upstream in
/// nats.c 3.8.0 (nats-io/nats.c#705); Debian 12 ships 3.4.1. Reproduced with plain nats.c by
/// `scripts/repro-nats-signature.sh` (docs/security.md, "Refused connections").
enum SignatureEncoding {
    /// True when the loaded libnats drops a signature that starts with a zero byte.
    static let dropsLeadingZero: Bool = nats_GetVersionNumber() < 0x03_08_00
    /// Signatures held back in this process so far.
    static let heldBack = Atomic<Int>(0)
    static let heldBackCounter = Counter(label: "mesh_bus_nonce_signatures_held_back_total")
}

/// Signs the server's nonce with the user's seed. A signature the loaded libnats would drop (see
/// ``SignatureEncoding``) is held back: the callback fails, nats.c sends no CONNECT on that socket,
/// and the next attempt gets a new nonce, hence a new signature. Nothing reaches the server that it
/// would refuse, so a refusal by the server always means the credentials are wrong.
let signatureCallback: natsSignatureHandler = { errText, sigOut, sigLen, nonce, closure in
    guard let closure, let sigOut, let sigLen, let nonce else { return NATS_ERR }
    let ctx = Unmanaged<ConnectionContext>.fromOpaque(closure).takeUnretainedValue()
    let seed: String
    do {
        seed = try ctx.jwtAndSeed().seed
    } catch {
        errText?.pointee = strdup("\(error)")
        return NATS_ERR
    }
    var signature: UnsafeMutablePointer<UInt8>?
    var length: Int32 = 0
    let s = nats_Sign(seed, nonce, &signature, &length)
    guard s == NATS_OK, let signature, length > 0 else {
        free(signature)
        return s == NATS_OK ? NATS_ERR : s
    }
    if SignatureEncoding.dropsLeadingZero && signature[0] == 0 {
        free(signature)
        ctx.noteRefusedSignature()
        ctx.logger.debug("nonce signature starts with a zero byte, which this libnats would drop; connecting again")
        errText?.pointee = strdup("nonce signature starts with a zero byte, which libnats < 3.8 drops from CONNECT")
        return NATS_ERR
    }
    sigOut.pointee = signature
    sigLen.pointee = length
    return NATS_OK
}

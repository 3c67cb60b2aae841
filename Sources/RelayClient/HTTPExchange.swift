import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import X509

/// One HTTP request of the fallback client.
public struct FallbackRequest: Sendable {
    public var method: String
    /// The path and query, e.g. `/api/mesh/devices`.
    public var path: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: String = "GET", path: String, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

/// Which path answered.
public enum FallbackPath: Sendable, Equatable, CustomStringConvertible {
    case relay
    /// A node over the mesh: its URL.
    case mesh(String)

    public var description: String {
        switch self {
        case .relay: "relay"
        case .mesh(let url): "mesh \(url)"
        }
    }
}

/// An answer, and the path it came by.
public struct FallbackResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var path: FallbackPath
    /// From the start of the request on this path to the end of the answer.
    public var elapsed: Duration
    /// The paths this request failed on before this one answered, with why (the relay, when the
    /// answer came over the mesh because the relay failed it; nodes tried before the one that answered).
    public var failedBefore: [(path: String, error: ExchangeError)] = []
}

/// Why one attempt on one path failed.
public enum ExchangeError: Error, Sendable, Equatable, CustomStringConvertible {
    case timedOut
    case closedEarly
    case tls(String)
    case connect(String)
    case resolve(String)
    /// A server error (5xx) from the path: the path is unhealthy even though it answered.
    case serverError(Int)

    public var description: String {
        switch self {
        case .timedOut: "timed out"
        case .closedEarly: "connection closed before the answer ended"
        case .tls(let m): "TLS: \(m)"
        case .connect(let m): "connect: \(m)"
        case .resolve(let m): "resolve: \(m)"
        case .serverError(let s): "server error \(s)"
        }
    }
}

/// One HTTP/1.1 exchange on a new connection (`Connection: close`), optionally over TLS, with one
/// deadline for everything (connect, handshake, answer).
enum HTTPExchange {
    static func run(host: String, port: Int, tls: (context: NIOSSLContext, serverName: String)?, hostHeader: String,
                    request: FallbackRequest, timeout: Duration, group: any EventLoopGroup) async throws -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        let loop = group.next()
        let promise = Once(loop.makePromise(of: CollectedResponse.self))
        // Over TLS, nothing is written until the certificate is known to name the server asked for.
        let verified = Once(loop.makePromise(of: Void.self))
        // Whatever ends the exchange first (a failed connect, the deadline) ends this wait too.
        promise.future.whenComplete { result in
            switch result {
            case .failure(let e): verified.fail(e)
            case .success: verified.succeed(())
            }
        }
        let timeoutMs = Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let deadline = loop.scheduleTask(in: .milliseconds(timeoutMs)) { promise.fail(ExchangeError.timedOut) }
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(timeoutMs))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                do {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverName))
                        try channel.pipeline.syncOperations.addHandler(ServerNameCheck(name: tls.serverName, verified: verified))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            deadline.cancel()
            promise.fail(error)
            throw ExchangeError.connect("\(host):\(port): \(error)")
        }
        if tls != nil {
            do {
                try await verified.future.get()
            } catch {
                deadline.cancel()
                promise.fail(error)
                channel.close(promise: nil)
                if let e = error as? ExchangeError { throw e }
                throw ExchangeError.tls("\(error)")
            }
        } else {
            verified.succeed(())
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: request.path)
        head.headers.add(name: "Host", value: hostHeader)
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Content-Length", value: "\(request.body.count)")
        for (n, v) in request.headers { head.headers.add(name: n, value: v) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !request.body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: request.body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        do {
            let r = try await promise.future.get()
            deadline.cancel()
            channel.close(promise: nil)
            return (r.status, r.headers, r.body)
        } catch {
            deadline.cancel()
            channel.close(promise: nil)
            if let e = error as? ExchangeError { throw e }
            if let e = error as? NIOSSLError { throw ExchangeError.tls("\(e)") }
            if let e = error as? BoringSSLError { throw ExchangeError.tls("\(e)") }
            throw ExchangeError.connect("\(error)")
        }
    }
}

/// Refuses a certificate that does not hold the asked name among its DNS names. The chain and the
/// name were checked by NIOSSL already, but NIOSSL also accepts a certificate that holds the
/// connected IP address, whatever name was asked: a node's leaf holds its mesh addresses, so a name
/// that resolved to another node of the tenant would pass.
final class ServerNameCheck: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let name: String
    let verified: Once<Void>

    init(name: String, verified: Once<Void>) {
        self.name = name
        self.verified = verified
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted? = event as? TLSUserEvent {
            let asked = name.lowercased().trimmingSuffix(".")
            let holds: Bool
            do {
                let leaf = try context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
                let cert = try leaf.map { try Certificate(derEncoded: try $0.toDERBytes()) }
                let names = (try cert?.extensions.subjectAlternativeNames) ?? nil
                holds = names?.contains { if case .dnsName(let n) = $0 { n.lowercased() == asked } else { false } } ?? false
            } catch {
                holds = false
            }
            if holds {
                verified.succeed(())
            } else {
                verified.fail(ExchangeError.tls("the certificate does not name \(name)"))
                context.close(promise: nil)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        verified.fail(error)
        context.fireErrorCaught(error)
    }
}

struct CollectedResponse: Sendable {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]
}

/// Gathers one response and completes the promise (once).
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let promise: Once<CollectedResponse>
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    init(promise: Once<CollectedResponse>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body(let b): body += b.readableBytesView
        case .end:
            guard let head else { return }
            promise.succeed(CollectedResponse(status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) }, body: body))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ExchangeError.closedEarly)
        context.fireChannelInactive()
    }
}

/// A promise completed at most once, whoever comes first (the answer, an error, the deadline).
final class Once<Value: Sendable>: Sendable {
    private let promise: EventLoopPromise<Value>
    private let done = Mutex(false)

    init(_ promise: EventLoopPromise<Value>) { self.promise = promise }

    var future: EventLoopFuture<Value> { promise.futureResult }

    private func claim() -> Bool {
        done.withLock { d in
            defer { d = true }
            return !d
        }
    }

    func succeed(_ r: Value) { if claim() { promise.succeed(r) } }
    func fail(_ e: any Error) { if claim() { promise.fail(e) } }
}

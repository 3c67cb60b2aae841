#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import MeshNet
import NIOCore
import NIOPosix

extension MeshDNSOutsideZonePolicy {
    /// The `nameserver` entries of a resolv.conf file (default `/etc/resolv.conf`) as forwarding targets,
    /// leaving out `excluded` addresses (pass the server's own listen addresses, so a host whose resolver
    /// is the mesh server does not forward to itself) and scoped IPv6 entries (`fe80::1%eth0`).
    public static func systemResolvers(resolvConf path: String = "/etc/resolv.conf",
                                       excluding excluded: [IPAddress] = []) -> [HostPort] {
        guard let text = readSmallFile(path) else { return [] }
        var out: [HostPort] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver", let address = IPAddress(String(fields[1])),
                  !excluded.contains(address) else { continue }
            out.append(HostPort(host: address.description, port: 53))
        }
        return out
    }

    /// Reads a file of at most 64 KiB, or returns nil.
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65536 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Relays out-of-zone queries to upstream resolvers over UDP and hands the replies back.
///
/// Lives on the server's event loop and is only touched there. Each relayed query gets a fresh random id
/// and goes out from a socket with an OS-chosen port; a reply is accepted only from the upstream it was
/// sent to and with that id, which keeps off-path forgery as hard as for any stub resolver.
final class DNSForwarder {
    typealias Completion = (ByteBuffer) -> Void

    private struct Pending {
        var query: ByteBuffer
        var clientID: UInt16
        var upstreamIndex: Int
        var timer: Scheduled<Void>?
        /// A client on TCP can take any size, so a truncated UDP reply is fetched again over TCP for it.
        var clientTransport: MeshDNSTransport
        var completion: Completion
    }

    private let upstreams: [SocketAddress]
    private let timeout: TimeAmount
    private let maxPending: Int
    private let loop: any EventLoop
    private let logger: Logger
    private var v4Channel: (any Channel)?
    private var v6Channel: (any Channel)?
    private var pending: [UInt16: Pending] = [:]

    private init(upstreams: [SocketAddress], timeout: TimeAmount, maxPending: Int, loop: any EventLoop,
                 logger: Logger) {
        self.upstreams = upstreams
        self.timeout = timeout
        self.maxPending = max(1, maxPending)
        self.loop = loop
        self.logger = logger
    }

    /// Creates a forwarder with one socket per address family its upstreams need.
    static func make(upstreams: [HostPort], timeout: TimeAmount, maxPending: Int, on loop: any EventLoop,
                     logger: Logger) async throws -> (channels: [any Channel], forwarder: NIOLoopBound<DNSForwarder>) {
        guard !upstreams.isEmpty else { throw MeshDNSServerError.noUpstreams }
        var addresses: [SocketAddress] = []
        for upstream in upstreams {
            guard let ip = upstream.address else { throw MeshDNSServerError.upstreamNotAnAddress(upstream.host) }
            addresses.append(try SocketAddress(ipAddress: ip.description, port: Int(upstream.port)))
        }
        let resolved = addresses
        let bound = try await loop.submit {
            NIOLoopBound(DNSForwarder(upstreams: resolved, timeout: timeout, maxPending: maxPending, loop: loop,
                                      logger: logger), eventLoop: loop)
        }.get()
        var channels: [any Channel] = []
        do {
            for (family, wildcard) in [(NIOBSDSocket.ProtocolFamily.inet, "0.0.0.0"), (.inet6, "::")]
            where resolved.contains(where: { $0.protocol == family }) {
                let channel = try await DatagramBootstrap(group: loop)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(DNSForwarderReplyHandler(forwarder: bound))
                        }
                    }
                    .bind(host: wildcard, port: 0)
                    .get()
                channels.append(channel)
                try await loop.submit {
                    if family == .inet { bound.value.v4Channel = channel } else { bound.value.v6Channel = channel }
                }.get()
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return (channels, bound)
    }

    /// Relays `query` (a whole, already validated message) and calls `completion` once with the reply,
    /// or with SERVFAIL when no upstream answers in time or too many queries are in flight.
    ///
    /// Queries always go out over UDP first. For a client on TCP, a truncated reply is fetched again over
    /// TCP from the same upstream, so the client gets the whole answer.
    func forward(_ query: ByteBuffer, from clientTransport: MeshDNSTransport, completion: @escaping Completion) {
        guard let clientID = query.getInteger(at: query.readerIndex, as: UInt16.self) else { return }
        guard pending.count < maxPending, let id = freshID() else {
            logger.debug("mesh DNS forward refused: too many in flight", metadata: ["dns.pending": "\(pending.count)"])
            completion(Self.serverFailure(for: query))
            return
        }
        var outgoing = query
        outgoing.setInteger(id, at: outgoing.readerIndex)
        pending[id] = Pending(query: outgoing, clientID: clientID, upstreamIndex: 0, timer: nil,
                              clientTransport: clientTransport, completion: completion)
        send(id)
    }

    private func freshID() -> UInt16? {
        for _ in 0..<32 {
            let id = UInt16.random(in: .min ... .max)
            if pending[id] == nil { return id }
        }
        return nil
    }

    private func send(_ id: UInt16) {
        guard var entry = pending[id] else { return }
        let upstream = upstreams[entry.upstreamIndex]
        let channel = upstream.protocol == .inet ? v4Channel : v6Channel
        let attempt = entry.upstreamIndex
        entry.timer = loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            timedOut(id, attempt: attempt)
        }
        pending[id] = entry
        channel?.writeAndFlush(AddressedEnvelope(remoteAddress: upstream, data: entry.query), promise: nil)
    }

    private func timedOut(_ id: UInt16, attempt: Int) {
        guard var entry = pending[id], entry.upstreamIndex == attempt else { return }
        logger.debug("mesh DNS upstream timed out", metadata: ["dns.upstream": "\(upstreams[attempt])"])
        if attempt + 1 < upstreams.count {
            entry.upstreamIndex = attempt + 1
            pending[id] = entry
            send(id)
        } else {
            pending[id] = nil
            var failure = Self.serverFailure(for: entry.query)
            failure.setInteger(entry.clientID, at: failure.readerIndex)
            entry.completion(failure)
        }
    }

    /// Takes a datagram from an upstream; anything that is not the awaited reply is dropped.
    func received(_ envelope: AddressedEnvelope<ByteBuffer>) {
        var reply = envelope.data
        guard reply.readableBytes >= DNSMessage.headerSize,
              let id = reply.getInteger(at: reply.readerIndex, as: UInt16.self),
              let flags = reply.getInteger(at: reply.readerIndex + 2, as: UInt8.self), flags & 0x80 != 0,
              let entry = pending[id], envelope.remoteAddress == upstreams[entry.upstreamIndex] else { return }
        pending[id] = nil
        entry.timer?.cancel()
        if entry.clientTransport == .tcp, flags & 0x02 != 0 {
            retryOverTCP(entry, upstream: envelope.remoteAddress)
            return
        }
        reply.setInteger(entry.clientID, at: reply.readerIndex)
        entry.completion(reply)
    }

    /// Asks `upstream` again over a fresh TCP connection; on any failure the client gets SERVFAIL.
    private func retryOverTCP(_ entry: Pending, upstream: SocketAddress) {
        let exchange = DNSUpstreamTCPExchange(query: entry.query, timeout: timeout, loop: loop)
        exchange.start(to: upstream) { [logger] result in
            var reply: ByteBuffer
            switch result {
            case .success(let answer):
                reply = answer
            case .failure(let error):
                logger.debug("mesh DNS upstream TCP retry failed", metadata: [
                    "dns.upstream": "\(upstream)", "error": "\(error)",
                ])
                reply = Self.serverFailure(for: entry.query)
            }
            if reply.readableBytes >= 2 { reply.setInteger(entry.clientID, at: reply.readerIndex) }
            entry.completion(reply)
        }
    }

    /// SERVFAIL for a query that could not be relayed, echoing its id, question and EDNS presence.
    static func serverFailure(for query: ByteBuffer) -> ByteBuffer {
        var reply = DNSMessage(header: DNSHeader(isResponse: true))
        if let parsed = try? DNSMessage(parsing: query) {
            reply.header = DNSHeader(id: parsed.header.id, isResponse: true, opcode: parsed.header.opcode,
                                     recursionDesired: parsed.header.recursionDesired, recursionAvailable: true)
            reply.questions = parsed.questions
            if parsed.edns != nil { reply.edns = DNSEDNS() }
        }
        reply.responseCode = .serverFailure
        var buffer = ByteBufferAllocator().buffer(capacity: 512)
        reply.write(to: &buffer, maxSize: MeshDNSResponder.classicUDPSize)
        return buffer
    }
}

/// Passes datagrams from upstream resolvers to the forwarder.
final class DNSForwarderReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let forwarder: NIOLoopBound<DNSForwarder>

    init(forwarder: NIOLoopBound<DNSForwarder>) {
        self.forwarder = forwarder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        forwarder.value.received(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // An unreachable upstream shows up here as ECONNREFUSED; the timeout moves on to the next one.
    }
}

/// Why a TCP exchange with an upstream failed.
enum DNSUpstreamTCPError: Error {
    case timedOut
    case closedWithoutReply
}

/// One query and its reply over a new TCP connection to an upstream, bounded by a timeout.
/// Lives on the forwarder's event loop.
final class DNSUpstreamTCPExchange {
    private let query: ByteBuffer
    private let timeout: TimeAmount
    private let loop: any EventLoop
    private var completion: ((Result<ByteBuffer, any Error>) -> Void)?
    private var channel: (any Channel)?
    private var timer: Scheduled<Void>?

    init(query: ByteBuffer, timeout: TimeAmount, loop: any EventLoop) {
        self.query = query
        self.timeout = timeout
        self.loop = loop
    }

    func start(to upstream: SocketAddress, completion: @escaping (Result<ByteBuffer, any Error>) -> Void) {
        self.completion = completion
        timer = loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            finish(.failure(DNSUpstreamTCPError.timedOut))
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(DNSUpstreamTCPHandler(exchange: bound))
                }
            }
            .connect(to: upstream)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    guard self.completion != nil else {
                        channel.close(promise: nil)
                        return
                    }
                    self.channel = channel
                    channel.writeAndFlush(DNSTCPHandler.framed(query, allocator: channel.allocator), promise: nil)
                case .failure(let error):
                    finish(.failure(error))
                }
            }
    }

    /// Completes once; later calls (a reply racing the timer, the close after a reply) do nothing.
    func finish(_ result: Result<ByteBuffer, any Error>) {
        guard let completion else { return }
        self.completion = nil
        timer?.cancel()
        channel?.close(promise: nil)
        channel = nil
        completion(result)
    }
}

/// Hands the first framed reply of an upstream TCP connection to its exchange.
final class DNSUpstreamTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let exchange: NIOLoopBound<DNSUpstreamTCPExchange>

    init(exchange: NIOLoopBound<DNSUpstreamTCPExchange>) {
        self.exchange = exchange
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        exchange.value.finish(.success(unwrapInboundIn(data)))
    }

    func channelInactive(context: ChannelHandlerContext) {
        exchange.value.finish(.failure(DNSUpstreamTCPError.closedWithoutReply))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        exchange.value.finish(.failure(error))
    }
}

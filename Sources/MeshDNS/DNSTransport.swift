import MeshNet
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// What every socket handler of one server shares.
struct DNSServingContext: Sendable {
    let responder: MeshDNSResponder
    /// Present when the policy is to forward; only touched on the server's event loop.
    let forwarder: NIOLoopBound<DNSForwarder>?
    let connections: DNSTCPConnections
    let idleTimeout: TimeAmount
    let logger: Logger
}

#if os(Linux)
/// `IP_FREEBIND`: bind an address no interface has yet. Linux honours it for IPv6 sockets too.
let freeBindOption = ChannelOptions.Types.SocketOption(level: .init(rawValue: CInt(IPPROTO_IP)),
                                                       name: .init(rawValue: 15))
#endif

// MARK: - UDP

/// Binds the UDP socket of one listen address.
enum DNSUDPListener {
    /// Bytes set aside per datagram in a vector read. Queries are small; a larger datagram arrives cut
    /// and gets FORMERR, which is the right answer for a query that size anyway.
    static let datagramCapacity = 4096

    static func bind(host: String, port: Int, context: DNSServingContext, messagesPerRead: Int, freeBind: Bool,
                     on loop: any EventLoop) async throws -> any Channel {
        let batch = max(1, messagesPerRead)
        var bootstrap = DatagramBootstrap(group: loop)
        #if os(Linux)
        if freeBind { bootstrap = bootstrap.channelOption(freeBindOption, value: 1) }
        #endif
        return try await bootstrap
            // Up to four vector reads per wake-up: enough to drain a burst, few enough that other sockets
            // on the loop (TCP, the forwarder) still get their turn.
            .channelOption(.maxMessagesPerRead, value: 4)
            .channelOption(.datagramVectorReadMessageCount, value: batch)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: batch * datagramCapacity))
            // A larger receive buffer absorbs bursts while the loop is busy instead of dropping queries.
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DNSUDPHandler(context: context, flushEvery: batch))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Answers each datagram; replies are written as they are computed and flushed once per read batch, so
/// NIO sends a batch with one `sendmmsg`.
final class DNSUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let context: DNSServingContext
    /// Replies written but not yet flushed.
    private var unflushed = 0
    /// Flush at least this often within one read burst, so the first replies of a long burst do not wait
    /// for the last queries to be answered.
    private let flushEvery: Int

    init(context: DNSServingContext, flushEvery: Int) {
        self.context = context
        self.flushEvery = max(1, flushEvery)
    }

    func channelRead(context channelContext: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let client = context.responder.visibility == nil ? nil : envelope.remoteAddress.ipAddress.flatMap(IPAddress.init)
        let outcome = envelope.data.withUnsafeReadableBytes { context.responder.respond(to: $0, transport: .udp, client: client) }
        switch outcome {
        case .drop:
            return
        case .reply(let message, let maxSize):
            var buffer = channelContext.channel.allocator.buffer(capacity: 512)
            message.write(to: &buffer, maxSize: maxSize)
            channelContext.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress,
                                                                   data: buffer)), promise: nil)
            unflushed += 1
            if unflushed >= flushEvery {
                unflushed = 0
                channelContext.flush()
            }
        case .forward:
            guard let forwarder = context.forwarder?.value else { return }
            let channel = channelContext.channel
            let client = envelope.remoteAddress
            forwarder.forward(envelope.data, from: .udp) { reply in
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: reply), promise: nil)
            }
        }
    }

    func channelReadComplete(context channelContext: ChannelHandlerContext) {
        if unflushed > 0 {
            unflushed = 0
            channelContext.flush()
        }
        channelContext.fireChannelReadComplete()
    }

    func errorCaught(context channelContext: ChannelHandlerContext, error: any Error) {
        // A failed send to one client (e.g. an ICMP port unreachable) must not stop the server.
        context.logger.debug("mesh DNS UDP error", metadata: ["error": "\(error)"])
    }
}

// MARK: - TCP

/// Tracks open TCP connections so their number stays bounded and shutdown can close them all.
final class DNSTCPConnections: Sendable {
    private let limit: Int
    private let open = Mutex<(channels: [ObjectIdentifier: any Channel], closed: Bool)>(([:], false))

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Registers a new connection; false when the limit is reached or the server is stopping.
    func admit(_ channel: any Channel) -> Bool {
        open.withLock { state in
            guard !state.closed, state.channels.count < limit else { return false }
            state.channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    func release(_ channel: any Channel) {
        _ = open.withLock { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    var count: Int { open.withLock { $0.channels.count } }

    func closeAll() {
        let channels = open.withLock { state in
            state.closed = true
            return Array(state.channels.values)
        }
        for channel in channels { channel.close(promise: nil) }
    }
}

/// The connection was over the limit and has been closed.
struct DNSTooManyConnections: Error {}

/// Binds the TCP listener of one listen address.
enum DNSTCPListener {
    static func bind(host: String, port: Int, context: DNSServingContext, freeBind: Bool,
                     on loop: any EventLoop) async throws -> any Channel {
        var bootstrap = ServerBootstrap(group: loop, childGroup: loop)
        #if os(Linux)
        if freeBind { bootstrap = bootstrap.serverChannelOption(freeBindOption, value: 1) }
        #endif
        return try await bootstrap
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard context.connections.admit(channel) else {
                    // Failing the initializer makes NIO close the connection straight away.
                    return channel.eventLoop.makeFailedFuture(DNSTooManyConnections())
                }
                let connections = context.connections
                channel.closeFuture.whenComplete { _ in connections.release(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                    try sync.addHandler(IdleStateHandler(readTimeout: context.idleTimeout))
                    try sync.addHandler(DNSTCPHandler(context: context))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Splits a TCP stream into DNS messages by their two-byte length prefix (RFC 1035 §4.2.2).
struct DNSTCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        let frame = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer,
                             seenEOF: Bool) throws -> DecodingState {
        // A partial message at end of stream can never be answered; whole ones still are.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}

/// Answers the messages of one TCP connection, in order; several may arrive back to back (pipelining).
final class DNSTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let context: DNSServingContext
    private var needsFlush = false

    init(context: DNSServingContext) {
        self.context = context
    }

    static func framed(_ message: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: message.readableBytes + 2)
        out.writeInteger(UInt16(truncatingIfNeeded: message.readableBytes))
        out.writeImmutableBuffer(message)
        return out
    }

    func channelRead(context channelContext: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let client = context.responder.visibility == nil ? nil : channelContext.channel.remoteAddress?.ipAddress.flatMap(IPAddress.init)
        let outcome = frame.withUnsafeReadableBytes { context.responder.respond(to: $0, transport: .tcp, client: client) }
        switch outcome {
        case .drop:
            return
        case .reply(let message, let maxSize):
            var buffer = channelContext.channel.allocator.buffer(capacity: 514)
            buffer.writeInteger(UInt16(0))
            message.write(to: &buffer, maxSize: maxSize)
            buffer.setInteger(UInt16(truncatingIfNeeded: buffer.readableBytes - 2), at: buffer.readerIndex)
            channelContext.write(wrapOutboundOut(buffer), promise: nil)
            needsFlush = true
        case .forward:
            guard let forwarder = context.forwarder?.value else { return }
            let channel = channelContext.channel
            forwarder.forward(frame, from: .tcp) { reply in
                channel.writeAndFlush(Self.framed(reply, allocator: channel.allocator), promise: nil)
            }
        }
    }

    func channelReadComplete(context channelContext: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            channelContext.flush()
        }
        channelContext.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context channelContext: ChannelHandlerContext) {
        // A client that sends queries but does not read the replies would otherwise make us buffer replies
        // without bound: stop reading until its socket drains. If it never does, the idle timeout ends it.
        let writable = channelContext.channel.isWritable
        try? channelContext.channel.syncOptions?.setOption(.autoRead, value: writable)
        if writable { channelContext.read() }
        channelContext.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context channelContext: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            channelContext.close(promise: nil)
            return
        }
        channelContext.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context channelContext: ChannelHandlerContext, error: any Error) {
        context.logger.debug("mesh DNS TCP connection error", metadata: ["error": "\(error)"])
        channelContext.close(promise: nil)
    }
}

import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Why the HTTPS front could not start or take a certificate.
public enum HTTPSFrontError: Error, Sendable, Equatable {
    case badCertificate(String)
    case bindFailed(String)
}

/// A TLS front on given addresses: each connection is decrypted with the current certificate and its
/// bytes relayed, unchanged, to one plain-TCP upstream (the gateway beside the node). A new
/// certificate (renewal, rename) applies to the next connection; open ones keep theirs.
public final class HTTPSFront: Sendable {
    public let listen: [(host: String, port: Int)]
    public let upstream: (host: String, port: Int)
    let group: any EventLoopGroup
    let logger: Logger
    private let context = Mutex<NIOSSLContext?>(nil)
    private let channels = Mutex<[any Channel]>([])

    public init(listen: [(host: String, port: Int)], upstream: (host: String, port: Int),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.listen = listen
        self.upstream = upstream
        self.group = group
        self.logger = logger
    }

    /// Installs a certificate chain (leaf first, PEM blocks each starting on a line of its own) and
    /// its private key (PEM).
    public func install(certificateChainPEM: String, privateKeyPEM: String) throws(HTTPSFrontError) {
        do {
            let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
            var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            tls.minimumTLSVersion = .tlsv12
            let made = try NIOSSLContext(configuration: tls)
            context.withLock { $0 = made }
        } catch {
            throw .badCertificate("\(error)")
        }
    }

    /// Whether a certificate is installed.
    public var hasCertificate: Bool { context.withLock { $0 != nil } }

    /// Binds every listen address (even one not yet on an interface: IP_FREEBIND). Needs a certificate.
    public func start() async throws(HTTPSFrontError) {
        guard hasCertificate else { throw .badCertificate("no certificate installed") }
        let upstream = self.upstream, logger = self.logger
        for address in listen {
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(ChannelOptions.Types.SocketOption(level: .ip,
                                                                       name: NIOBSDSocket.Option(rawValue: 15 /* IP_FREEBIND */)), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    guard let ctx = self.context.withLock({ $0 }) else { return channel.close() }
                    return ClientBootstrap(group: channel.eventLoop)
                        .channelOption(.socketOption(.tcp_nodelay), value: 1)
                        .connectTimeout(.seconds(5))
                        .connect(host: upstream.host, port: upstream.port)
                        .flatMapThrowing { peer in
                            let (a, b) = ByteRelay.pair()
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: ctx))
                            try channel.pipeline.syncOperations.addHandler(a)
                            try peer.pipeline.syncOperations.addHandler(b)
                        }
                        .flatMapErrorThrowing { error in
                            logger.warning("https front: upstream not reachable", metadata: ["error": "\(error)"])
                            throw error
                        }
                }
            do {
                let channel = try await bootstrap.bind(host: address.host, port: address.port).get()
                channels.withLock { $0.append(channel) }
                logger.info("https front listening", metadata: ["address": "\(address.host)", "port": "\(address.port)",
                                                                "upstream": "\(upstream.host):\(upstream.port)"])
            } catch {
                throw .bindFailed("\(address.host):\(address.port): \(error)")
            }
        }
    }

    /// The bound local addresses (port 0 resolved), for tests.
    public var boundAddresses: [SocketAddress] { channels.withLock { $0.compactMap(\.localAddress) } }

    /// Closes the listeners (open connections finish on their own).
    public func stop() async {
        let all = channels.withLock { c in
            defer { c = [] }
            return c
        }
        for c in all { try? await c.close() }
    }
}

/// Relays the bytes read on one channel to its partner, with back-pressure (a side reads only while
/// its partner can write), and closes both when either closes.
final class ByteRelay: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: ByteRelay?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (ByteRelay, ByteRelay) {
        let a = ByteRelay(), b = ByteRelay()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.forward(data) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.flushForward() }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.closeFromPartner()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        partner?.closeFromPartner()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.isWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    private func forward(_ data: NIOAny) { context?.write(data, promise: nil) }

    private func flushForward() { context?.flush() }

    private func closeFromPartner() { context?.close(promise: nil) }

    private func partnerWritable() {
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }
}

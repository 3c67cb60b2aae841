import MeshDNS
import MeshNet
import NIOCore
import NIOPosix

/// Resolves mesh names (`<node>.<domain>`) through the mesh DNS, the resolver each node serves on its
/// mesh addresses, never through the system's: the phone's mesh config points its `DNS =` there.
public struct MeshResolver: Sendable {
    /// The mesh DNS servers, tried in order (`ip` and port).
    public var servers: [(host: String, port: Int)]
    public var timeout: Duration

    public init(servers: [(host: String, port: Int)], timeout: Duration = .milliseconds(500)) {
        self.servers = servers
        self.timeout = timeout
    }

    /// The IPv4 and IPv6 addresses of `name` (A first, then AAAA), from the first server that answers.
    public func resolve(_ name: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(ExchangeError) -> [String] {
        var lastError = ExchangeError.resolve("no mesh DNS server configured")
        for server in servers {
            do {
                var out: [String] = []
                for type in [DNSRecordType.a, .aaaa] {
                    out += try await query(name, type: type, server: server, group: group)
                }
                if !out.isEmpty { return out }
                lastError = .resolve("\(name): no address")
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    func query(_ name: String, type: DNSRecordType, server: (host: String, port: Int), group: any EventLoopGroup) async throws(ExchangeError) -> [String] {
        let qname: DNSName
        do {
            qname = try DNSName(name)
        } catch {
            throw .resolve("\(name) is not a DNS name")
        }
        let id = UInt16.random(in: 0...UInt16.max)
        let query = DNSMessage(header: DNSHeader(id: id, recursionDesired: true), questions: [DNSQuestion(name: qname, type: type)])
        let remote: SocketAddress
        do {
            remote = try SocketAddress(ipAddress: server.host, port: server.port)
        } catch {
            throw .resolve("\(server.host) is not an IP address")
        }
        let loop = group.next()
        let reply = Once(loop.makePromise(of: [UInt8].self))
        let ms = Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let deadline = loop.scheduleTask(in: .milliseconds(ms)) { reply.fail(ExchangeError.timedOut) }
        defer { deadline.cancel() }
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: loop)
                .channelInitializer { ch in
                    do {
                        try ch.pipeline.syncOperations.addHandler(DatagramCollector(reply: reply, id: id))
                        return ch.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        return ch.eventLoop.makeFailedFuture(error)
                    }
                }
                .bind(host: remote.protocol == .inet6 ? "::" : "0.0.0.0", port: 0).get()
        } catch {
            reply.fail(error)
            throw .resolve("no socket: \(error)")
        }
        defer { channel.close(promise: nil) }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: query.serialized())), promise: nil)
        let bytes: [UInt8]
        do {
            bytes = try await reply.future.get()
        } catch let e as ExchangeError {
            throw e
        } catch {
            throw .resolve("\(error)")
        }
        let answer: DNSMessage
        do {
            answer = try DNSMessage(parsing: bytes)
        } catch {
            throw .resolve("malformed answer")
        }
        guard answer.responseCode == .noError else { throw .resolve("\(name): \(answer.responseCode)") }
        return answer.answers.compactMap { r -> String? in
            switch r.data {
            case .a(let ip): ip.description
            case .aaaa(let ip): ip.description
            default: nil
            }
        }
    }
}

final class DatagramCollector: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let reply: Once<[UInt8]>
    let id: UInt16

    init(reply: Once<[UInt8]>, id: UInt16) {
        self.reply = reply
        self.id = id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let bytes = Array(envelope.data.readableBytesView)
        // Only the answer to this query (its id); anything else is ignored.
        guard bytes.count >= 2, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == id else { return }
        reply.succeed(bytes)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { reply.fail(error) }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import MeshNet
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// How the mesh DNS server listens and what it does outside the zone.
public struct MeshDNSServerConfiguration: Sendable {
    /// The addresses to serve on, normally the node's mesh IPv4 and IPv6 addresses.
    public var listenAddresses: [IPAddress]
    /// The port for both UDP and TCP; 0 picks a free port (the same one for both transports).
    public var port: UInt16
    /// Serve over UDP.
    public var serveUDP: Bool
    /// Serve over TCP (clients retry there after a truncated UDP reply).
    public var serveTCP: Bool
    /// The EDNS0 UDP payload size advertised and never exceeded; 1232 avoids IP fragmentation on any
    /// path with a 1280-byte IPv6 MTU, including a WireGuard tunnel.
    public var maxUDPPayloadSize: UInt16
    /// Refuse or forward names outside the zone.
    public var outsideZonePolicy: MeshDNSOutsideZonePolicy
    /// A TCP connection with no query for this long is closed (RFC 7766 §6.2.3).
    public var tcpIdleTimeout: TimeAmount
    /// Connections beyond this many are closed as soon as they are accepted, bounding memory and descriptors.
    public var maxTCPConnections: Int
    /// How long to wait for one upstream before trying the next, and answering SERVFAIL after the last.
    public var forwardTimeout: TimeAmount
    /// Forwarded queries in flight beyond this many get SERVFAIL at once.
    public var maxPendingForwards: Int
    /// Datagrams read per `recvmmsg` call, and replies written per `sendmmsg` flush; batching system calls
    /// is what lets one event loop keep up with a high query rate.
    public var udpMessagesPerRead: Int
    /// Bind listen addresses even if no interface has them yet (Linux `IP_FREEBIND`), so the node agent
    /// can start DNS before WireGuard brings up the mesh interface; queries arrive once it does.
    public var bindBeforeAddressExists: Bool
    /// When set, a name of the zone is answered only if this says the asking address may see it;
    /// other names look as if they did not exist (NXDOMAIN). The mesh uses it to answer a device only
    /// with the names it may reach (access policies).
    public var visibility: MeshDNSVisibility?

    /// Creates a configuration with the defaults described on each property.
    public init(listenAddresses: [IPAddress], port: UInt16 = 53, serveUDP: Bool = true, serveTCP: Bool = true,
                maxUDPPayloadSize: UInt16 = 1232, outsideZonePolicy: MeshDNSOutsideZonePolicy = .refuse,
                tcpIdleTimeout: TimeAmount = .seconds(10), maxTCPConnections: Int = 128,
                forwardTimeout: TimeAmount = .seconds(2), maxPendingForwards: Int = 1024,
                udpMessagesPerRead: Int = 32, bindBeforeAddressExists: Bool = false, visibility: MeshDNSVisibility? = nil) {
        self.visibility = visibility
        self.listenAddresses = listenAddresses
        self.port = port
        self.serveUDP = serveUDP
        self.serveTCP = serveTCP
        self.maxUDPPayloadSize = maxUDPPayloadSize
        self.outsideZonePolicy = outsideZonePolicy
        self.tcpIdleTimeout = tcpIdleTimeout
        self.maxTCPConnections = maxTCPConnections
        self.forwardTimeout = forwardTimeout
        self.maxPendingForwards = maxPendingForwards
        self.udpMessagesPerRead = udpMessagesPerRead
        self.bindBeforeAddressExists = bindBeforeAddressExists
    }
}

/// The DNS part of `/api/mesh/state`, encoded as `dns_status`.
public struct MeshDNSStatus: Sendable, Hashable, Codable {
    /// True while the server has its sockets bound.
    public var serving: Bool
    /// The zone's apex, without the trailing dot.
    public var zone: String
    /// A and AAAA records in the zone.
    public var recordCount: Int
    /// Names in the zone.
    public var nameCount: Int
    /// The SOA serial (the revision of the last update).
    public var revision: UInt32
    /// When the zone was last updated; nil before the first update.
    public var lastUpdate: Date?
    /// Where the server listens, as `udp://address:port` and `tcp://address:port`.
    public var listenAddresses: [String]

    enum CodingKeys: String, CodingKey {
        case serving, zone, revision
        case recordCount = "record_count"
        case nameCount = "name_count"
        case lastUpdate = "last_update"
        case listenAddresses = "listen_addresses"
    }
}

/// Why the server stopped or could not start.
public enum MeshDNSServerError: Error, Sendable, Hashable {
    /// A forwarding target is not an address literal.
    case upstreamNotAnAddress(String)
    /// The forward policy lists no upstream.
    case noUpstreams
    /// Nothing to serve: no listen address, or neither UDP nor TCP.
    case nothingToListenOn
    /// A listening socket closed without a shutdown being asked for.
    case listenerClosed
    /// The server is not serving: it has stopped, or stopped before it finished binding.
    case notServing
}

/// The authoritative DNS server for the mesh zone, over UDP and TCP, as a swift-service-lifecycle service.
///
/// `run()` binds every socket on one event loop, serves until the task is cancelled or a graceful
/// shutdown is triggered, then closes its sockets and connections and returns. Everything per-query
/// happens on that event loop, so the hot path takes no locks beyond reading the zone snapshot.
public final class MeshDNSServer: Service, Sendable {
    /// The zone served; update it at any time.
    public let zone: MeshDNSZone
    /// The configuration the server was created with.
    public let configuration: MeshDNSServerConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var listening: [String] = []
        var boundAddresses: [SocketAddress] = []
        var serving = false
        var finished: (any Error)?
        var stopRequested = false
        var sockets: Sockets?
        var waiters: [CheckedContinuation<[SocketAddress], any Error>] = []
    }

    /// Everything `run()` opened, so `stop()` can close it.
    private struct Sockets: Sendable {
        var listeners: [(transport: MeshDNSTransport, channel: any Channel)] = []
        var forwarders: [any Channel] = []
        var connections: DNSTCPConnections
    }

    /// Creates a server; nothing is bound until `run()`.
    /// - Parameter eventLoopGroup: one of its loops carries every socket of this server.
    public init(zone: MeshDNSZone, configuration: MeshDNSServerConfiguration,
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.zone = zone
        self.configuration = configuration
        group = eventLoopGroup
        self.logger = logger
    }

    /// The status for `/api/mesh/state`.
    public func status() -> MeshDNSStatus {
        let snapshot = zone.snapshot()
        let (serving, listening) = state.withLock { ($0.serving, $0.listening) }
        return MeshDNSStatus(serving: serving, zone: snapshot.origin.withoutTrailingDot,
                             recordCount: snapshot.recordCount, nameCount: snapshot.nameCount,
                             revision: snapshot.revision, lastUpdate: snapshot.lastUpdate,
                             listenAddresses: listening)
    }

    /// Waits until `run()` has bound its sockets and returns their addresses (for each listen address the
    /// UDP socket, then the TCP one); throws if `run()` fails or stops first.
    public func listeningAddresses() async throws -> [SocketAddress] {
        try await withCheckedThrowingContinuation { continuation in
            state.withLock { state in
                if state.serving {
                    continuation.resume(returning: state.boundAddresses)
                } else if let error = state.finished {
                    continuation.resume(throwing: error)
                } else {
                    state.waiters.append(continuation)
                }
            }
        }
    }

    /// Binds, serves until cancelled or gracefully shut down, then closes every socket and connection.
    /// Call it once per server.
    public func run() async throws {
        do {
            let sockets = try await bindAll(on: group.next())
            let stopAtOnce = state.withLock { state -> Bool in
                state.sockets = sockets
                state.serving = true
                state.finished = nil
                state.boundAddresses = sockets.listeners.compactMap(\.channel.localAddress)
                state.listening = sockets.listeners.compactMap { listener in
                    guard let address = listener.channel.localAddress, let ip = address.ipAddress,
                          let port = address.port else { return nil }
                    let scheme = listener.transport == .udp ? "udp" : "tcp"
                    return ip.contains(":") ? "\(scheme)://[\(ip)]:\(port)" : "\(scheme)://\(ip):\(port)"
                }
                for waiter in state.waiters { waiter.resume(returning: state.boundAddresses) }
                state.waiters = []
                return state.stopRequested
            }
            logger.info("mesh DNS serving", metadata: [
                "dns.zone": "\(zone.configuration.origin)", "dns.listen": "\(status().listenAddresses)",
            ])
            for listener in sockets.listeners {
                // Any listener closing, for whatever reason, stops the whole server so run() reports it.
                listener.channel.closeFuture.whenComplete { _ in self.stop() }
            }
            if stopAtOnce { stop() }
            await withGracefulShutdownHandler {
                await withTaskCancellationHandler {
                    for listener in sockets.listeners { try? await listener.channel.closeFuture.get() }
                    for forwarder in sockets.forwarders { try? await forwarder.closeFuture.get() }
                } onCancel: {
                    self.stop()
                }
            } onGracefulShutdown: {
                self.stop()
            }
            let requested = state.withLock { state -> Bool in
                state.serving = false
                state.listening = []
                state.sockets = nil
                state.finished = MeshDNSServerError.notServing
                return state.stopRequested
            }
            logger.info("mesh DNS stopped", metadata: ["dns.zone": "\(zone.configuration.origin)"])
            if !requested { throw MeshDNSServerError.listenerClosed }
        } catch {
            state.withLock { state in
                state.serving = false
                state.finished = error
                for waiter in state.waiters { waiter.resume(throwing: error) }
                state.waiters = []
            }
            throw error
        }
    }

    /// Closes every socket and connection; `run()` then returns. Safe to call any number of times.
    private func stop() {
        let sockets = state.withLock { state -> Sockets? in
            state.stopRequested = true
            return state.sockets
        }
        guard let sockets else { return }
        for listener in sockets.listeners { listener.channel.close(promise: nil) }
        for forwarder in sockets.forwarders { forwarder.close(promise: nil) }
        sockets.connections.closeAll()
    }

    private func bindAll(on loop: any EventLoop) async throws -> Sockets {
        let config = configuration
        guard !config.listenAddresses.isEmpty, config.serveUDP || config.serveTCP else {
            throw MeshDNSServerError.nothingToListenOn
        }
        var sockets = Sockets(connections: DNSTCPConnections(limit: config.maxTCPConnections))
        do {
            var forwarder: NIOLoopBound<DNSForwarder>?
            if case .forward(let upstreams) = config.outsideZonePolicy {
                let made = try await DNSForwarder.make(
                    upstreams: upstreams, timeout: config.forwardTimeout, maxPending: config.maxPendingForwards,
                    on: loop, logger: logger)
                sockets.forwarders = made.channels
                forwarder = made.forwarder
            }
            let responder = MeshDNSResponder(zone: zone, maxUDPPayloadSize: config.maxUDPPayloadSize,
                                             forwardsOutsideZone: forwarder != nil, visibility: config.visibility)
            let context = DNSServingContext(responder: responder, forwarder: forwarder,
                                            connections: sockets.connections, idleTimeout: config.tcpIdleTimeout,
                                            logger: logger)
            for address in config.listenAddresses {
                sockets.listeners += try await bindPair(address: address, context: context, on: loop)
            }
            return sockets
        } catch {
            for listener in sockets.listeners { try? await listener.channel.close() }
            for forwarder in sockets.forwarders { try? await forwarder.close() }
            throw error
        }
    }

    /// Binds UDP and TCP on one address and the same port. With port 0 the UDP socket picks the port and
    /// TCP follows it; if another process holds that TCP port, a few fresh ports are tried.
    private func bindPair(address: IPAddress, context: DNSServingContext,
                          on loop: any EventLoop) async throws -> [(transport: MeshDNSTransport, channel: any Channel)] {
        let config = configuration
        let host = address.description
        let attempts = config.port == 0 && config.serveUDP && config.serveTCP ? 5 : 1
        for attempt in 1...attempts {
            var pair: [(transport: MeshDNSTransport, channel: any Channel)] = []
            var port = Int(config.port)
            do {
                if config.serveUDP {
                    let udp = try await DNSUDPListener.bind(host: host, port: port, context: context,
                                                            messagesPerRead: config.udpMessagesPerRead,
                                                            freeBind: config.bindBeforeAddressExists, on: loop)
                    pair.append((.udp, udp))
                    port = udp.localAddress?.port ?? port
                }
                if config.serveTCP {
                    let tcp = try await DNSTCPListener.bind(host: host, port: port, context: context,
                                                            freeBind: config.bindBeforeAddressExists, on: loop)
                    pair.append((.tcp, tcp))
                }
                return pair
            } catch {
                for (_, channel) in pair { try? await channel.close() }
                if attempt == attempts { throw error }
            }
        }
        throw MeshDNSServerError.nothingToListenOn
    }
}

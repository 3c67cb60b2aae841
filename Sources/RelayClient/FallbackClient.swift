import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// When the relay counts as degraded and when as recovered (docs/fallback.md has the rules).
public struct FallbackPolicy: Sendable {
    /// Deadline of one request on the relay: past it the request fails there and goes over the mesh.
    public var relayTimeout: Duration
    /// A relay answer slower than this counts against the relay (it is still returned).
    public var slowAfter: Duration
    /// How many of the latest relay outcomes are looked at.
    public var window: Int
    /// The relay is degraded when this many outcomes of the window failed (error, timeout, 5xx) or were slow.
    public var degradedAfter: Int
    /// While degraded, how often the relay is probed (`GET probePath`).
    public var probeInterval: Duration
    public var probePath: String
    /// Consecutive good probes (answered, not 5xx, not slow) that bring the relay back.
    public var recoverAfter: Int
    /// Deadline of one request on a node over the mesh (name resolution, TLS and the answer).
    public var meshTimeout: Duration

    public init(relayTimeout: Duration = .milliseconds(1000), slowAfter: Duration = .milliseconds(500), window: Int = 4,
                degradedAfter: Int = 2, probeInterval: Duration = .seconds(1), probePath: String = "/healthz", recoverAfter: Int = 2,
                meshTimeout: Duration = .seconds(3)) {
        self.relayTimeout = relayTimeout
        self.slowAfter = slowAfter
        self.window = max(1, window)
        self.degradedAfter = min(max(1, degradedAfter), max(1, window))
        self.probeInterval = probeInterval
        self.probePath = probePath
        self.recoverAfter = max(1, recoverAfter)
        self.meshTimeout = meshTimeout
    }
}

/// Where the client sends requests now.
public enum FallbackMode: String, Sendable, Equatable {
    case relay
    case mesh
}

/// Why a request got no answer on any path.
public struct FallbackError: Error, Sendable, CustomStringConvertible {
    /// Each path tried, with why it failed.
    public var attempts: [(path: String, error: ExchangeError)]
    public var description: String { "no path answered: " + attempts.map { "\($0.path): \($0.error)" }.joined(separator: "; ") }
}

/// The fallback client: the phone side of the pairing (docs/fallback.md). Requests go to the API
/// through the relay while it is healthy. A request that fails on the relay is sent at once over the
/// mesh, so the caller still gets its answer; when the relay's recent outcomes show it degraded
/// (``FallbackPolicy``), every request goes over the mesh — to `https://<node>.<domain>:8443`, the
/// name resolved through the mesh DNS, TLS verified against the tenant CA alone — and ``run()``
/// probes the relay until it answers well again; then it is used again.
public final class FallbackClient: Service, Sendable {
    /// The relay's base URL (`http://host:port` or `https://host:port`).
    public let relay: URL
    /// The nodes' HTTPS URLs, in order of preference (the pairing reply's, the hub first).
    public let meshURLs: [URL]
    public let policy: FallbackPolicy
    let resolver: MeshResolver
    let meshTLS: NIOSSLContext
    let relayTLS: NIOSSLContext?
    let group: any EventLoopGroup
    let logger: Logger
    private let state = Mutex(HealthState())

    struct HealthState {
        var mode = FallbackMode.relay
        /// Latest relay outcomes, true = bad (failed or slow).
        var outcomes: [Bool] = []
        var goodProbes = 0
        var lastProbe: ContinuousClock.Instant?
        var preferredNode = 0
        var transitions: [(mode: FallbackMode, at: ContinuousClock.Instant, reason: String)] = []
    }

    /// - Parameters:
    ///   - caCertificatePEM: the tenant CA from the pairing reply: the only root trusted on the mesh.
    ///   - relayTrustRoots: extra roots for an HTTPS relay (nil: the system's).
    public init(relay: URL, meshURLs: [URL], caCertificatePEM: String, resolver: MeshResolver, policy: FallbackPolicy = FallbackPolicy(),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) throws {
        self.relay = relay
        self.meshURLs = meshURLs
        self.policy = policy
        self.resolver = resolver
        self.group = group
        self.logger = logger
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caCertificatePEM.utf8)))
        tls.certificateVerification = .fullVerification
        tls.minimumTLSVersion = .tlsv12
        meshTLS = try NIOSSLContext(configuration: tls)
        if relay.scheme == "https" {
            relayTLS = try NIOSSLContext(configuration: .makeClientConfiguration())
        } else {
            relayTLS = nil
        }
    }

    /// The path requests take now.
    public var mode: FallbackMode { state.withLock { $0.mode } }

    /// Every switch between the relay and the mesh so far, with when and why.
    public var transitions: [(mode: FallbackMode, at: ContinuousClock.Instant, reason: String)] { state.withLock { $0.transitions } }

    /// Sends a request by the path the relay's health says, falling back to the mesh when the relay
    /// fails it. Throws ``FallbackError`` only when no path answered.
    public func send(_ request: FallbackRequest) async throws(FallbackError) -> FallbackResponse {
        var attempts: [(path: String, error: ExchangeError)] = []
        switch mode {
        case .relay:
            switch await onRelay(request, timeout: policy.relayTimeout) {
            case .success(let r):
                record(bad: r.elapsed > policy.slowAfter, reason: "slow relay answer (\(r.elapsed))")
                return r
            case .failure(let e):
                record(bad: true, reason: "relay: \(e)")
                attempts.append(("relay", e))
            }
            return try await overMesh(request, attempts: attempts)
        case .mesh:
            return try await overMesh(request, attempts: attempts)
        }
    }

    /// Probes the relay while it is degraded, once per `probeInterval`, and brings the client back to
    /// it after `recoverAfter` good probes in a row. Run it beside the requests (in a ServiceGroup);
    /// without it a degraded client stays on the mesh.
    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                if probeDue() { await probeRelay() }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    // MARK: Paths

    func onRelay(_ request: FallbackRequest, timeout: Duration) async -> Result<FallbackResponse, ExchangeError> {
        let start = ContinuousClock.now
        let port = relay.port ?? (relay.scheme == "https" ? 443 : 80)
        let host = relay.host ?? "127.0.0.1"
        var r = request
        r.path = relay.path.trimmingSuffix("/") + request.path
        do {
            let tls = relayTLS.map { (context: $0, serverName: host) }
            let a = try await HTTPExchange.run(host: host, port: port, tls: tls, hostHeader: "\(host):\(port)", request: r, timeout: timeout, group: group)
            if a.status >= 500 { return .failure(.serverError(a.status)) }
            return .success(FallbackResponse(status: a.status, headers: a.headers, body: a.body, path: .relay, elapsed: .now - start))
        } catch let e as ExchangeError {
            return .failure(e)
        } catch {
            return .failure(.connect("\(error)"))
        }
    }

    func overMesh(_ request: FallbackRequest, attempts: [(path: String, error: ExchangeError)]) async throws(FallbackError) -> FallbackResponse {
        var attempts = attempts
        let first = state.withLock { $0.preferredNode }
        for k in 0..<meshURLs.count {
            let i = (first + k) % meshURLs.count
            let url = meshURLs[i]
            let start = ContinuousClock.now
            do {
                let a = try await onNode(url, request)
                if a.status >= 500 { throw ExchangeError.serverError(a.status) }
                state.withLock { $0.preferredNode = i }
                return FallbackResponse(status: a.status, headers: a.headers, body: a.body, path: .mesh(url.absoluteString), elapsed: .now - start,
                                        failedBefore: attempts)
            } catch let e as ExchangeError {
                attempts.append((url.absoluteString, e))
            } catch {
                attempts.append((url.absoluteString, .connect("\(error)")))
            }
        }
        logger.warning("no path answered", metadata: ["attempts": "\(attempts.map { "\($0.path): \($0.error)" })"])
        throw FallbackError(attempts: attempts)
    }

    func onNode(_ url: URL, _ request: FallbackRequest) async throws -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        guard let name = url.host else { throw ExchangeError.resolve("\(url) has no host") }
        let port = url.port ?? 443
        let deadline = ContinuousClock.now + policy.meshTimeout
        let addresses = try await resolver.resolve(name, group: group)
        var last = ExchangeError.resolve("\(name): no address")
        for address in addresses {
            let left = deadline - .now
            guard left > .zero else { throw ExchangeError.timedOut }
            do {
                return try await HTTPExchange.run(host: address, port: port, tls: (meshTLS, name), hostHeader: "\(name):\(port)",
                                                  request: request, timeout: left, group: group)
            } catch let e as ExchangeError {
                // A certificate the tenant CA did not sign, or for another name: never retried elsewhere
                // as if it were a network error.
                if case .tls = e { throw e }
                last = e
            }
        }
        throw last
    }

    // MARK: Health

    /// Records one relay outcome; degrades when the window holds `degradedAfter` bad ones.
    func record(bad: Bool, reason: String) {
        let degraded = state.withLock { s -> Bool in
            s.outcomes.append(bad)
            if s.outcomes.count > policy.window { s.outcomes.removeFirst(s.outcomes.count - policy.window) }
            guard s.mode == .relay, s.outcomes.filter({ $0 }).count >= policy.degradedAfter else { return false }
            s.mode = .mesh
            s.outcomes = []
            s.goodProbes = 0
            s.lastProbe = .now
            s.transitions.append((.mesh, .now, reason))
            return true
        }
        if degraded { logger.warning("relay degraded; using the mesh", metadata: ["reason": "\(reason)"]) }
    }

    func probeDue() -> Bool {
        state.withLock { s in
            guard s.mode == .mesh else { return false }
            if let last = s.lastProbe, ContinuousClock.now - last < policy.probeInterval { return false }
            s.lastProbe = .now
            return true
        }
    }

    /// One probe of the relay while degraded; `recoverAfter` good ones in a row bring it back.
    func probeRelay() async {
        let outcome = await onRelay(FallbackRequest(path: policy.probePath), timeout: policy.relayTimeout)
        var good = false
        if case .success(let r) = outcome { good = r.elapsed <= policy.slowAfter }
        let recovered = state.withLock { s -> Bool in
            guard s.mode == .mesh else { return false }
            s.goodProbes = good ? s.goodProbes + 1 : 0
            guard s.goodProbes >= policy.recoverAfter else { return false }
            s.mode = .relay
            s.outcomes = []
            s.transitions.append((.relay, .now, "\(s.goodProbes) good probes"))
            return true
        }
        if recovered { logger.info("relay recovered") }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

import Foundation
import Logging
import MeshClient
import MeshDomain
import MeshHTTPS
import MeshNet
import MeshPKI
import MeshProto
import ServiceLifecycle
import Synchronization

/// The node's HTTPS front for the phone fallback (docs/fallback.md): the gateway beside the node,
/// served on the node's mesh IPv4 and IPv6 addresses with a certificate for its mesh name and
/// addresses from the tenant CA. The key pair is made here and never leaves the node; the
/// certificate comes from ProvisionSvc over the bus, is renewed when two thirds of its life have
/// passed, and again as soon as the node's DNS name (as the agent last applied it) changes: a
/// rename. The loop looks at both once a second.
public final class NodeHTTPSService: Service, Sendable {
    let identity: NodeIdentity
    let port: Int
    let upstream: (host: String, port: Int)
    let request: @Sendable ([UInt8]) async throws(MeshError) -> Mesh_V1_NodeCertificateResponse
    let currentName: @Sendable () -> String?
    let retryDelay: Duration
    let logger: Logger
    /// How often the loop looks at the renewal time and the node's name.
    let checkInterval: Duration
    private let issued = Mutex<Mesh_V1_NodeCertificateResponse?>(nil)

    public init(identity: NodeIdentity, port: Int, upstream: (host: String, port: Int), retryDelay: Duration = .seconds(5),
                currentName: @escaping @Sendable () -> String?,
                request: @escaping @Sendable ([UInt8]) async throws(MeshError) -> Mesh_V1_NodeCertificateResponse, logger: Logger) {
        self.identity = identity
        self.port = port
        self.upstream = upstream
        self.retryDelay = retryDelay
        self.currentName = currentName
        self.request = request
        self.logger = logger
        checkInterval = .seconds(1)
    }

    /// The front of a running node: certificates from ProvisionSvc, renamed with the agent's view.
    public convenience init(config: NodeConfiguration, agent: NodeAgent, provision: ProvisionClient, logger: Logger) throws(MeshError) {
        guard let upstream = HostPort(config.httpsUpstream) else {
            throw .invalidArgument(field: "https_upstream", message: "must be host:port")
        }
        let id = agent.identity
        self.init(identity: id, port: Int(config.httpsPort), upstream: (upstream.host, Int(upstream.port)), currentName: { agent.ownDNSName },
                  request: { der async throws(MeshError) in try await provision.nodeCertificate(tenantID: id.tenantID, nodeID: id.nodeID, publicKeyDER: der) },
                  logger: logger)
    }

    /// The certificate in use, if any.
    public var certificate: Mesh_V1_NodeCertificateResponse? { issued.withLock { $0 } }

    public func run() async throws {
        let front = HTTPSFront(listen: [identity.ipv4, identity.ipv6].filter { !$0.isEmpty }.map { ($0, port) }, upstream: upstream,
                               logger: logger)
        let key = ServerKey()
        await cancelWhenGracefulShutdown { [self] in
            var started = false
            var due = ContinuousClock.now
            while !Task.isCancelled {
                if ContinuousClock.now >= due || renamed() {
                    due = ContinuousClock.now + retryDelay
                    do {
                        let cert = try await request(key.publicKeyDER)
                        try front.install(certificateChainPEM: cert.certificatePem + "\n" + cert.caCertificatePem, privateKeyPEM: key.privateKeyPEM)
                        issued.withLock { $0 = cert }
                        if !started {
                            try await front.start()
                            started = true
                        }
                        let notBefore = Date(timeIntervalSince1970: Double(cert.notBeforeMs) / 1000)
                        let notAfter = Date(timeIntervalSince1970: Double(cert.notAfterMs) / 1000)
                        let renewAt = CertificateLifetime.renewal(notBefore: notBefore, notAfter: notAfter)
                        due = ContinuousClock.now + .milliseconds(max(1000, Int(renewAt.timeIntervalSinceNow * 1000)))
                        logger.info("https certificate installed", metadata: ["dns": "\(cert.dnsNames)", "not_after": "\(notAfter)",
                                                                              "renew_at": "\(renewAt)"])
                    } catch {
                        logger.warning("https certificate not issued; retrying", metadata: ["error": "\(error)"])
                    }
                }
                try? await Task.sleep(for: checkInterval)
            }
        }
        await front.stop()
    }

    /// Whether the node's DNS name is no longer the certificate's (a rename).
    func renamed() -> Bool {
        guard let name = currentName(), let cert = issued.withLock({ $0 }) else { return false }
        return !cert.dnsNames.contains(name)
    }
}

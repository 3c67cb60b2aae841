import ArgumentParser
import Foundation
import GatewayCore
import MeshAuth
import MeshDomain
import ServiceKit

/// The Gateway: the HTTP API of the control plane. Stateless; run any number of replicas behind a
/// load balancer.
@main
struct Gateway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "Gateway",
        abstract: "The HTTP API of Quazzar Mesh (devices, mesh state, diagnostics, license, CP authority routes).",
        discussion: """
            Every option also reads the environment variable named in its help. Bearer tokens are verified with \
            MESH_JWT_SECRET (HS256) and/or MESH_JWT_EDDSA_PUBLIC_KEY (EdDSA); at least one must be set. The gateway keeps no \
            state and needs no database. See docs/api.md.

            \(Env.secretsHelp(BusOptions.secrets + Gateway.tokenKeys))
            """)

    /// The keys bearer tokens are verified with.
    static let tokenKeys = [
        SecretSetting("MESH_JWT_SECRET", "The HS256 key (at least 32 bytes) that verifies HS256 tokens."),
        SecretSetting("MESH_JWT_EDDSA_PUBLIC_KEY", "The Ed25519 public key (PEM, or base64 of its 32 bytes) that verifies EdDSA tokens."),
    ]

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("address"), help: "host:port the HTTP API listens on (env MESH_GATEWAY_ADDRESS).")
    var address: String = Env.string("MESH_GATEWAY_ADDRESS", "127.0.0.1:8080")

    @Option(name: .customLong("node-id"), help: "The mesh node this gateway runs beside, for /api/mesh/state and /api/mesh/peers (env MESH_GATEWAY_NODE_ID).")
    var nodeID: String = Env.string("MESH_GATEWAY_NODE_ID", "")

    @Option(name: .customLong("pritunl-configured"), help: "Whether the legacy Pritunl VPN is configured, so the web page shows its migration banner: true or false (env MESH_PRITUNL_CONFIGURED).")
    var pritunlConfigured: Bool = Env.bool("MESH_PRITUNL_CONFIGURED", false)

    @Option(name: .customLong("max-body-bytes"), help: "Largest request body accepted; larger ones get 413 (env MESH_GATEWAY_MAX_BODY_BYTES).")
    var maxBodyBytes: Int = Env.int("MESH_GATEWAY_MAX_BODY_BYTES", 16 * 1024)

    @Option(name: .customLong("service-timeout"), help: "Seconds to wait for ProvisionSvc and FanoutSvc (env MESH_GATEWAY_SERVICE_TIMEOUT_SECONDS).")
    var serviceTimeout: Double = Env.seconds("MESH_GATEWAY_SERVICE_TIMEOUT_SECONDS", 10)

    @Option(name: .customLong("node-timeout"), help: "Seconds to wait for a node's NodeApplier (env MESH_GATEWAY_NODE_TIMEOUT_SECONDS).")
    var nodeTimeout: Double = Env.seconds("MESH_GATEWAY_NODE_TIMEOUT_SECONDS", 5)

    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain for HTTPS; with --tls-key the API is served over HTTPS only (env MESH_GATEWAY_TLS_CERT).")
    var tlsCert: String = Env.string("MESH_GATEWAY_TLS_CERT", "")

    @Option(name: .customLong("tls-key"), help: "PEM private key for HTTPS, a file path (env MESH_GATEWAY_TLS_KEY).")
    var tlsKey: String = Env.string("MESH_GATEWAY_TLS_KEY", "")

    func validate() throws {
        guard tlsCert.isEmpty == tlsKey.isEmpty else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard GatewayConfiguration.parseAddress(address) != nil else { throw ValidationError("--address must be host:port") }
        guard nodeID.isEmpty || UUID(uuidString: nodeID) != nil else { throw ValidationError("--node-id must be a UUID") }
        guard (256...(1 << 20)).contains(maxBodyBytes) else { throw ValidationError("--max-body-bytes must be between 256 and 1048576") }
        guard serviceTimeout > 0, nodeTimeout > 0 else { throw ValidationError("timeouts must be positive") }
    }

    func run() async throws {
        let keys: JWTKeyMaterial
        do {
            keys = try JWTKeyMaterial.fromEnvironment(secret: Env.secret)
        } catch let e as MeshError {
            throw ValidationError(e.message)
        }
        guard keys.hmacSecret != nil || keys.eddsaPublicKey != nil else {
            throw ValidationError("set MESH_JWT_SECRET[_FILE] (at least 32 bytes) or MESH_JWT_EDDSA_PUBLIC_KEY[_FILE]")
        }
        let (host, port) = GatewayConfiguration.parseAddress(address)!
        let config = GatewayConfiguration(host: host, port: port, nodeID: nodeID.lowercased(), pritunlConfigured: pritunlConfigured,
                                          maxBodyBytes: maxBodyBytes, serviceTimeout: .milliseconds(Int(serviceTimeout * 1000)),
                                          nodeTimeout: .milliseconds(Int(nodeTimeout * 1000)),
                                          tlsCertificateFile: tlsCert.nilIfEmpty, tlsKeyFile: tlsKey.nilIfEmpty)
        let verifier = await TokenVerifier(keys: keys)
        try await ServiceHost.run(name: MeshServiceName.gateway, description: "HTTP API", common: common) { ctx in
            let api = GatewayAPI(configuration: config, bus: ctx.bus, verifier: verifier, logger: ctx.logger)
            let logger = ctx.logger
            let scheme = config.tlsCertificateFile == nil ? "http" : "https"
            let app = try GatewayApp.application(api: api, configuration: config, logger: ctx.logger) { channel in
                logger.info("gateway listening", metadata: ["http.address": "\(channel.localAddress?.description ?? address)",
                                                            "http.scheme": "\(scheme)"])
            }
            return ServiceParts(services: [app])
        }
    }
}

import ArgumentParser
import Foundation
import GatewayCore
import MeshAuth
import MeshDomain
import ServiceKit
import ServiceLifecycle

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

            \(Env.secretsHelp(BusOptions.secrets + Gateway.tokenKeys + Gateway.signInSecrets))
            """)

    /// The keys bearer tokens are verified with.
    static let tokenKeys = [
        SecretSetting("MESH_JWT_SECRET", "The HS256 key (at least 32 bytes) that verifies HS256 tokens."),
        SecretSetting("MESH_JWT_EDDSA_PUBLIC_KEY", "The Ed25519 public key (PEM, or base64 of its 32 bytes) that verifies EdDSA tokens."),
    ]

    /// The identity providers people sign in with, and the key that seals their session cookies.
    static let signInSecrets = [
        SecretSetting("MESH_OIDC_PROVIDERS", "The OpenID Connect providers people sign in with: a JSON array (docs/security.md); none: no sign-in."),
        SecretSetting("MESH_SESSION_SECRET", "The key (at least 32 bytes) that seals session cookies; without it, one derived from MESH_JWT_SECRET."),
    ]

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("address"), help: "host:port the HTTP API listens on (env MESH_GATEWAY_ADDRESS).")
    var address: String = Env.string("MESH_GATEWAY_ADDRESS", "127.0.0.1:8080")

    @Option(name: .customLong("node-id"), help: "The mesh node this gateway runs beside, for /api/mesh/state and /api/mesh/peers (env MESH_GATEWAY_NODE_ID).")
    var nodeID: String = Env.string("MESH_GATEWAY_NODE_ID", "")

    @Option(name: .customLong("pritunl-configured"), help: "Whether the legacy Pritunl VPN is configured, so the web page shows its migration banner: true or false (env MESH_PRITUNL_CONFIGURED).")
    var pritunlConfigured: Bool = Env.bool("MESH_PRITUNL_CONFIGURED", false)

    @Option(name: .customLong("pritunl-url"), help: "The legacy Pritunl web server to probe, e.g. https://127.0.0.1:443; the banner shows while it answers GET /ping. Empty: no probe, only --pritunl-configured (env MESH_PRITUNL_URL).")
    var pritunlURL: String = Env.string("MESH_PRITUNL_URL", "")

    @Option(name: .customLong("pritunl-probe-interval"), help: "Seconds between two probes of --pritunl-url (env MESH_PRITUNL_PROBE_INTERVAL_SECONDS).")
    var pritunlProbeInterval: Double = Env.seconds("MESH_PRITUNL_PROBE_INTERVAL_SECONDS", 60)

    @Option(name: .customLong("pritunl-verify-tls"), help: "Verify the certificate of --pritunl-url (Pritunl's own is self-signed unless replaced): true or false (env MESH_PRITUNL_VERIFY_TLS).")
    var pritunlVerifyTLS: Bool = Env.bool("MESH_PRITUNL_VERIFY_TLS", false)

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

    @Option(name: .customLong("public-url"), help: "The URL people reach this gateway at, e.g. https://mesh.example.com: sign-in redirects to <url>/api/auth/callback, and requests carrying the session cookie must come from its origin (env MESH_GATEWAY_PUBLIC_URL).")
    var publicURL: String = Env.string("MESH_GATEWAY_PUBLIC_URL", "")

    @Option(name: .customLong("allowed-origins"), help: "More origins, comma-separated, whose pages may send state-changing requests with the session cookie (env MESH_GATEWAY_ALLOWED_ORIGINS).")
    var allowedOrigins: String = Env.string("MESH_GATEWAY_ALLOWED_ORIGINS", "")

    @Option(name: .customLong("session-idle"), help: "Seconds a browser session lasts without use; it is renewed while used (env MESH_SESSION_IDLE_SECONDS).")
    var sessionIdle: Double = Env.seconds("MESH_SESSION_IDLE_SECONDS", 1800)

    @Option(name: .customLong("session-max"), help: "Seconds a browser session lasts at most after sign-in (env MESH_SESSION_MAX_SECONDS).")
    var sessionMax: Double = Env.seconds("MESH_SESSION_MAX_SECONDS", 43200)

    @Option(name: .customLong("live-tick"), help: "Seconds between the live channel's heartbeats and offline checks (env MESH_GATEWAY_LIVE_TICK_SECONDS).")
    var liveTick: Double = Env.seconds("MESH_GATEWAY_LIVE_TICK_SECONDS", 15)

    @Option(name: .customLong("live-max"), help: "Seconds a live stream lasts before the page reconnects (env MESH_GATEWAY_LIVE_MAX_SECONDS).")
    var liveMax: Double = Env.seconds("MESH_GATEWAY_LIVE_MAX_SECONDS", 300)

    @Option(name: .customLong("jwks-min-refresh"), help: "Seconds between two reads of a provider's keys forced by an unknown key id (env MESH_OIDC_JWKS_MIN_REFRESH_SECONDS).")
    var jwksMinRefresh: Double = Env.seconds("MESH_OIDC_JWKS_MIN_REFRESH_SECONDS", 30)

    func validate() throws {
        guard publicURL.isEmpty || URL(string: publicURL).map({ ($0.scheme == "http" || $0.scheme == "https") && $0.host != nil }) == true else {
            throw ValidationError("--public-url must be an http(s) URL")
        }
        guard sessionIdle >= 60, sessionMax >= sessionIdle, sessionMax <= 7 * 86400 else {
            throw ValidationError("sessions: idle at least 60 s, at most the maximum, which is at most 7 days")
        }
        guard jwksMinRefresh >= 0 else { throw ValidationError("--jwks-min-refresh must not be negative") }
        guard tlsCert.isEmpty == tlsKey.isEmpty else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard GatewayConfiguration.parseAddress(address) != nil else { throw ValidationError("--address must be host:port") }
        guard nodeID.isEmpty || UUID(uuidString: nodeID) != nil else { throw ValidationError("--node-id must be a UUID") }
        guard (256...(1 << 20)).contains(maxBodyBytes) else { throw ValidationError("--max-body-bytes must be between 256 and 1048576") }
        guard serviceTimeout > 0, nodeTimeout > 0 else { throw ValidationError("timeouts must be positive") }
        guard liveTick >= 1, liveMax >= liveTick else { throw ValidationError("--live-tick must be at least 1 s and --live-max at least --live-tick") }
        guard pritunlURL.isEmpty || URL(string: pritunlURL).map({ ($0.scheme == "http" || $0.scheme == "https") && $0.host != nil }) == true else {
            throw ValidationError("--pritunl-url must be an http(s) URL")
        }
        guard pritunlProbeInterval >= 1 else { throw ValidationError("--pritunl-probe-interval must be at least 1 second") }
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
                                          liveTick: .milliseconds(Int(liveTick * 1000)), liveMaxDuration: .milliseconds(Int(liveMax * 1000)),
                                          tlsCertificateFile: tlsCert.nilIfEmpty, tlsKeyFile: tlsKey.nilIfEmpty)
        let verifier = await TokenVerifier(keys: keys)
        let signIn = try signInConfiguration(jwtSecret: keys.hmacSecret)
        try await ServiceHost.run(name: MeshServiceName.gateway, description: "HTTP API", common: common) { ctx in
            if !signIn.providers.isEmpty {
                ctx.logger.info("sign-in through identity providers", metadata: ["providers": "\(signIn.providers.map(\.id).joined(separator: ","))",
                                                                                 "callback": "\(signIn.callbackURL ?? "")"])
            }
            let probe = URL(string: pritunlURL).flatMap { url in
                pritunlURL.isEmpty ? nil : PritunlProbe(url: url, interval: .milliseconds(Int(pritunlProbeInterval * 1000)), verifyTLS: pritunlVerifyTLS,
                                                        logger: ctx.logger)
            }
            let api = GatewayAPI(configuration: config, bus: ctx.bus, verifier: verifier, signIn: signIn, pritunlProbe: probe, logger: ctx.logger)
            let logger = ctx.logger
            let scheme = config.tlsCertificateFile == nil ? "http" : "https"
            let app = try GatewayApp.application(api: api, configuration: config, logger: ctx.logger) { channel in
                logger.info("gateway listening", metadata: ["http.address": "\(channel.localAddress?.description ?? address)",
                                                            "http.scheme": "\(scheme)"])
            }
            // The feed is listed last so it stops first: it ends the open live streams, which the HTTP server waits for.
            var services: [any Service] = [app]
            if let probe { services.append(probe) }
            services.append(api.live)
            return ServiceParts(services: services)
        }
    }

    /// Providers from MESH_OIDC_PROVIDERS[_FILE] (a JSON array; docs/security.md), sessions sealed with
    /// MESH_SESSION_SECRET[_FILE] or, without it, a key derived from the HS256 JWT secret.
    func signInConfiguration(jwtSecret: [UInt8]?) throws -> SignInConfiguration {
        do {
            let providers = try Env.secret("MESH_OIDC_PROVIDERS").map { json in
                try OIDCProviderConfiguration.parse(json) { path in try String(contentsOfFile: path, encoding: .utf8) }
            } ?? []
            var secret = try Env.secret("MESH_SESSION_SECRET").map { Array($0.trimmingCharacters(in: .whitespacesAndNewlines).utf8) }
            if secret == nil, let jwt = jwtSecret { secret = jwt }
            if !providers.isEmpty {
                guard !publicURL.isEmpty else { throw ValidationError("sign-in providers need --public-url (MESH_GATEWAY_PUBLIC_URL)") }
                guard secret != nil else { throw ValidationError("sign-in providers need MESH_SESSION_SECRET[_FILE] (or an HS256 MESH_JWT_SECRET)") }
            }
            return SignInConfiguration(
                providers: providers, publicURL: publicURL.isEmpty ? nil : URL(string: publicURL),
                sealer: providers.isEmpty ? nil : try secret.map { try CookieSealer(secret: $0) },
                session: SessionPolicy(idle: .milliseconds(Int(sessionIdle * 1000)), maximum: .milliseconds(Int(sessionMax * 1000))),
                jwksRefresh: JWKSRefreshPolicy(interval: .milliseconds(Int(jwksMinRefresh * 1000))),
                extraOrigins: allowedOrigins.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        } catch let e as MeshError {
            throw ValidationError(e.message)
        }
    }
}

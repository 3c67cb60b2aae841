import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import MeshBus
import MeshDomain
import ServiceKit
import NIOCore

/// Builds the Gateway's router and Hummingbird application.
public enum GatewayApp {
    /// The folder of the web page (`Sources/GatewayCore/Web`, copied into the bundle).
    public static var webRoot: String? {
        Bundle.module.url(forResource: "Web", withExtension: nil)?.path
    }

    /// Every route of the API. ``OpenAPIDocument`` documents each of them (a test keeps the two in step).
    public static func router(api: GatewayAPI, webRoot: String? = GatewayApp.webRoot) -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        // Outermost first: metrics see the final status, after errors became JSON responses.
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: RequestIDMiddleware())
        // A known path with another method is a 405 with Allow (filled in once every route is added).
        let methods = AllowedMethods()
        router.add(middleware: MethodNotAllowedMiddleware(methods: methods))
        router.add(middleware: SessionMiddleware(configuration: api.signIn))
        if let webRoot {
            router.add(middleware: WebPageHeadersMiddleware())
            router.add(middleware: FileMiddleware(webRoot, urlBasePath: "/vpn/mesh", cacheControl: .init([]),
                                                  searchForIndexHtml: true, logger: api.logger))
        }

        // Operations
        router.get("/healthz") { _, _ in JSONBody.response(HealthJSON(status: "ok", checks: [:])) }
        router.get("/readyz", use: api.ready)
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: Observability.prometheusText())))
        }
        let openAPI = OpenAPIDocument.json
        router.get("/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(bytes: openAPI)))
        }

        // The API of the web page
        router.get("/api/mesh/ui-config") { request, context in api.uiConfig(request, context) }
        router.get("/api/mesh/state", use: api.state)
        router.get("/api/mesh/devices", use: api.listDevices)
        router.get("/api/mesh/events", use: api.liveEvents)
        router.post("/api/mesh/devices", use: api.createDevice)
        router.get("/api/mesh/devices/:id", use: api.getDevice)
        router.delete("/api/mesh/devices/:id", use: api.deleteDevice)
        router.patch("/api/mesh/devices/:id", use: api.renameDevice)
        router.post("/api/mesh/devices/:id/suspend", use: api.suspendDevice)
        router.post("/api/mesh/devices/:id/resume", use: api.resumeDevice)
        router.get("/api/mesh/nodes", use: api.listNodes)
        router.delete("/api/mesh/nodes/:id", use: api.removeNode)
        router.post("/api/mesh/enrollment-tokens", use: api.createEnrollmentToken)
        router.get("/api/mesh/settings", use: api.getSettings)
        router.patch("/api/mesh/settings", use: api.updateSettings)
        router.post("/api/mesh/devices/:id/reissue", use: api.reissueDevice)
        router.patch("/api/mesh/nodes/:id", use: api.updateNode)
        router.post("/api/mesh/refresh", use: api.refresh)
        router.get("/api/mesh/peers", use: api.peers)
        router.get("/api/mesh/audit", use: api.audit)
        router.get("/api/mesh/audit/export", use: api.exportAudit)
        router.get("/api/license/orbit-features", use: api.orbitFeatures)
        api.addPolicyRoutes(to: router)

        // The Pritunl walk-through and one-time config links (docs/pritunl.md)
        router.get("/api/mesh/migration", use: api.migration)
        router.put("/api/mesh/migration/users/:id", use: api.setMigrationCheck)
        router.post("/api/mesh/links", use: api.createLink)
        router.post("/api/mesh/links/open", use: api.openLink)

        // Sign-in, sessions, users and personal API tokens (docs/security.md, "Sign-in")
        router.get("/api/auth/login", use: api.login)
        router.get("/api/auth/callback", use: api.callback)
        router.get("/api/auth/session", use: api.sessionInfo)
        router.post("/api/auth/logout", use: api.logout)
        router.get("/api/mesh/users", use: api.listUsers)
        router.post("/api/mesh/users", use: api.inviteUser)
        router.patch("/api/mesh/users/:id", use: api.setUserRole)
        router.delete("/api/mesh/users/:id", use: api.deleteUser)
        router.get("/api/mesh/tokens", use: api.listTokens)
        router.post("/api/mesh/tokens", use: api.createToken)
        router.delete("/api/mesh/tokens/:id", use: api.revokeToken)

        // Control-plane authority (called by the OS side and by nodes)
        router.post("/cp/api/v1/mesh/devices", use: api.createDevice)
        router.delete("/cp/api/v1/mesh/devices/:id", use: api.deleteDevice)
        router.post("/cp/api/v1/mesh/devices/:id/reissue", use: api.reissueDevice)
        router.get("/cp/api/v1/mesh/peers/:node_id", use: api.nodePeerList)
        methods.set(router.routes.map { (method: $0.method, path: $0.path) })
        return router
    }

    /// The Hummingbird application serving ``router(api:webRoot:)`` at the configured address, over
    /// HTTPS when a certificate and key are configured.
    public static func application(api: GatewayAPI, configuration: GatewayConfiguration, logger: Logger,
                                   onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in })
        throws -> some ApplicationProtocol {
        let appConfig = ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port),
                                                 serverName: "quazzar-mesh-gateway", backlog: 1024)
        if let tls = try tlsConfiguration(configuration) {
            return Application(router: router(api: api), server: try .tls(.http1(), tlsConfiguration: tls), configuration: appConfig,
                               onServerRunning: onServerRunning, logger: logger)
        }
        return Application(router: router(api: api), server: .http1(), configuration: appConfig, onServerRunning: onServerRunning, logger: logger)
    }

    /// The server TLS settings from the configured PEM files (TLS 1.2 at least), or nil for plain HTTP.
    public static func tlsConfiguration(_ c: GatewayConfiguration) throws -> TLSConfiguration? {
        switch (c.tlsCertificateFile, c.tlsKeyFile) {
        case (nil, nil):
            return nil
        case (let cert?, let key?):
            var tls = TLSConfiguration.makeServerConfiguration(certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                                                               privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            tls.minimumTLSVersion = .tlsv12
            return tls
        default:
            throw MeshError.invalidArgument(field: "tls", message: "HTTPS needs both a certificate and a key file")
        }
    }
}

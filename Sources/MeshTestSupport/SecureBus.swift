import Foundation
import MeshBus
import MeshBusAuth

/// A nats-server of a test's own running the secured configuration `meshctl bus init` writes
/// (decentralized JWT authentication, a full resolver), optionally requiring TLS with certificates
/// from `scripts/gen-certs.sh`, plus the environment each executable needs to use it.
public final class SecureBus: Sendable {
    /// Keys, JWTs and credentials.
    public let setup: BusSetup
    /// Where `BusSetup.write(to:)` put the files.
    public let directory: URL
    /// The certificates (`ca.pem`, `nats.pem`, `gateway.pem`, ...) when TLS is on.
    public let certificates: URL?
    public let nats: TestNatsServer

    /// Generates a set-up, writes it and starts nats-server with it on `host`.
    public init(name: String, host: String = "127.0.0.1", tls: Bool = false) throws {
        directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("mesh-bus-\(name)-\(Nuid.short())")
        setup = try BusSetup.generate()
        var serverTLS: BusSetup.ServerTLS?
        if tls {
            let certs = directory.appendingPathComponent("certs")
            let script = TestEnvironment.repoRoot.appendingPathComponent("scripts/gen-certs.sh").path
            let r = try run(script, [certs.path, "--san", host])
            guard r.status == 0 else { throw TestSetupError.failed("gen-certs.sh failed: \(r.output)") }
            certificates = certs
            serverTLS = BusSetup.ServerTLS(certFile: certs.appendingPathComponent("nats.pem").path,
                                           keyFile: certs.appendingPathComponent("nats.key").path)
        } else {
            certificates = nil
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try setup.write(to: directory.path, tls: serverTLS)
        nats = try TestNatsServer(name: "secure-\(name)", host: host, extraArguments: ["-c", directory.appendingPathComponent("nats.conf").path])
    }

    /// The server URL.
    public var url: String { nats.url }

    /// The path of a file of the set-up, e.g. `creds/fanout.creds`.
    public func path(_ relative: String) -> String { directory.appendingPathComponent(relative).path }

    /// Client TLS settings trusting the test CA, when TLS is on.
    public var clientTLS: BusTLS? {
        certificates.map { BusTLS(caFile: $0.appendingPathComponent("ca.pem").path) }
    }

    /// The environment an executable needs: its credentials file, the CA, and for ProvisionSvc the
    /// signing keys and the system-account credentials.
    public func environment(for service: BusPolicy.Service) -> [String: String] {
        var env = ["MESH_NATS_CREDS_FILE": path("creds/\(service.rawValue).creds")]
        if let ca = clientTLS?.caFile { env["MESH_NATS_TLS_CA"] = ca }
        if service == .provision {
            env["MESH_BUS_ACCOUNT_JWT_FILE"] = path("accounts/mesh.jwt")
            env["MESH_BUS_ACCOUNT_SIGNING_KEY_FILE"] = path("keys/mesh-signing.nk")
            env["MESH_BUS_OPERATOR_SIGNING_KEY_FILE"] = path("keys/operator-signing.nk")
            env["MESH_BUS_SYSTEM_CREDS_FILE"] = path("creds/system.creds")
        }
        return env
    }

    /// The environment of a NodeApplier that has not registered yet (the bootstrap identity).
    public var nodeEnvironment: [String: String] {
        var env = ["MESH_NATS_CREDS_FILE": path("creds/enroll.creds")]
        if let ca = clientTLS?.caFile { env["MESH_NATS_TLS_CA"] = ca }
        return env
    }

    /// A connection with the given credentials (and the test CA when TLS is on).
    public func connect(_ name: String, credentials: BusCredentials?, inboxPrefix: String = "_INBOX",
                        retryOnFailedConnect: Bool = true) async throws -> BusConnection {
        let c = BusConfiguration(servers: [url], name: name, inboxPrefix: inboxPrefix, credentials: credentials, tls: clientTLS,
                                 reconnectWaitMin: .milliseconds(100), reconnectWaitMax: .milliseconds(500),
                                 retryOnFailedConnect: retryOnFailedConnect)
        return try await BusConnection.connect(c, logger: TestEnvironment.logger("test.bus.\(name)"))
    }

    /// A connection as one of the control-plane identities.
    public func connect(as service: BusPolicy.Service, name: String? = nil) async throws -> BusConnection {
        let creds = try BusCredentials.parseCreds(setup.serviceCreds[service] ?? "")
        return try await connect(name ?? "t-\(service.rawValue)", credentials: creds)
    }

    /// Stops the server and removes the files.
    public func stop() async {
        await nats.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

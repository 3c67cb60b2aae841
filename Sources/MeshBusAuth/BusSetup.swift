import Foundation
import Glibc

/// Everything a secured bus needs, made at once: the operator, the system account and the mesh
/// account (keys and JWTs), the signing keys ProvisionSvc uses, a `.creds` file per control-plane
/// identity, the bootstrap identity for enrolling nodes, and the nats-server configuration.
/// `meshctl bus init` writes it to a folder; the tests build one per server.
public struct BusSetup: Sendable {
    public let operatorKey: NKeyPair
    /// Signs account JWTs after set-up (ProvisionSvc's revocation updates).
    public let operatorSigningKey: NKeyPair
    public let systemAccount: NKeyPair
    public let meshAccount: NKeyPair
    /// Signs node user JWTs (ProvisionSvc).
    public let accountSigningKey: NKeyPair
    public let operatorJWT: String
    public let systemAccountJWT: String
    public let meshAccountJWT: String
    /// `.creds` text per control-plane identity.
    public let serviceCreds: [BusPolicy.Service: String]
    /// The shared bootstrap identity of nodes that are not registered yet.
    public let enrollCreds: String
    /// A system-account user: ProvisionSvc pushes account JWT updates with it.
    public let systemCreds: String

    /// Creates new keys for everything.
    public static func generate(operatorName: String = "quazzar-mesh", accountName: String = "mesh") throws -> BusSetup {
        let op = NKeyPair.generate(.operator), opSigning = NKeyPair.generate(.operator)
        let sys = NKeyPair.generate(.account), mesh = NKeyPair.generate(.account), meshSigning = NKeyPair.generate(.account)
        let operatorJWT = try NatsJWT.sign(NatsClaims.operator(subject: op.publicKey, name: operatorName, systemAccount: sys.publicKey,
                                                               signingKeys: [opSigning.publicKey]), issuer: op)
        let sysJWT = try NatsJWT.sign(NatsClaims.account(subject: sys.publicKey, name: "SYS"), issuer: op)
        let meshJWT = try NatsJWT.sign(NatsClaims.account(subject: mesh.publicKey, name: accountName, signingKeys: [meshSigning.publicKey]),
                                       issuer: op)
        func user(_ name: String, _ permissions: BusPermissions?, account: NKeyPair) throws -> String {
            let u = NKeyPair.generate(.user)
            let claims = NatsClaims.user(subject: u.publicKey, name: name, permissions: permissions ?? BusPermissions())
            return CredsFile.format(jwt: try NatsJWT.sign(claims, issuer: account), seed: u.seed)
        }
        var services: [BusPolicy.Service: String] = [:]
        for s in BusPolicy.Service.allCases { services[s] = try user(s.userName, s.permissions, account: mesh) }
        return BusSetup(operatorKey: op, operatorSigningKey: opSigning, systemAccount: sys, meshAccount: mesh, accountSigningKey: meshSigning,
                        operatorJWT: operatorJWT, systemAccountJWT: sysJWT, meshAccountJWT: meshJWT, serviceCreds: services,
                        enrollCreds: try user("enroll", BusPolicy.enroll, account: mesh),
                        systemCreds: try user("revoker", nil, account: sys))
    }

    /// TLS settings for the nats-server configuration (PEM files).
    public struct ServerTLS: Sendable {
        public var certFile: String
        public var keyFile: String
        /// Set to ask clients for certificates signed by this CA.
        public var clientCAFile: String?

        public init(certFile: String, keyFile: String, clientCAFile: String? = nil) {
            self.certFile = certFile
            self.keyFile = keyFile
            self.clientCAFile = clientCAFile
        }
    }

    /// The nats-server configuration: trust the operator, preload both accounts into a full resolver
    /// kept in `resolverDirectory` (which takes pushed updates), and optionally require TLS.
    public func serverConfiguration(operatorJWTPath: String, resolverDirectory: String, tls: ServerTLS? = nil) -> String {
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        var out = """
            # Quazzar Mesh bus security (meshctl bus init). Decentralized JWT authentication: the operator
            # below signs the accounts; the mesh account's signing key (held by ProvisionSvc) signs node users.
            operator: \(q(operatorJWTPath))
            system_account: \(systemAccount.publicKey)

            resolver: {
              type: full
              dir: \(q(resolverDirectory))
              # Account JWTs (revocations) are only ever replaced by newer ones, never deleted.
              allow_delete: false
              interval: "2m"
              timeout: "1.9s"
            }

            resolver_preload: {
              \(systemAccount.publicKey): \(q(systemAccountJWT))
              \(meshAccount.publicKey): \(q(meshAccountJWT))
            }

            """
        if let tls {
            out += """

                tls: {
                  cert_file: \(q(tls.certFile))
                  key_file: \(q(tls.keyFile))
                \(tls.clientCAFile.map { "  ca_file: \(q($0))\n  verify: true\n" } ?? "")  timeout: 2
                }

                """
        }
        return out
    }

    /// The files `meshctl bus init` writes, relative to its output folder, with their modes.
    public func files(directory: String, tls: ServerTLS? = nil) -> [(path: String, contents: String, mode: Int)] {
        let dir = URL(fileURLWithPath: directory).standardizedFileURL.path
        var files: [(path: String, contents: String, mode: Int)] = [
            ("operator.jwt", operatorJWT + "\n", 0o644),
            ("accounts/SYS.jwt", systemAccountJWT + "\n", 0o644),
            ("accounts/mesh.jwt", meshAccountJWT + "\n", 0o644),
            ("nats.conf", serverConfiguration(operatorJWTPath: dir + "/operator.jwt", resolverDirectory: dir + "/jwt", tls: tls), 0o644),
            // Identity keys: keep them offline; nothing at run time needs them.
            ("keys/operator.nk", operatorKey.seed + "\n", 0o600),
            ("keys/SYS.nk", systemAccount.seed + "\n", 0o600),
            ("keys/mesh.nk", meshAccount.seed + "\n", 0o600),
            // Run-time signing keys, for ProvisionSvc only.
            ("keys/operator-signing.nk", operatorSigningKey.seed + "\n", 0o600),
            ("keys/mesh-signing.nk", accountSigningKey.seed + "\n", 0o600),
            ("creds/enroll.creds", enrollCreds, 0o600),
            ("creds/system.creds", systemCreds, 0o600),
        ]
        for s in BusPolicy.Service.allCases { files.append(("creds/\(s.rawValue).creds", serviceCreds[s] ?? "", 0o600)) }
        files.append(("services.env", environment(directory: dir), 0o644))
        return files
    }

    /// Which variable each executable reads (secrets by file, never inline).
    public func environment(directory dir: String) -> String {
        """
        # Quazzar Mesh: bus credentials per executable (meshctl bus init). Every value is a file path.
        # AllocatorSvc
        MESH_NATS_CREDS_FILE=\(dir)/creds/allocator.creds
        # ProvisionSvc (also signs node credentials and pushes revocations)
        MESH_NATS_CREDS_FILE=\(dir)/creds/provision.creds
        MESH_BUS_ACCOUNT_JWT_FILE=\(dir)/accounts/mesh.jwt
        MESH_BUS_ACCOUNT_SIGNING_KEY_FILE=\(dir)/keys/mesh-signing.nk
        MESH_BUS_OPERATOR_SIGNING_KEY_FILE=\(dir)/keys/operator-signing.nk
        MESH_BUS_SYSTEM_CREDS_FILE=\(dir)/creds/system.creds
        # FanoutSvc
        MESH_NATS_CREDS_FILE=\(dir)/creds/fanout.creds
        # Gateway
        MESH_NATS_CREDS_FILE=\(dir)/creds/gateway.creds
        # meshctl
        MESH_NATS_CREDS_FILE=\(dir)/creds/admin.creds
        # meshctl service ping (health checks)
        MESH_NATS_CREDS_FILE=\(dir)/creds/monitor.creds
        # NodeApplier, until it has registered (afterwards it uses its own key and JWT)
        MESH_NATS_CREDS_FILE=\(dir)/creds/enroll.creds

        """
    }

    /// Writes ``files(directory:tls:)`` and creates the resolver folder. Refuses to overwrite an existing set-up.
    public func write(to directory: String, tls: ServerTLS? = nil) throws {
        let fm = FileManager.default
        let base = URL(fileURLWithPath: directory)
        if fm.fileExists(atPath: base.appendingPathComponent("operator.jwt").path) {
            throw BusSetupError(message: "\(directory) already holds a bus set-up; refusing to overwrite its keys")
        }
        for sub in ["accounts", "keys", "creds", "jwt"] {
            try fm.createDirectory(at: base.appendingPathComponent(sub), withIntermediateDirectories: true,
                                   attributes: [.posixPermissions: sub == "keys" || sub == "creds" ? 0o700 : 0o755])
        }
        for (path, contents, mode) in files(directory: directory, tls: tls) {
            try Self.writeFile(base.appendingPathComponent(path).path, contents, mode: mode)
        }
    }

    /// Creates `path` with `mode` from the start, so a secret is never briefly readable by others.
    public static func writeFile(_ path: String, _ contents: String, mode: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode_t(mode))
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
        defer { close(fd) }
        let bytes = Array(contents.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
    }
}

/// A bus set-up could not be written.
public struct BusSetupError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

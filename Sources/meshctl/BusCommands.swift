import ArgumentParser
import Foundation
import MeshBusAuth

/// `meshctl bus ...`: setting up the secured bus (docs/security.md).
struct Bus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Set up the secured bus: keys, JWTs, credentials, nats-server configuration.",
                                                    subcommands: [Init.self])

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the operator, the system and mesh accounts, every service's credentials and the nats-server configuration.",
            discussion: """
                Writes into DIR: nats.conf (start nats-server with -c DIR/nats.conf), operator.jwt, accounts/*.jwt, \
                creds/<service>.creds (mode 0600) for AllocatorSvc, ProvisionSvc, FanoutSvc, the Gateway, meshctl and health checks (monitor), \
                creds/enroll.creds (the bootstrap identity unregistered nodes register with), creds/system.creds and the \
                signing keys ProvisionSvc needs (keys/*-signing.nk), the identity keys (keys/operator.nk, SYS.nk, mesh.nk: \
                keep them offline), and services.env, which names the variables each executable reads. Existing keys are never \
                overwritten. Nothing secret is printed.
                """)

        @Option(name: .customLong("out"), help: "The folder to write (created; must not hold a set-up already).")
        var out: String

        @Option(name: .customLong("tls-cert"), help: "nats-server certificate (PEM) to require TLS with, e.g. from scripts/gen-certs.sh.")
        var tlsCert: String?

        @Option(name: .customLong("tls-key"), help: "nats-server private key (PEM).")
        var tlsKey: String?

        @Option(name: .customLong("operator-name"), help: "The operator's name in its JWT.")
        var operatorName: String = "quazzar-mesh"

        func validate() throws {
            guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        }

        func run() async throws {
            let setup = try BusSetup.generate(operatorName: operatorName)
            let abs = { (p: String) in URL(fileURLWithPath: p).standardizedFileURL.path }
            let tls = tlsCert.map { BusSetup.ServerTLS(certFile: abs($0), keyFile: abs(tlsKey!)) }
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            try setup.write(to: out, tls: tls)
            let dir = abs(out)
            print("""
                bus set-up written to \(dir)
                  operator       \(setup.operatorKey.publicKey)
                  system account \(setup.systemAccount.publicKey)
                  mesh account   \(setup.meshAccount.publicKey) (node signing key \(setup.accountSigningKey.publicKey))
                start nats-server with: nats-server -c \(dir)/nats.conf
                the variables each executable needs are in \(dir)/services.env
                """)
        }
    }
}

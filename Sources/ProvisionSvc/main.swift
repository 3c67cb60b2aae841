import Crypto
import ArgumentParser
import Foundation
import MeshClient
import MeshDomain
import ProvisionCore
import ServiceKit
import ServiceStore
import ServiceLifecycle

/// ProvisionSvc: tenants, users, devices, nodes, plans, caps, rate limits, configs, QR codes,
/// audit log and the change outbox.
@main
struct ProvisionSvc: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ProvisionSvc",
        abstract: "Provisions devices and nodes: caps, rate limits, keypairs, wg-quick configs, QR codes, audit, outbox.",
        discussion: """
            Serves mesh.v1.provision.* and mesh.v1.reports.*.*.handshake (queue group q). Stateless: run any number of replicas. \
            Every option also reads the environment variable named in its help. Per-node bus identities (docs/security.md) are on \
            when all four MESH_BUS_* secrets are set.

            \(Env.secretsHelp(BusOptions.secrets + StoreOptions.secrets + BusIdentityConfiguration.secrets + [Self.caSealingKey]))
            """)

    /// Seals the tenant CAs' private keys at rest (docs/fallback.md).
    static let caSealingKey = SecretSetting("MESH_CA_SEALING_KEY",
                                            "Seals the tenant CAs' private keys at rest (AES-256-GCM): 32 bytes in base64 (openssl rand -base64 32). Unset: stored unsealed.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: StoreOptions

    @Option(help: "Device creations per user per window; 0 disables (env MESH_RATE_LIMIT).")
    var rateLimit: Int = Env.int("MESH_RATE_LIMIT", 5)

    @Option(help: "Rate-limit window in seconds (env MESH_RATE_WINDOW_SECONDS).")
    var rateWindowSeconds: Double = Env.seconds("MESH_RATE_WINDOW_SECONDS", 60)

    @Option(help: "Comma-separated user ids exempt from the rate limit (env MESH_RATE_LIMIT_EXEMPT).")
    var rateLimitExempt: String = Env.string("MESH_RATE_LIMIT_EXEMPT", "")

    @Option(help: "Seconds since the last handshake within which a device counts as online (env MESH_ONLINE_WINDOW_SECONDS).")
    var onlineWindowSeconds: Int = Env.int("MESH_ONLINE_WINDOW_SECONDS", 180)

    @Option(help: "How often to look for devices whose expiry passed, in seconds; at most 55 (env MESH_EXPIRY_SWEEP_SECONDS).")
    var expirySweepSeconds: Double = Env.seconds("MESH_EXPIRY_SWEEP_SECONDS", 5)

    @Option(name: .customLong("bus-node-jwt-ttl"), help: "Lifetime in seconds of the bus JWTs issued to nodes; 0: no expiry (env MESH_BUS_NODE_JWT_TTL_SECONDS).")
    var busNodeJWTTTL: Int = Env.int("MESH_BUS_NODE_JWT_TTL_SECONDS", 0)

    @Option(name: .customLong("bus-revocation-resync"), help: "Seconds between pushes of the bus revocation list to nats-server (env MESH_BUS_REVOCATION_RESYNC_SECONDS).")
    var busRevocationResync: Int = Env.int("MESH_BUS_REVOCATION_RESYNC_SECONDS", 60)

    @Option(name: .customLong("config-link-ttl"),
            help: "How long a one-time config link stays valid when its maker names no lifetime, in seconds, 60 to 604800 (env MESH_CONFIG_LINK_TTL_SECONDS).")
    var configLinkTTL: Int = Env.int("MESH_CONFIG_LINK_TTL_SECONDS", 3600)

    func validate() throws {
        guard busNodeJWTTTL >= 0 else { throw ValidationError("--bus-node-jwt-ttl (MESH_BUS_NODE_JWT_TTL_SECONDS) must be 0 or more") }
        guard busRevocationResync >= 1 else {
            throw ValidationError("--bus-revocation-resync (MESH_BUS_REVOCATION_RESYNC_SECONDS) must be at least 1")
        }
        guard onlineWindowSeconds >= 1 else { throw ValidationError("--online-window-seconds (MESH_ONLINE_WINDOW_SECONDS) must be at least 1") }
        guard rateLimit >= 0, rateWindowSeconds > 0 else { throw ValidationError("rate limit must be >= 0 and the window > 0") }
        // An expired device must leave the mesh within 60 s of its expiry.
        guard expirySweepSeconds > 0, expirySweepSeconds <= 55 else { throw ValidationError("--expiry-sweep-seconds must be more than 0 and at most 55") }
        for id in rateLimitExempt.split(separator: ",") where UUID(uuidString: id.trimmingCharacters(in: .whitespaces)) == nil {
            throw ValidationError("--rate-limit-exempt must list user UUIDs")
        }
        guard (60...604_800).contains(configLinkTTL) else { throw ValidationError("--config-link-ttl must be 60 to 604800 seconds") }
    }

    func run() async throws {
        let exempt = Set(rateLimitExempt.split(separator: ",").compactMap { UUID(uuidString: $0.trimmingCharacters(in: .whitespaces)) })
        var config = ProvisionConfiguration(rateLimit: RateLimit(limit: rateLimit, window: .milliseconds(Int(rateWindowSeconds * 1000))),
                                            rateLimitExempt: exempt, onlineWindow: .seconds(onlineWindowSeconds),
                                            expirySweepInterval: .milliseconds(Int(expirySweepSeconds * 1000)))
        if let sealing = try Env.secret(Self.caSealingKey.name), !sealing.isEmpty {
            guard let raw = Data(base64Encoded: sealing), raw.count == 32 else {
                throw ValidationError("MESH_CA_SEALING_KEY must be 32 bytes in base64 (e.g. openssl rand -base64 32)")
            }
            config.caSealingKey = SymmetricKey(data: raw)
        }
        config.configLinks.defaultTTL = .seconds(configLinkTTL)
        let busIdentity: BusIdentityConfiguration?
        do {
            busIdentity = try BusIdentityConfiguration.fromEnvironment(nodeJWTLifetime: busNodeJWTTTL > 0 ? .seconds(busNodeJWTTTL) : nil,
                                                                       resyncInterval: .seconds(busRevocationResync))
        } catch let e as MeshError {
            throw ValidationError(e.message)
        }
        let common = self.common, database = self.database
        try await ServiceHost.run(name: MeshServiceName.provision, description: "device and node provisioning", common: common) { ctx in
            let store = try await ServiceStore.open(database, schema: ProvisionSchema.schema, applicationName: MeshServiceName.provision,
                                                    logger: ctx.logger)
            var identities: NodeBusIdentities?
            if let busIdentity {
                identities = try await NodeBusIdentities.start(busIdentity, base: try common.busConfiguration(name: MeshServiceName.provision),
                                                               store: store, logger: ctx.logger)
            }
            let p = Provisioning(store: store, bus: ctx.bus, configuration: config, busIdentities: identities, logger: ctx.logger)
            return ServiceParts(endpoints: p.endpoints, services: p.services, onStop: { store.close() })
        }
    }
}

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
            when MESH_BUS_ACCOUNT_JWT, MESH_BUS_ACCOUNT_SIGNING_KEY, MESH_BUS_OPERATOR_SIGNING_KEY and MESH_BUS_SYSTEM_CREDS \
            (each also as *_FILE) are set; MESH_BUS_NODE_JWT_TTL_SECONDS (default 0: no expiry) and \
            MESH_BUS_REVOCATION_RESYNC_SECONDS (default 60) tune them.
            """)

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

    @Option(name: .customLong("config-link-ttl"),
            help: "How long a one-time config link stays valid when its maker names no lifetime, in seconds, 60 to 604800 (env MESH_CONFIG_LINK_TTL_SECONDS).")
    var configLinkTTL: Int = Env.int("MESH_CONFIG_LINK_TTL_SECONDS", 3600)

    func validate() throws {
        guard rateLimit >= 0, rateWindowSeconds > 0 else { throw ValidationError("rate limit must be >= 0 and the window > 0") }
        for id in rateLimitExempt.split(separator: ",") where UUID(uuidString: id.trimmingCharacters(in: .whitespaces)) == nil {
            throw ValidationError("--rate-limit-exempt must list user UUIDs")
        }
        guard (60...604_800).contains(configLinkTTL) else { throw ValidationError("--config-link-ttl must be 60 to 604800 seconds") }
    }

    func run() async throws {
        let exempt = Set(rateLimitExempt.split(separator: ",").compactMap { UUID(uuidString: $0.trimmingCharacters(in: .whitespaces)) })
        var config = ProvisionConfiguration(rateLimit: RateLimit(limit: rateLimit, window: .milliseconds(Int(rateWindowSeconds * 1000))),
                                            rateLimitExempt: exempt, onlineWindow: .seconds(onlineWindowSeconds))
        config.configLinks.defaultTTL = .seconds(configLinkTTL)
        let busIdentity: BusIdentityConfiguration?
        do {
            busIdentity = try BusIdentityConfiguration.fromEnvironment()
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

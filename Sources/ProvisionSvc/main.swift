import ArgumentParser
import Foundation
import MeshClient
import MeshCore
import ProvisionCore
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

    @Option(help: "Mesh DNS zone (env MESH_DOMAIN).")
    var meshDomain: String = Env.string("MESH_DOMAIN", "quazzar.mesh")

    @Option(help: "Device creations per user per window; 0 disables (env MESH_RATE_LIMIT).")
    var rateLimit: Int = Env.int("MESH_RATE_LIMIT", 5)

    @Option(help: "Rate-limit window in seconds (env MESH_RATE_WINDOW_SECONDS).")
    var rateWindowSeconds: Double = Env.seconds("MESH_RATE_WINDOW_SECONDS", 60)

    @Option(help: "Comma-separated user ids exempt from the rate limit (env MESH_RATE_LIMIT_EXEMPT).")
    var rateLimitExempt: String = Env.string("MESH_RATE_LIMIT_EXEMPT", "")

    @Option(help: "MTU written into device configs (env MESH_DEVICE_MTU).")
    var deviceMTU: Int = Env.int("MESH_DEVICE_MTU", 1280)

    @Option(help: "Seconds since the last handshake within which a device counts as online (env MESH_ONLINE_WINDOW_SECONDS).")
    var onlineWindowSeconds: Int = Env.int("MESH_ONLINE_WINDOW_SECONDS", 180)

    func validate() throws {
        guard rateLimit >= 0, rateWindowSeconds > 0 else { throw ValidationError("rate limit must be >= 0 and the window > 0") }
        guard (1280...9000).contains(deviceMTU) else { throw ValidationError("--device-mtu must be between 1280 and 9000") }
        for id in rateLimitExempt.split(separator: ",") where UUID(uuidString: id.trimmingCharacters(in: .whitespaces)) == nil {
            throw ValidationError("--rate-limit-exempt must list user UUIDs")
        }
    }

    func run() async throws {
        let exempt = Set(rateLimitExempt.split(separator: ",").compactMap { UUID(uuidString: $0.trimmingCharacters(in: .whitespaces)) })
        let config = ProvisionConfiguration(meshDomain: meshDomain, rateLimit: rateLimit, rateWindow: .milliseconds(Int(rateWindowSeconds * 1000)),
                                            rateLimitExempt: exempt, deviceMTU: deviceMTU, onlineWindow: .seconds(onlineWindowSeconds))
        let busIdentity: BusIdentityConfiguration?
        do {
            busIdentity = try BusIdentityConfiguration.fromEnvironment()
        } catch let e as MeshError {
            throw ValidationError(e.message)
        }
        let common = self.common
        try await ServiceHost.run(name: MeshServiceName.provision, description: "device and node provisioning", common: common, useStore: true) { ctx in
            var extra: [any Service] = []
            var identities: NodeBusIdentities?
            if let busIdentity {
                let ids = try await NodeBusIdentities.start(busIdentity, base: try common.busConfiguration(name: MeshServiceName.provision),
                                                            store: ctx.store!, logger: ctx.logger)
                identities = ids
                extra.append(ids)
            }
            let p = Provisioner(store: ctx.store!, allocator: AllocatorClient(bus: ctx.bus), configuration: config, logger: ctx.logger,
                                busIdentities: identities)
            return (ProvisionService.endpoints(p), extra)
        }
    }
}

import AllocatorCore
import ArgumentParser
import MeshDomain
import MeshNet
import ServiceKit
import ServiceStore

/// AllocatorSvc: per-tenant prefixes and per-owner addresses over NATS.
@main
struct AllocatorSvc: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "AllocatorSvc",
        abstract: "Hands out per-tenant /16 + ULA /48 prefixes and per-device/node /32 + /128 addresses.",
        discussion: """
            Serves mesh.v1.allocator.* (queue group q). Any number of replicas may run; PostgreSQL keeps them consistent. \
            Every option also reads the environment variable named in its help.

            \(Env.secretsHelp(BusOptions.secrets + StoreOptions.secrets))
            """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: StoreOptions

    @Option(help: "IPv4 pool tenant prefixes come from (env MESH_ALLOC_POOL).")
    var pool: String = Env.string("MESH_ALLOC_POOL", "100.64.0.0/10")

    @Option(help: "Tenant prefix length (env MESH_ALLOC_TENANT_PREFIX_LENGTH).")
    var tenantPrefixLength: Int = Env.int("MESH_ALLOC_TENANT_PREFIX_LENGTH", 16)

    @Option(help: "unique-then-shared or unique (env MESH_ALLOC_PREFIX_POLICY).")
    var prefixPolicy: String = Env.string("MESH_ALLOC_PREFIX_POLICY", PrefixPolicy.uniqueThenShared.rawValue)

    @Option(help: "Seconds a released address stays quarantined (env MESH_ALLOC_QUARANTINE_SECONDS).")
    var quarantineSeconds: Int = Env.int("MESH_ALLOC_QUARANTINE_SECONDS", 300)

    func validate() throws {
        guard let p = IPPrefix(pool), case .v4 = p.address else { throw ValidationError("--pool must be an IPv4 CIDR prefix") }
        guard PrefixPolicy(rawValue: prefixPolicy) != nil else { throw ValidationError("--prefix-policy must be unique-then-shared or unique") }
        guard (8...28).contains(tenantPrefixLength), UInt8(tenantPrefixLength) >= p.length else {
            throw ValidationError("--tenant-prefix-length must be between 8 and 28 and inside the pool")
        }
    }

    func run() async throws {
        let config = AllocatorConfiguration(pool: IPPrefix(pool)!, tenantPrefixLength: UInt8(tenantPrefixLength),
                                            policy: PrefixPolicy(rawValue: prefixPolicy)!, quarantine: .seconds(quarantineSeconds))
        let database = self.database
        try await ServiceHost.run(name: MeshServiceName.allocator, description: "per-tenant prefix and per-owner address allocation",
                                  common: common) { ctx in
            let store = try await ServiceStore.open(database, schema: AllocatorSchema.schema, applicationName: MeshServiceName.allocator,
                                                    logger: ctx.logger)
            let allocator = Allocator(store: store, configuration: config, logger: ctx.logger)
            return ServiceParts(endpoints: AllocatorService.endpoints(allocator, logger: ctx.logger), onStop: { store.close() })
        }
    }
}

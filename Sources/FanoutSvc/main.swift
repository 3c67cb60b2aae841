import ArgumentParser
import FanoutCore
import MeshDomain
import ServiceKit
import ServiceStore

/// FanoutSvc: keeps its own copy of every tenant's mesh (fed by ProvisionSvc's outbox relay),
/// publishes every change as `mesh.v1.peers.updated.<tenant>`, and serves SyncFromCP.
@main
struct FanoutSvc: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "FanoutSvc",
        abstract: "Publishes every mesh change to the tenant's nodes, in revision order, and serves their full views.",
        discussion: """
            Serves mesh.v1.fanout.ingest, mesh.v1.fanout.sync.*.*, mesh.v1.fanout.changes.*.* and mesh.v1.fanout.revision.* \
            (queue group q); publishes mesh.v1.peers.updated.<tenant>. Any number of replicas may run. Every option also reads the \
            environment variable named in its help.

            \(Env.secretsHelp(BusOptions.secrets + StoreOptions.secrets))
            """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: StoreOptions

    @Option(help: "Days to keep stored changes for the catch-up of nodes (env MESH_FANOUT_RETENTION_DAYS).")
    var retentionDays: Int = Env.int("MESH_FANOUT_RETENTION_DAYS", 7)

    @Option(help: "Members per SyncFromCP page when a node asks for no size (env MESH_FANOUT_PAGE_SIZE).")
    var pageSize: Int = Env.int("MESH_FANOUT_PAGE_SIZE", 2000)

    func validate() throws {
        guard retentionDays >= 1 else { throw ValidationError("--retention-days must be at least 1") }
        guard (100...4000).contains(pageSize) else { throw ValidationError("--page-size must be between 100 and 4000") }
    }

    func run() async throws {
        let config = FanoutConfiguration(retention: .seconds(retentionDays * 86400), defaultPageSize: pageSize)
        let database = self.database
        try await ServiceHost.run(name: MeshServiceName.fanout, description: "mesh change fan-out and SyncFromCP", common: common) { ctx in
            let store = try await ServiceStore.open(database, schema: FanoutSchema.schema, applicationName: MeshServiceName.fanout, logger: ctx.logger)
            let fanout = Fanout(store: store, bus: ctx.bus, configuration: config, logger: ctx.logger)
            let directory = MeshDirectory(store: store, configuration: config, logger: ctx.logger)
            return ServiceParts(endpoints: FanoutService.endpoints(fanout: fanout, directory: directory),
                                services: [FanoutPruner(fanout: fanout)], onStop: { store.close() })
        }
    }
}

import ArgumentParser
import FanoutCore
import MeshCore

/// FanoutSvc: publishes the change outbox as `mesh.v1.peers.updated.<tenant>` and serves SyncFromCP.
@main
struct FanoutSvc: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "FanoutSvc",
        abstract: "Publishes every peer change to the tenant's nodes, in revision order, and serves full peer lists.",
        discussion: "Publishes mesh.v1.peers.updated.<tenant>; serves mesh.v1.fanout.sync.*.* and mesh.v1.fanout.revision.* (queue group q). Any number of replicas may run. Every option also reads the environment variable named in its help.")

    @OptionGroup var common: CommonOptions

    @Option(help: "Mesh DNS zone (env MESH_DOMAIN).")
    var meshDomain: String = Env.string("MESH_DOMAIN", "quazzar.mesh")

    @Option(help: "Seconds between fallback polls of the outbox (env MESH_FANOUT_POLL_SECONDS).")
    var pollSeconds: Double = Env.seconds("MESH_FANOUT_POLL_SECONDS", 2)

    @Option(help: "Tenants published at once (env MESH_FANOUT_CONCURRENCY).")
    var concurrency: Int = Env.int("MESH_FANOUT_CONCURRENCY", 4)

    @Option(help: "Days to keep published changes (env MESH_FANOUT_RETENTION_DAYS).")
    var retentionDays: Int = Env.int("MESH_FANOUT_RETENTION_DAYS", 7)

    func run() async throws {
        let config = FanoutConfiguration(pollInterval: .milliseconds(Int(pollSeconds * 1000)), concurrency: max(1, concurrency),
                                         retention: .seconds(retentionDays * 86400), meshDomain: meshDomain)
        try await ServiceHost.run(name: MeshServiceName.fanout, description: "peer-change fan-out and SyncFromCP", common: common, useStore: true) { ctx in
            let fanout = Fanout(store: ctx.store!, bus: ctx.bus, configuration: config, logger: ctx.logger)
            let directory = PeerDirectory(store: ctx.store!, configuration: config, logger: ctx.logger)
            return (FanoutService.endpoints(directory), [FanoutPublisher(fanout: fanout)])
        }
    }
}

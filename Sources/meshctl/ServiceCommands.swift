import ArgumentParser
import Foundation
import MeshBus
import MeshBusAuth

/// `meshctl service ...`: the services' ADR-32 discovery, for operators and health checks.
struct ServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "service", abstract: "Ask the services on the bus who is there.",
                                                    subcommands: [Ping.self])

    struct Ping: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send $SRV.PING.<name> and list the instances that answer; exit 1 if none does (or not --instance).",
            discussion: """
                Replies come back on inboxes under _INBOX.monitor, so the monitor identity (creds/monitor.creds of \
                `meshctl bus init`, which may only ping) is enough; a container health check uses \
                `meshctl service ping AllocatorSvc --instance allocator-1` to ask whether its own replica answers.
                """)
        @OptionGroup var options: CtlOptions
        @Argument(help: "Service name, e.g. AllocatorSvc, ProvisionSvc, FanoutSvc, Gateway, NodeApplier.") var name: String
        @Option(help: "Succeed only when the instance with this MESH_INSTANCE answers.") var instance: String?
        @Option(help: "Seconds to collect answers.") var wait: Double = 2

        func run() async throws {
            let bus = try await options.connect(inboxPrefix: BusPolicy.monitorInboxPrefix)
            let inbox = BusPolicy.monitorInboxPrefix + "." + Nuid.next()
            let sub = try bus.subscribe(inbox)
            try bus.publish("$SRV.PING.\(name)", [], reply: inbox)
            try? await bus.flush()
            var answers: [BusService.PingResponse] = []
            let deadline = ContinuousClock.now + .milliseconds(Int(wait * 1000))
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await Task.sleep(until: deadline); sub.unsubscribe() }
                for await m in sub {
                    guard let r = try? JSONDecoder().decode(BusService.PingResponse.self, from: Data(m.payload)) else { continue }
                    answers.append(r)
                    if let instance, r.metadata["instance"] == instance { break }
                }
                group.cancelAll()
            }
            sub.unsubscribe()
            await bus.close()
            let rows = answers.map { ["name": $0.name, "id": $0.id, "version": $0.version, "instance": $0.metadata["instance"] ?? ""] }
            try options.emit(["instances": rows], text: rows.map { "\($0["name"]!) \($0["id"]!) \($0["version"]!) \($0["instance"]!)" }
                .joined(separator: "\n"))
            if let instance {
                guard answers.contains(where: { $0.metadata["instance"] == instance }) else {
                    throw CtlError(message: "\(name) instance \(instance) did not answer $SRV.PING within \(wait) s")
                }
            } else if answers.isEmpty {
                throw CtlError(message: "no \(name) answered $SRV.PING within \(wait) s")
            }
        }
    }
}

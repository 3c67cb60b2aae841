import Foundation
import MeshBus
import ServiceKit
import MeshDomain
import MeshTestSupport
import Testing

/// nats.c reconnects for ever, except after authentication errors: then it closes the connection
/// for good. A service must not idle on a dead connection; `BusConnectionService` stops with an
/// error (and the process with a non-zero status) so that its supervisor starts it again.
@Suite(.timeLimit(.minutes(5)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct GiveUpTests {
    @Test func aConnectionNatsGivesUpOnStopsItsService() async throws {
        let port = try freeLoopbackPort()
        let logDir = TestEnvironment.outputDir("bus-giveup")
        func server(_ token: String) throws -> ManagedProcess {
            try ManagedProcess(name: "nats-giveup-\(token)-\(Nuid.short())", executable: "/usr/bin/env",
                               arguments: ["nats-server", "-a", "127.0.0.1", "-p", "\(port)", "--auth", token], logDir: logDir)
        }
        let first = try server("first")
        let config = BusConfiguration(servers: ["nats://127.0.0.1:\(port)"], name: "giveup", credentials: .token("first"),
                                      reconnectWaitMin: .milliseconds(50), reconnectWaitMax: .milliseconds(200))
        let bus = try await BusConnection.connect(config, logger: TestEnvironment.logger("test.giveup"))
        try await bus.waitUntilConnected(timeout: .seconds(60))
        let service = BusConnectionService(connection: bus)
        let running = Task { try await service.run() }

        // The server comes back with other credentials: every reconnect fails authentication.
        await first.kill9()
        let second = try server("second")
        let outcome = try await withDeadline(.seconds(60), "the service stops once nats.c gives the connection up") {
            do {
                try await running.value
                return "returned"
            } catch {
                return "\(error)"
            }
        }
        #expect(bus.isClosed && !bus.isClosing, "nats.c did not give the connection up: \(outcome)")
        #expect(outcome == "\(BusError.closed)", "the service did not stop with an error: \(outcome)")
        running.cancel()
        await second.kill9()
    }
}

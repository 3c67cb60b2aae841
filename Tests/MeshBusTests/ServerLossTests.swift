import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshTestSupport
import Synchronization
import Testing

/// Requests in flight while the client's nats-server is killed. Every failure must be one the
/// caller can act on (no responder, no reply in time, connection lost: all transient), never a raw
/// nats.c status that would reach users as an internal error; and once the server is back, requests
/// are answered again.
@Suite(.timeLimit(.minutes(3)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct ServerLossTests {
    final class Outcomes: Sendable {
        let counts = Mutex<[String: Int]>([:])
        let stop = Atomic<Bool>(false)
        func add(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }
        func count(_ key: String) -> Int { counts.withLock { $0[key] ?? 0 } }
    }

    @Test func requestsDuringAServerKillFailOnlyAsTransient() async throws {
        let cluster = try TestNatsCluster(size: 2, name: "loss")
        let ports = cluster.urls.split(separator: ",").map(String.init)
        // The requester talks to server 0 only, the responder to server 1: the kill takes the
        // requester's socket away under its writes (publishes write to the socket themselves).
        let requester = try await TestEnvironment.connectBus("t-loss-req", url: ports[0])
        let responderBus = try await TestEnvironment.connectBus("t-loss-resp", url: ports[1])
        let subject = "test.loss.\(Nuid.short())"
        let responder = try BusService(connection: responderBus, name: "loss", version: "1.0.0", endpoints: [
            ServiceEndpoint(name: "echo", subject: subject) { request in request.payload },
        ], logger: TestEnvironment.logger("t"))
        let outcomes = Outcomes()
        try await withService(responder) {
            try await waitUntil("the responder reachable through the cluster", timeout: .seconds(30)) {
                (try? await requester.request(subject, [1], timeout: .seconds(1))) != nil
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<32 {
                    group.addTask {
                        while !outcomes.stop.load(ordering: .relaxed) {
                            let key: String
                            do {
                                _ = try await requester.request(subject, Array(repeating: 7, count: 512), timeout: .milliseconds(500))
                                key = "answered"
                            } catch let e as BusError {
                                switch e {
                                case .timeout: key = "timeout"
                                case .noResponders: key = "no responders"
                                case .connectionLost: key = "connection lost"
                                default: key = "other: \(e)"
                                }
                                // What a service or the gateway would make of it.
                                let code = MeshError(busError: e).code
                                if code != .unavailable && code != .deadlineExceeded { outcomes.add("maps to \(code)") }
                            }
                            outcomes.add(key)
                        }
                    }
                }
                try await waitUntil("requests answered before the kill", timeout: .seconds(30)) {
                    outcomes.count("answered") >= 200
                }
                // Three kills: the moment a write meets the dead socket before the reader noticed is short.
                for _ in 0..<3 {
                    await cluster.kill(0)
                    try await Task.sleep(for: .milliseconds(300))
                    try cluster.start(0)
                    let answeredBefore = outcomes.count("answered")
                    try await waitUntil("requests answered again after the restart", timeout: .seconds(60)) {
                        outcomes.count("answered") >= answeredBefore + 200
                    }
                }
                outcomes.stop.store(true, ordering: .relaxed)
                try await group.waitForAll()
            }
        }
        let seen = outcomes.counts.withLock { $0 }
        let allowed: Set<String> = ["answered", "timeout", "no responders", "connection lost"]
        #expect(seen.keys.allSatisfy { allowed.contains($0) }, "outcomes: \(seen)")
        // The kill must have been felt, or the test proved nothing.
        #expect(seen.filter { $0.key != "answered" }.values.reduce(0, +) > 0, "outcomes: \(seen)")
        print("server loss outcomes: \(seen)")
        await requester.close(); await responderBus.close()
        await cluster.stop()
    }
}

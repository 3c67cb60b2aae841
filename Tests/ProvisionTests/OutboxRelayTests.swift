import Foundation
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import ProvisionCore
import Synchronization
import Testing

/// The outbox relay when FanoutSvc cannot take changes: a failed relay pauses the tenant's wake-ups
/// instead of re-reading and re-sending its backlog on every committed change, and the relay
/// delivers the backlog once FanoutSvc answers again.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .timeLimit(.minutes(3)))
struct OutboxRelayTests {
    @Test func aFailedRelayPausesTheTenantAndTheBacklogFollowsLater() async throws {
        // No FanoutSvc: nothing the tenant commits is delivered by ProvisionSvc's own relay.
        let c = try await ControlPlane.start("relay-pause", fanout: 0, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let tid = try #require(UUID(text: t.id))
        func undelivered() async throws -> Int {
            try await c.store.query("SELECT count(*) AS n FROM provision.outbox WHERE tenant_id = $1 AND delivered_at IS NULL", tid)
                .first!.decode("n", as: Int.self)
        }
        #expect(try await undelivered() >= 1, "the tenant's settings wait in the outbox")

        // A relay whose FanoutSvc refuses everything, and whose pause outlasts the test: ten changes
        // 50 ms apart cause one attempt, not ten.
        let attempts = Atomic<Int>(0)
        let failing = OutboxRelay(store: c.store, ingest: { _ async throws(MeshError) in
            attempts.add(1, ordering: .relaxed)
            throw MeshError.unavailable("FanoutSvc is down")
        }, sweepInterval: .seconds(600), retryAfterFailure: .seconds(600), logger: TestEnvironment.logger("relay-failing"))
        let run = Task { try await failing.run() }
        for _ in 0..<10 {
            failing.changed(tenant: tid)
            try await Task.sleep(for: .milliseconds(50))
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while attempts.load(ordering: .relaxed) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(attempts.load(ordering: .relaxed) == 1, "one attempt; the other wake-ups fell in the pause")
        run.cancel()
        _ = try? await run.value

        // A short pause: the first attempt fails, FanoutSvc comes back, and a change after the pause
        // delivers the whole backlog in revision order.
        let up = Atomic<Bool>(false)
        let received = Mutex<[UInt64]>([])
        let recovering = OutboxRelay(store: c.store, ingest: { req async throws(MeshError) in
            guard up.load(ordering: .relaxed) else { throw MeshError.unavailable("FanoutSvc is down") }
            received.withLock { $0 += req.changes.map(\.revision) }
            return Mesh_V1_IngestResponse()
        }, sweepInterval: .seconds(600), retryAfterFailure: .milliseconds(200), logger: TestEnvironment.logger("relay-recovering"))
        let run2 = Task { try await recovering.run() }
        let backlog = try await undelivered()
        recovering.changed(tenant: tid)
        try await Task.sleep(for: .milliseconds(100))
        up.store(true, ordering: .relaxed)
        let deadline2 = ContinuousClock.now + .seconds(20)
        while try await undelivered() > 0, ContinuousClock.now < deadline2 {
            recovering.changed(tenant: tid)
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await undelivered() == 0)
        let got = received.withLock { $0 }
        #expect(got.count == backlog && got == got.sorted() && got.first == 1, "the backlog from revision 1, in order: \(got)")
        run2.cancel()
        _ = try? await run2.value
        try await c.stop()
    }
}

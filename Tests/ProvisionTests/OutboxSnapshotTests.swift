import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import ProvisionCore
import Synchronization
import Testing

/// The outbox relay's snapshot (sent when FanoutSvc lacks revisions ProvisionSvc no longer keeps):
/// streamed in pages, never the whole tenant at once, and never mixed with another sender's.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .timeLimit(.minutes(3)))
struct OutboxSnapshotTests {
    @Test func aSnapshotIsStreamedInPagesAndASecondSenderNeverMixesIn() async throws {
        let c = try await ControlPlane.start("snap", fanout: 1, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let admin = try await c.user(t, .admin)
        let (n1, _) = try await c.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        var ids: Set<String> = [n1.id]
        for i in 0..<9 { ids.insert(try await c.client.createDevice(caller: admin, label: "d\(i)", type: .other).device.id) }
        let tid = try #require(UUID(text: t.id))
        let fan = FanoutClient(bus: c.bus)
        // Everything relayed: FanoutSvc is at the tenant's revision.
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline,
              try await c.store.query("SELECT count(*) AS n FROM provision.outbox WHERE tenant_id = $1 AND delivered_at IS NULL", tid)
                .first!.decode("n", as: Int.self) > 0 {
            try await Task.sleep(for: .milliseconds(20))
        }
        let revision = try await fan.revision(tenantID: t.id)
        #expect(revision >= 11, "settings, the node, the hub and 9 devices")
        let before = try await fan.fullView(tenantID: t.id, nodeID: n1.id)
        #expect(Set(before.members.keys) == ids)

        // FanoutSvc loses its copy of the tenant (as with a new database); a relay with pages of 3
        // sends the whole state, recording each request it makes.
        _ = try await c.store.query("DELETE FROM fanout.tenant_views WHERE tenant_id = $1", tid)
        let sent = Mutex<[Mesh_V1_IngestRequest]>([])
        let relay = OutboxRelay(store: c.store, ingest: { req async throws(MeshError) in
            sent.withLock { $0.append(req) }
            return try await fan.ingest(req)
        }, snapshotPageSize: 3, logger: TestEnvironment.logger("relay"))
        let resp = try await relay.sendSnapshot(tenant: tid)
        #expect(resp.revision == revision)
        let requests = sent.withLock { $0 }
        #expect(requests.map(\.snapshotMembers.count) == [3, 3, 3, 1], "10 members in pages of at most 3")
        #expect(requests.map(\.snapshotPage) == [0, 1, 2, 3])
        #expect(requests.map(\.snapshotDone) == [false, false, false, true])
        #expect(Set(requests.map(\.snapshotID)).count == 1 && !requests[0].snapshotID.isEmpty)
        let after = try await fan.fullView(tenantID: t.id, nodeID: n1.id)
        #expect(Set(after.members.keys) == ids && after.revision == revision)
        #expect(after.members.values.allSatisfy { before.members[$0.id] == $0 }, "every member as it was")
        #expect(after.settings == before.settings)

        // Two senders of the same tenant: A starts, B starts (and replaces A's first page), A's next
        // page is refused; B's completes the view, which holds B's members only.
        let members = Array(before.members.values).sorted { $0.id < $1.id }
        func page(_ id: String, _ n: UInt32, _ part: ArraySlice<Mesh_V1_Member>, done: Bool) -> Mesh_V1_IngestRequest {
            var r = Mesh_V1_IngestRequest()
            r.tenantID = t.id
            r.snapshot = true
            r.snapshotID = id
            r.snapshotPage = n
            r.snapshotRevision = revision
            r.snapshotSettings = before.settings
            r.snapshotMembers = Array(part)
            r.snapshotDone = done
            return r
        }
        _ = try await fan.ingest(page("a", 0, members[0..<5], done: false))
        _ = try await fan.ingest(page("b", 0, members[0..<4], done: false))
        #expect(await meshError { _ = try await fan.ingest(page("a", 1, members[5...], done: true)) }?.code == .failedPrecondition)
        #expect(await meshError { _ = try await fan.fullView(tenantID: t.id, nodeID: n1.id) }?.code == .unavailable,
                "no sync while a snapshot is loading")
        _ = try await fan.ingest(page("b", 1, members[4...], done: true))
        #expect(await meshError { _ = try await fan.ingest(page("a", 2, members[5...], done: true)) }?.code == .failedPrecondition,
                "a finished snapshot does not take pages of another")
        let final = try await fan.fullView(tenantID: t.id, nodeID: n1.id)
        #expect(Set(final.members.keys) == ids && final.revision == revision)

        // Ordinary changes follow the snapshot: a new device reaches FanoutSvc.
        let d = try await c.client.createDevice(caller: admin, label: "later", type: .other).device
        let deadline2 = ContinuousClock.now + .seconds(20)
        var latest = final
        while latest.members[d.id] == nil, ContinuousClock.now < deadline2 {
            try await Task.sleep(for: .milliseconds(20))
            latest = try await fan.fullView(tenantID: t.id, nodeID: n1.id)
        }
        #expect(latest.members[d.id] != nil && latest.revision == revision + 1)
        try await c.stop()
    }
}

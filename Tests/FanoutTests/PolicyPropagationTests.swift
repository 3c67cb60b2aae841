import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// Access policies travel like peers: one revisioned change per edit in the same outbox, stored by
/// FanoutSvc, part of SyncFromCP, published in order.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .timeLimit(.minutes(5)))
struct PolicyPropagationTests {
    func rule(_ i: Int) -> Mesh_V1_PolicyRule {
        Mesh_V1_PolicyRule.with {
            $0.name = "rule \(i)"
            $0.sources = [Mesh_V1_PolicySelector.with { $0.tag = "t\(i)" }]
            $0.destinations = [Mesh_V1_PolicySelector.with { $0.all = true }]
            $0.ports = [Mesh_V1_PolicyPort.with { $0.protocol = .tcp; $0.first = UInt32(1000 + i); $0.last = UInt32(1000 + i) }]
        }
    }

    /// Concurrent edits on three ProvisionSvc replicas: every edit lands, versions rise by one per
    /// edit in revision order, and FanoutSvc ends with the whole set.
    @Test func concurrentEditsOnThreeReplicasArriveWholeAndInOrder() async throws {
        let c = try await ControlPlane.start("policy3", replicas: 3, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.readyTenant(.enterprise)
        let admin = try await c.user(t, .admin)
        let rec = try await StreamRecorder(bus: c.bus, tenant: t.id)
        let n = 24
        let results = await withTaskGroup(of: MeshError?.self) { group in
            for i in 0..<n { group.addTask { await meshError { _ = try await c.client.updatePolicy(caller: admin, .add(rule(i))) } } }
            return await group.reduce(into: [MeshError?]()) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0 == nil }, "\(results.compactMap { $0 })")
        let stored = try await c.client.policy(caller: admin)
        #expect(stored.version == UInt64(n) && stored.rules.count == n && Set(stored.rules.map(\.name)).count == n)

        let tip = try await c.client.getTenant(t.id).revision
        let changes = try await rec.take(until: tip)
        let policies = changes.compactMap { u in u.newPolicy.map { (u.revision, $0) } }
        #expect(policies.count == n, "\(policies.count) policy changes published")
        #expect(policies.map(\.1.version) == (1...UInt64(n)).map { $0 }, "versions rise by one in revision order")
        #expect(zip(policies, policies.dropFirst()).allSatisfy { $0.0 < $1.0 })
        #expect(policies.allSatisfy { Int($0.1.version) == $0.1.rules.count }, "each change carries the whole set")

        // SyncFromCP has it (a node that missed a change resyncs to it).
        let node = try #require(try await c.client.listNodes(caller: admin).first)
        let fan = FanoutClient(bus: c.bus)
        let view = try await eventually({ try await fan.fullView(tenantID: t.id, nodeID: node.id) }, until: { $0.policy.version == UInt64(n) })
        #expect(view.policy.rules == stored.rules)
        try await c.stop()
    }

    /// A snapshot (what the relay sends when FanoutSvc lacks revisions no longer kept) carries the
    /// policy; SyncFromCP hands it out on the first page only.
    @Test func snapshotsCarryThePolicyAndSyncServesItOnce() async throws {
        let c = try await ControlPlane.start("policysnap", replicas: 0, fanout: 1)
        let fan = FanoutClient(bus: c.bus)
        let tenant = UUID().lowercased, node = UUID().lowercased
        var members: [Mesh_V1_Member] = []
        for i in 0..<5 {
            var m = Mesh_V1_Member()
            m.id = i == 0 ? node : UUID().lowercased
            m.kind = i == 0 ? .node : .device
            m.slug = "m\(i)"
            members.append(m)
        }
        var req = Mesh_V1_IngestRequest()
        req.tenantID = tenant
        req.snapshot = true
        req.snapshotRevision = 9
        req.snapshotMembers = members
        req.snapshotPolicy = Mesh_V1_PolicySet.with { $0.version = 4; $0.rules = [rule(1), rule(2)] }
        req.snapshotDone = true
        #expect(try await fan.ingest(req).revision == 9)
        let first = try await fan.sync(tenantID: tenant, nodeID: node, pageSize: 2)
        #expect(first.policy.version == 4 && first.policy.rules.count == 2)
        #expect(!first.nextMemberID.isEmpty)
        let second = try await fan.sync(tenantID: tenant, nodeID: node, after: first.nextMemberID, pageSize: 2)
        #expect(second.policy == Mesh_V1_PolicySet(), "later pages leave the policy out")
        let view = try await fan.fullView(tenantID: tenant, nodeID: node, pageSize: 2)
        #expect(view.policy.version == 4 && view.members.count == 5)

        // A policy change after the snapshot replaces it, and a settings change keeps it.
        var change = Mesh_V1_PeersUpdated()
        change.tenantID = tenant
        change.revision = 10
        change.policy = Mesh_V1_PolicySet.with { $0.version = 5 }
        var settings = Mesh_V1_PeersUpdated()
        settings.tenantID = tenant
        settings.revision = 11
        settings.settings = Mesh_V1_TenantSettings.with { $0.domain = "quazzar.mesh" }
        var more = Mesh_V1_IngestRequest()
        more.tenantID = tenant
        more.changes = [change, settings]
        #expect(try await fan.ingest(more).revision == 11)
        let after = try await fan.fullView(tenantID: tenant, nodeID: node)
        #expect(after.policy.version == 5 && after.policy.rules.isEmpty && after.settings.domain == "quazzar.mesh")
        try await c.stop()
    }
}

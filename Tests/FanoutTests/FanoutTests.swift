import Foundation
import MeshBus
import MeshClient
import MeshCore
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// Collects a tenant's PeersUpdated stream.
final class StreamRecorder: Sendable {
    let sub: BusSubscription

    init(bus: BusConnection, tenant: String) async throws {
        sub = try bus.subscribe(MeshSubjects.peersUpdated(tenant: tenant))
        try await bus.flush()
    }

    /// Reads messages until `count` arrived or `timeout` passed.
    func take(_ count: Int, timeout: Duration = .seconds(60)) async throws -> [Mesh_V1_PeersUpdated] {
        let sub = self.sub
        return try await withThrowingTaskGroup(of: [Mesh_V1_PeersUpdated].self) { group in
            group.addTask {
                var out: [Mesh_V1_PeersUpdated] = []
                for await m in sub {
                    out.append(try Mesh_V1_PeersUpdated(serializedBytes: m.payload))
                    if out.count >= count { break }
                }
                return out
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return []
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
    }
}

@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct FanoutTests {
    @Test func threeReplicasPublishEveryChangeOnceInRevisionOrder() async throws {
        let c = try await ControlPlane.start("fan3", replicas: 2, fanout: 3, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let admin = try await c.user(t, .admin)
        let rec = try await StreamRecorder(bus: c.bus, tenant: t.id)
        _ = try await c.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        let devices = try await withThrowingTaskGroup(of: Mesh_V1_Device.self) { group in
            for i in 0..<40 { group.addTask { try await c.client.createDevice(caller: admin, label: "d\(i)", type: .other).device } }
            return try await group.reduce(into: [Mesh_V1_Device]()) { $0.append($1) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for d in devices.prefix(15) { group.addTask { _ = try await c.client.deleteDevice(caller: admin, deviceID: d.id) } }
            try await group.waitForAll()
        }
        let messages = try await rec.take(56)
        #expect(messages.map(\.revision) == (1...56).map(UInt64.init), "revisions in order, once each")
        #expect(messages.allSatisfy { $0.tenantID == t.id })
        #expect(messages.filter { !$0.added.isEmpty }.count == 41)
        #expect(messages.filter { !$0.removed.isEmpty }.count == 15)
        #expect(messages.allSatisfy { $0.added.count + $0.changed.count + $0.removed.count == 1 }, "one change per message")
        let removedKeys = Set(messages.flatMap(\.removed).map(\.publicKey))
        #expect(removedKeys == Set(devices.prefix(15).map(\.publicKey)))
        // Nothing is published twice: the message after these 56 is the next change, not a repeat.
        _ = try await c.client.createDevice(caller: admin, label: "sentinel", type: .other)
        let after = try await rec.take(1)
        #expect(after.map(\.revision) == [57], "duplicate publication: \(after.map(\.revision))")
        // And everything is marked published.
        let unpublished = try await c.store.query("SELECT count(*) AS n FROM peer_changes WHERE published_at IS NULL").first!
        #expect(try unpublished.decode("n", as: Int.self) == 0)
        try await c.stop()
    }

    @Test func changesMadeWhileFanoutIsDownArePublishedWhenItReturns() async throws {
        let c = try await ControlPlane.start("fandown", fanout: 1, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let admin = try await c.user(t, .admin)
        let rec = try await StreamRecorder(bus: c.bus, tenant: t.id)
        _ = try await c.client.createDevice(caller: admin, label: "before", type: .other)
        #expect(try await rec.take(1).map(\.revision) == [1])
        let fanout = c.processes.last!
        await fanout.kill9()
        for i in 0..<5 { _ = try await c.client.createDevice(caller: admin, label: "down \(i)", type: .other) }
        // A new replica picks up where the dead one stopped.
        let again = try await ServiceProcesses.start("FanoutSvc", natsURL: c.nats.url, databaseURL: c.db.url, bus: c.bus, logDir: c.logDir)
        // Delivery is at least once across a crash: a replica killed after its flush to nats-server
        // but before its commit leaves revision 1 unmarked, and the new one sends it again (nodes
        // drop a revision they already hold). Everything after it comes once, in order.
        var revisions = try await rec.take(5).map(\.revision)
        if revisions.first == 1 {
            revisions.removeFirst()
            revisions += try await rec.take(1).map(\.revision)
        }
        #expect(revisions == [2, 3, 4, 5, 6])
        try await stopChecked(again)
        try await c.stop()
    }

    @Test func syncFromCPReturnsTheFullListAtARevision() async throws {
        let c = try await ControlPlane.start("sync", fanout: 1, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.pro)
        let admin = try await c.user(t, .admin)
        let (n1, _) = try await c.node(t, admin: admin, name: "alpha", endpoint: "192.0.2.1:51820")
        let (n2, _) = try await c.node(t, admin: admin, name: "beta", endpoint: "192.0.2.2:51820")
        let d1 = try await c.client.createDevice(caller: admin, label: "phone", type: .iphone).device
        let fan = FanoutClient(bus: c.bus)
        let s = try await fan.sync(tenantID: t.id, nodeID: n2.id)
        #expect(s.revision == 3)
        #expect(s.self_p.id == n2.id && !s.self_p.hub)
        #expect(Set(s.peers.map(\.id)) == [n1.id, d1.id])
        let hub = try #require(s.peers.first { $0.id == n1.id })
        #expect(hub.hub && hub.endpoint == "192.0.2.1:51820" && hub.kind == .node && hub.persistentKeepalive == 25)
        let dev = try #require(s.peers.first { $0.id == d1.id })
        #expect(dev.allowedIps == ["\(d1.ipv4)/32", "\(d1.ipv6)/128"] && dev.dnsName == "phone.quazzar.mesh" && dev.endpoint.isEmpty)
        #expect(s.ipv4Prefix == t.ipv4Prefix)
        #expect(try await fan.revision(tenantID: t.id) == 3)

        // Unknown node, and a body that does not match its subject.
        #expect(await meshError { _ = try await fan.sync(tenantID: t.id, nodeID: UUID().uuidString.lowercased()) }?.code == .notFound)
        var forged = Mesh_V1_SyncRequest()
        forged.tenantID = t.id
        forged.nodeID = n1.id
        let err = await meshError {
            let _: Mesh_V1_SyncResponse = try await c.bus.call(MeshSubjects.sync(tenant: t.id, node: n2.id), forged)
        }
        #expect(err?.code == .permissionDenied)
        try await c.stop()
    }
}

import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import Synchronization
import Testing

/// Collects a tenant's PeersUpdated stream. One task reads the subscription from the start, so
/// nothing is missed between two `take`s, and a `take` that runs out of time returns what did
/// arrive (a failure then shows which revisions came), without ending the subscription.
final class StreamRecorder: Sendable {
    private struct State {
        var received: [Mesh_V1_PeersUpdated] = []
        var taken = 0
        var undecodable = 0
    }
    /// Shared with the reading task.
    private final class Shared: Sendable {
        let state = Mutex(State())
    }
    private let shared = Shared()
    private let reader: Task<Void, Never>

    init(bus: BusConnection, tenant: String) async throws {
        let sub = try bus.subscribe(MeshSubjects.peersUpdated(tenant: tenant))
        try await bus.flush()
        let shared = self.shared
        reader = Task {
            for await m in sub {
                let update = try? Mesh_V1_PeersUpdated(serializedBytes: m.payload)
                shared.state.withLock { s in
                    if let update { s.received.append(update) } else { s.undecodable += 1 }
                }
            }
        }
    }

    deinit { reader.cancel() }

    /// Reads messages until one at `revision` arrived (or `timeout` passed).
    func take(until revision: UInt64, timeout: Duration = .seconds(60)) async throws -> [Mesh_V1_PeersUpdated] {
        var out: [Mesh_V1_PeersUpdated] = []
        let deadline = ContinuousClock.now + timeout
        while out.last?.revision != revision, ContinuousClock.now < deadline {
            out += try await take(1, timeout: deadline - ContinuousClock.now)
        }
        return out
    }

    /// The next `count` messages, or those that arrived before `timeout` passed.
    func take(_ count: Int, timeout: Duration = .seconds(60)) async throws -> [Mesh_V1_PeersUpdated] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let late = ContinuousClock.now >= deadline
            let (out, undecodable) = shared.state.withLock { s -> ([Mesh_V1_PeersUpdated]?, Int) in
                guard s.received.count - s.taken >= count || late else { return (nil, s.undecodable) }
                let out = Array(s.received[s.taken..<min(s.taken + count, s.received.count)])
                s.taken += out.count
                return (out, s.undecodable)
            }
            if undecodable > 0 { throw TestSetupError.failed("\(undecodable) PeersUpdated message(s) did not decode") }
            if let out { return out }
            try await Task.sleep(for: .milliseconds(10))
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
        // The tenant's settings (1), the node and the hub setting (2, 3), 40 devices, 15 removals.
        let messages = try await rec.take(58)
        #expect(messages.map(\.revision) == (1...58).map(UInt64.init), "revisions in order, once each")
        #expect(messages.allSatisfy { $0.tenantID == t.id })
        let upserts = messages.compactMap { m -> Mesh_V1_Member? in if case .upsert(let x) = m.change { x } else { nil } }
        let removals = messages.compactMap { m -> Mesh_V1_MemberRemoval? in if case .remove(let x) = m.change { x } else { nil } }
        #expect(upserts.count == 41 && removals.count == 15)
        #expect(messages.filter { if case .settings = $0.change { true } else { false } }.count == 2)
        #expect(Set(removals.map(\.publicKey)) == Set(devices.prefix(15).map(\.publicKey)))
        // Nothing is published twice: the message after these is the next change, not a repeat.
        let last = messages.last?.revision ?? 0
        _ = try await c.client.createDevice(caller: admin, label: "sentinel", type: .other)
        let after = try await rec.take(1)
        #expect(after.map(\.revision) == [last + 1], "duplicate publication: \(after.map(\.revision))")
        // Everything is delivered, stored and published. FanoutSvc publishes inside the transaction
        // that stores the change and commits just after (Fanout.swift, "Ordering"), and the relay marks
        // the outbox row once FanoutSvc has answered: both land a moment after the message is seen, so
        // the rows are read until they show it (or 30 s pass).
        struct Stored: Equatable { var undelivered = -1, revision: Int64 = -1, published: Int64 = -1, members = -1 }
        let want = Stored(undelivered: 0, revision: 59, published: 59, members: 27)  // the node and 26 devices
        var stored = Stored()
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            stored.undelivered = try await c.store.query("SELECT count(*) AS n FROM provision.outbox WHERE delivered_at IS NULL").first!
                .decode("n", as: Int.self)
            let view = try await c.store.query("SELECT revision, published_revision FROM fanout.tenant_views WHERE tenant_id = $1", UUID(text: t.id)!).first!
            stored.revision = try view.decode("revision", as: Int64.self)
            stored.published = try view.decode("published_revision", as: Int64.self)
            stored.members = try await c.store.query("SELECT count(*) AS n FROM fanout.members WHERE tenant_id = $1", UUID(text: t.id)!).first!
                .decode("n", as: Int.self)
            if stored == want || ContinuousClock.now > deadline { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(stored == want)
        try await c.stop()
    }

    @Test func changesMadeWhileFanoutIsDownArePublishedWhenItReturns() async throws {
        let c = try await ControlPlane.start("fandown", fanout: 1, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let rec = try await StreamRecorder(bus: c.bus, tenant: t.id)
        let admin = try await c.user(t, .admin)
        _ = try await c.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        _ = try await c.client.createDevice(caller: admin, label: "before", type: .other)
        // The tenant's settings, the node and its hub setting come first (relayed after their commits;
        // the first may have gone out before the recorder subscribed).
        let first = try await rec.take(until: 4)
        #expect(first.last?.revision == 4 && first.map(\.revision) == Array(first.map(\.revision).sorted()))
        let fanout = c.processes.last!
        await fanout.kill9()
        for i in 0..<5 { _ = try await c.client.createDevice(caller: admin, label: "down \(i)", type: .other) }
        // A new replica takes the relayed changes where the dead one stopped.
        let again = try await ServiceProcesses.start("FanoutSvc", natsURL: c.nats.url, databaseURL: c.db.url, bus: c.bus, logDir: c.logDir)
        // Delivery is at least once across a crash: a replica killed after publishing revision 4 but
        // before its commit leaves it unstored, and the relay sends it again (nodes drop a revision
        // they already hold). Everything after it comes once, in order.
        var revisions = try await rec.take(5).map(\.revision)
        if revisions.first == 4 {
            revisions.removeFirst()
            revisions += try await rec.take(1).map(\.revision)
        }
        #expect(revisions == [5, 6, 7, 8, 9])
        try await stopChecked(again)
        try await c.stop()
    }

    @Test func syncFromCPReturnsTheMembersAtARevisionAndPeerCatalogTheirPeers() async throws {
        let c = try await ControlPlane.start("sync", fanout: 1, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.pro)
        let admin = try await c.user(t, .admin)
        let (n1, _) = try await c.node(t, admin: admin, name: "alpha", endpoint: "192.0.2.1:51820")
        let (n2, _) = try await c.node(t, admin: admin, name: "beta", endpoint: "192.0.2.2:51820")
        let d1 = try await c.client.createDevice(caller: admin, label: "phone", type: .iphone).device
        let fan = FanoutClient(bus: c.bus)
        // Settings, alpha, the hub, beta, the phone.
        let view = try await eventually { try await fan.fullView(tenantID: t.id, nodeID: n2.id) } until: { $0.revision == 5 }
        #expect(Set(view.members.keys) == [n1.id, n2.id, d1.id])
        #expect(view.settings.hubNodeID == n1.id && view.settings.ipv4Prefix == t.ipv4Prefix && view.settings.domain == "quazzar.mesh")
        let peers = PeerCatalog.peers(seenBy: n2.id, settings: view.settings, members: view.members.values)
        #expect(Set(peers.map(\.id)) == [n1.id, d1.id])
        let hub = try #require(peers.first { $0.id == n1.id })
        #expect(hub.hub && hub.endpoint == "192.0.2.1:51820" && hub.kind == .node && hub.persistentKeepalive == 25)
        #expect(hub.allowedIps.contains(t.ipv4Prefix), "the hub carries the tenant prefix for the other nodes")
        let dev = try #require(peers.first { $0.id == d1.id })
        #expect(dev.allowedIps == ["\(d1.ipv4)/32", "\(d1.ipv6)/128"] && dev.dnsName == "phone.quazzar.mesh" && dev.endpoint.isEmpty)
        #expect(try await fan.revision(tenantID: t.id) == 5)

        // Pages: one member per page gives the same view.
        var paged: [String] = []
        var after = ""
        repeat {
            let page = try await fan.sync(tenantID: t.id, nodeID: n2.id, after: after, pageSize: 1)
            paged += page.members.map(\.id)
            after = page.nextMemberID
        } while !after.isEmpty
        #expect(paged == view.members.keys.sorted())

        // Catch-up: the changes after a revision.
        let changes = try await fan.changes(tenantID: t.id, nodeID: n2.id, after: 3)
        #expect(changes.changes.map(\.revision) == [4, 5] && !changes.tooOld)
        // A revision beyond what the database holds is refused, never trapped on.
        #expect(await meshError { _ = try await fan.changes(tenantID: t.id, nodeID: n2.id, after: UInt64.max) }?.code == .invalidArgument)

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

    /// FanoutSvc refuses changes that would leave a gap, and stores a change once however often it
    /// is sent (the relay of two ProvisionSvc replicas may send the same rows).
    @Test func ingestRefusesGapsAndStoresOnce() async throws {
        let c = try await ControlPlane.start("ingest", replicas: 0, fanout: 1)
        let fan = FanoutClient(bus: c.bus)
        let tenant = UUID().lowercased
        let rec = try await StreamRecorder(bus: c.bus, tenant: tenant)
        func change(_ r: UInt64, _ name: String) -> Mesh_V1_PeersUpdated {
            var m = Mesh_V1_Member()
            m.id = UUID().lowercased
            m.kind = .device
            m.slug = name
            var u = Mesh_V1_PeersUpdated()
            u.tenantID = tenant
            u.revision = r
            u.upsert = m
            return u
        }
        var req = Mesh_V1_IngestRequest()
        req.tenantID = tenant
        req.changes = [change(2, "b")]
        #expect(try await fan.ingest(req).expectedRevision == 1, "a gap is refused with the revision to start at")
        req.changes = [change(1, "a"), change(2, "b")]
        let first = try await fan.ingest(req)
        #expect(first.revision == 2 && first.expectedRevision == 0)
        #expect(try await fan.ingest(req).revision == 2, "sent again: nothing new")
        #expect(try await rec.take(2).map(\.revision) == [1, 2])
        req.changes = [change(3, "c"), change(5, "e")]
        #expect(await meshError { _ = try await fan.ingest(req) }?.code == .invalidArgument)
        // Revisions are bigints in the database: one beyond Int64.max is refused, never trapped on.
        req.changes = [change(UInt64(Int64.max) + 1, "x")]
        #expect(await meshError { _ = try await fan.ingest(req) }?.code == .invalidArgument)
        req.changes = [change(UInt64.max, "x")]
        #expect(await meshError { _ = try await fan.ingest(req) }?.code == .invalidArgument)
        var snapshot = Mesh_V1_IngestRequest()
        snapshot.tenantID = tenant
        snapshot.snapshot = true
        snapshot.snapshotRevision = UInt64.max
        #expect(await meshError { _ = try await fan.ingest(snapshot) }?.code == .invalidArgument)
        // The next change is the next message: the ones already published were not published again.
        req.changes = [change(3, "c")]
        #expect(try await fan.ingest(req).revision == 3)
        #expect(try await rec.take(1).map(\.revision) == [3], "a change already published is not published again")
        try c.checkAlive()
        try await c.stop()
    }
}

/// Calls `body` until `done` accepts its result (deadline 20 s).
func eventually<T>(_ body: () async throws -> T, until done: (T) -> Bool) async throws -> T {
    let deadline = ContinuousClock.now + .seconds(60)
    while true {
        let v = try await body()
        if done(v) || ContinuousClock.now > deadline { return v }
        try await Task.sleep(for: .milliseconds(20))
    }
}

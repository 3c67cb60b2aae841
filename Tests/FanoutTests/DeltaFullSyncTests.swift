import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import MeshWireGuard
import NodeApplierCore
import Testing

/// A node as the agent runs it, on an in-memory interface: it follows the tenant's stream through
/// the real FanoutSvc, or does one full sync.
final class SimulatedNode: Sendable {
    let agent: NodeAgent
    let wg: InMemoryWireGuard
    let tasks: [Task<Void, Never>]

    /// `follow`: subscribe to the tenant's changes after the first full sync.
    init(_ c: ControlPlane, tenant: String, node: Mesh_V1_Node, follow: Bool) async throws {
        var reg = Mesh_V1_RegisterNodeResponse()
        reg.node = node
        let identity = NodeIdentity(registration: reg)
        wg = InMemoryWireGuard(devices: ["wg0"])
        var logger = Logger(label: "sim")
        logger.logLevel = .warning
        let fanout = FanoutClient(bus: c.bus)
        // The access policy's filter as the node would apply it, kept by a recording filter.
        let enforcer = PolicyEnforcer(filter: RecordingPacketFilter(), interface: "wg0", logger: logger)
        agent = NodeAgent(identity: identity, interface: "wg0", backend: wg, logger: logger, enforcer: enforcer,
                          dnsFilter: DNSPolicyFilter()) { () async throws(MeshError) in
            try await fanout.fullView(tenantID: identity.tenantID, nodeID: identity.nodeID)
        }
        let agent = self.agent
        var tasks = [Task { await agent.run() }]
        if follow {
            let sub = try c.bus.subscribe(MeshSubjects.peersUpdated(tenant: tenant))
            try await c.bus.flush()
            tasks.append(Task { for await m in sub { agent.receive(subject: m.subject, payload: m.payload) } })
        }
        self.tasks = tasks
        _ = try await agent.refresh(reason: "start")
    }

    /// What the interface holds: key → (sorted allowed IPs, keepalive).
    func interface() async throws -> [String: [String]] {
        Dictionary(uniqueKeysWithValues: try await wg.device(named: "wg0").peers.map {
            ($0.publicKey.base64, $0.allowedIPs.map(\.description).sorted() + ["keepalive \($0.persistentKeepaliveInterval)"])
        })
    }

    func stop() {
        for t in tasks { t.cancel() }
        agent.finish()
    }
}

/// Issue: the peer a node sees was built in two places that disagreed. Now both paths go through
/// PeerCatalog; this proves it end to end with the real services: after every kind of change, a node
/// that followed the deltas holds exactly what a node that just did a full sync holds — hub flags, DNS
/// names, AllowedIPs and keepalives, in its agent and on its interface.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .timeLimit(.minutes(5)))
struct DeltaFullSyncTests {
    @Test func aDeltaAndAFullSyncAgreeForEveryKindOfChange() async throws {
        let c = try await ControlPlane.start("deltafull", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let admin = try await c.user(t, .admin)
        let (hub, _) = try await c.node(t, admin: admin, name: "hub", endpoint: "192.0.2.1:51820")
        let (two, _) = try await c.node(t, admin: admin, name: "two", endpoint: "192.0.2.2:51820")
        var followers = [try await SimulatedNode(c, tenant: t.id, node: two, follow: true)]
        let fan = FanoutClient(bus: c.bus)
        var checked: [String] = []

        /// Waits until every follower applied the tenant's newest revision, then compares each with a
        /// fresh full sync of the same node.
        func check(_ what: String) async throws {
            // The revision ProvisionSvc wrote last; FanoutSvc and the followers get it through the relay.
            let tip = try await c.client.getTenant(t.id).revision
            let deadline = ContinuousClock.now + .seconds(30)
            while try await fan.revision(tenantID: t.id) < tip || followers.contains(where: { $0.agent.revision < tip }),
                  ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            for f in followers {
                #expect(f.agent.revision == tip, "\(what): \(f.agent.identity.name) stayed at \(f.agent.revision) of \(tip)")
                var reg = Mesh_V1_Node()
                reg.id = f.agent.identity.nodeID
                reg.tenantID = t.id
                let fresh = try await SimulatedNode(c, tenant: t.id, node: reg, follow: false)
                defer { fresh.stop() }
                let byDelta = f.agent.peers(), byFull = fresh.agent.peers()
                #expect(byDelta == byFull, "\(what): \(f.agent.identity.name)'s peers differ between a delta and a full sync")
                #expect(try await f.interface() == fresh.interface(), "\(what): \(f.agent.identity.name)'s interface differs")
                #expect(byDelta.filter(\.hub).count == (byDelta.contains { $0.id == f.agent.settings.hubNodeID } ? 1 : 0))
                #expect(f.agent.enforcer?.plan == fresh.agent.enforcer?.plan, "\(what): \(f.agent.identity.name)'s packet filter differs")
                #expect(f.agent.enforcer?.status().version == fresh.agent.enforcer?.status().version)
            }
            checked.append(what)
        }

        let phone = try await c.client.createDevice(caller: admin, label: "phone", type: .iphone).device
        try await check("device added")
        _ = try await c.client.renameDevice(caller: admin, deviceID: phone.id, label: "Zoë's phone")
        try await check("device renamed")
        let (late, lateKeys) = try await c.node(t, admin: admin, name: "late", endpoint: "192.0.2.3:51820")
        followers.append(try await SimulatedNode(c, tenant: t.id, node: late, follow: true))
        try await check("node added")
        let laptop = try await c.client.createDevice(caller: admin, label: "laptop", type: .laptop).device
        #expect(laptop.configNodeIds.contains(late.id), "a config made now lists the late node")
        try await check("device added after a node")
        // The late node registers again from another address.
        var again = Mesh_V1_RegisterNodeRequest()
        again.enrollmentToken = try await c.client.createEnrollmentToken(caller: admin).token
        again.name = "late"
        again.publicKey = lateKeys.publicKey
        again.endpoint = "198.51.100.3:51820"
        again.listenPort = 51820
        #expect(try await c.client.registerNode(again).node.id == late.id)
        try await check("node re-registered with a new endpoint")
        // Access policies: a rule, tags that put members in its sets, the DNS filter.
        let rule = try await c.client.updatePolicy(caller: admin, .add(Mesh_V1_PolicyRule.with {
            $0.name = "ops to servers"
            $0.sources = [try! PolicyText.selector("tag:ops", field: "")]
            $0.destinations = [try! PolicyText.selector("tag:servers", field: ""), try! PolicyText.selector("device:\(laptop.id)", field: "")]
            $0.ports = [try! PolicyText.port("tcp:22", field: "")]
        }))
        try await check("rule added")
        _ = try await c.client.setTags(caller: admin, kind: .device, memberID: phone.id, tags: ["ops"])
        try await check("device tagged")
        _ = try await c.client.setTags(caller: admin, kind: .node, memberID: late.id, tags: ["servers"])
        try await check("node tagged")
        #expect(followers.allSatisfy { $0.agent.enforcer?.plan?.sets["g4_ops"]?.elements.count == 1 })
        _ = try await c.client.updatePolicy(caller: admin, .dnsFiltered(true))
        try await check("DNS filter on")
        _ = try await c.client.updatePolicy(caller: admin, .deleteRuleID(rule.rule.id))
        try await check("rule deleted")
        #expect(followers.allSatisfy { $0.agent.enforcer?.plan == nil && $0.agent.enforcer?.status().version == 2 })
        _ = try await c.client.deleteDevice(caller: admin, deviceID: phone.id)
        try await check("device deleted")
        _ = try await c.client.deregisterNode(caller: admin, nodeID: hub.id)
        try await check("hub removed")
        let after = try await c.client.listNodes(caller: admin)
        #expect(after.first { $0.hub }?.id == two.id, "the next oldest node is the hub")
        #expect(try await c.client.listDevices(caller: admin).first { $0.id == laptop.id }?.configOutdated == true)
        let (extra, _) = try await c.node(t, admin: admin, name: "extra", endpoint: "192.0.2.4:51820")
        try await check("another node added")
        _ = try await c.client.deregisterNode(caller: admin, nodeID: extra.id)
        try await check("node removed")
        #expect(checked.count == 14)
        for f in followers { f.stop() }
        try await c.stop()
    }
}

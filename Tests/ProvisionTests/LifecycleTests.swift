import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// Suspension, expiry and the mesh switch through the real ProvisionSvc replicas, PostgreSQL and
/// FanoutSvc.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .timeLimit(.minutes(5)))
struct ProvisionLifecycleTests {
    /// Waits until `condition` holds, or fails after `timeout`.
    func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out after \(timeout) waiting for \(what)")
        throw TestSetupError.failed("timed out waiting for \(what)")
    }

    /// The device changes in a tenant's outbox, as (device id, active), in revision order.
    func publishedDeviceStates(_ c: ControlPlane, tenant: String) async throws -> [(String, Bool)] {
        let rows = try await c.store.query("SELECT payload FROM provision.outbox WHERE tenant_id = $1 ORDER BY revision", UUID(uuidString: tenant)!)
        return try rows.compactMap { r in
            let u = try Mesh_V1_PeersUpdated(serializedBytes: try r.decode("payload", as: ByteA.self).bytes)
            guard let m = u.upserted, m.kind == .device else { return nil }
            return (m.id, m.active)
        }
    }

    @Test func expiryIsSweptExactlyOnceWhicheverOfThreeReplicasNotices() async throws {
        // Three replicas sweeping five times a second: they race for every due device.
        let c = try await ControlPlane.start("expiry", replicas: 3, environment: ["MESH_RATE_LIMIT": "0", "MESH_EXPIRY_SWEEP_SECONDS": "0.2"])
        var devices: [(tenant: String, id: String, expires: Int64)] = []
        var tenants: [Mesh_V1_Tenant] = []
        for _ in 0..<2 {
            let t = try await c.readyTenant(.enterprise)
            tenants.append(t)
            let owner = try await c.user(t)
            for i in 0..<20 {
                // Expiries spread over a few seconds, so several sweeps find several due at once.
                let expires = Date().addingTimeInterval(2 + Double(i % 5) * 0.5).unixMilliseconds
                let d = try await c.client.createDevice(caller: owner, label: "temp \(i)", type: .other, expiresAtMs: expires).device
                #expect(d.expiresAtMs == expires && d.status == .active)
                devices.append((t.id, d.id, expires))
            }
            // A device that does not expire is never touched.
            _ = try await c.client.createDevice(caller: owner, label: "lasting", type: .laptop)
        }
        let ids = Set(devices.map(\.id))
        // Every device is suspended within 60 s of its expiry (the wait's deadline is the promise).
        let last = devices.map(\.expires).max()!
        let deadline = Date(unixMilliseconds: last).addingTimeInterval(60).timeIntervalSinceNow
        try await eventually("every device to expire", timeout: .seconds(max(1, deadline))) {
            let rows = try await c.store.query("""
                SELECT count(*) AS n FROM provision.devices WHERE suspend_reason = 'expired' AND id = ANY($1::uuid[])
                """, "{\(ids.joined(separator: ","))}")
            return try rows[0].decode("n", as: Int.self) == ids.count
        }
        // Never early, and exactly once: one audit entry and one change for the nodes per device.
        let rows = try await c.store.query("""
            SELECT id, suspended_at >= expires_at AS after FROM provision.devices WHERE id = ANY($1::uuid[])
            """, "{\(ids.joined(separator: ","))}")
        #expect(try rows.allSatisfy { try $0.decode("after", as: Bool.self) }, "suspended before its expiry")
        let lag = try await c.store.query("""
            SELECT (extract(epoch FROM max(suspended_at - expires_at)) * 1000)::bigint AS max_ms,
                   (extract(epoch FROM avg(suspended_at - expires_at)) * 1000)::bigint AS avg_ms
            FROM provision.devices WHERE id = ANY($1::uuid[])
            """, "{\(ids.joined(separator: ","))}")
        print("expiry to suspension (sweep every 0.2 s, 3 replicas, \(ids.count) devices): avg \(try lag[0].decode("avg_ms", as: Int64.self)) ms, max \(try lag[0].decode("max_ms", as: Int64.self)) ms")
        let audit = try await c.store.query("""
            SELECT target_id, count(*) AS n, min(actor) AS actor FROM provision.audit_log WHERE action = 'device.expire' GROUP BY target_id
            """)
        let auditCounts = Dictionary(uniqueKeysWithValues: try audit.map { (try $0.decode("target_id", as: String.self), try $0.decode("n", as: Int.self)) })
        #expect(Set(auditCounts.keys) == ids && auditCounts.values.allSatisfy { $0 == 1 }, "audit entries per device: \(auditCounts.filter { $0.value != 1 })")
        #expect(try audit.allSatisfy { try $0.decode("actor", as: String.self) == "system" })
        for t in tenants {
            let states = try await publishedDeviceStates(c, tenant: t.id)
            let inactive = Dictionary(grouping: states.filter { !$0.1 }, by: \.0).mapValues(\.count)
            let mine = Set(devices.filter { $0.tenant == t.id }.map(\.id))
            #expect(Set(inactive.keys) == mine && inactive.values.allSatisfy { $0 == 1 }, "one change per expired device: \(inactive.filter { $0.value != 1 })")
        }
        // FanoutSvc has them inactive: no node holds them.
        let node = try #require(try await c.client.listNodes(caller: try await c.user(tenants[0], .admin)).first)
        try await eventually("FanoutSvc to have every expiry") {
            let view = try await FanoutClient(bus: c.bus).fullView(tenantID: tenants[0].id, nodeID: node.id)
            let mine = devices.filter { $0.tenant == tenants[0].id }.map(\.id)
            return mine.allSatisfy { view.members[$0]?.active == false }
        }
        // Which replicas did the work (it is shared, never doubled).
        let logs = c.processes.filter { $0.name.hasPrefix("ProvisionSvc") }.map { $0.log().components(separatedBy: "device expired").count - 1 }
        print("device expiries per ProvisionSvc replica: \(logs)")
        #expect(logs.reduce(0, +) == ids.count)
        try await c.stop()
    }

    @Test func suspendResumeAndTheMeshSwitchReachFanoutSvc() async throws {
        let c = try await ControlPlane.start("suspend", environment: ["MESH_RATE_LIMIT": "0", "MESH_EXPIRY_SWEEP_SECONDS": "0.5"])
        let t = try await c.tenant(.team)
        let admin = try await c.user(t, .admin)
        let (node, _) = try await c.node(t, admin: admin, name: "edge", endpoint: "192.0.2.10:51820")
        let owner = try await c.user(t)
        let d = try await c.client.createDevice(caller: owner, label: "phone", type: .iphone).device
        let fanout = FanoutClient(bus: c.bus)
        func member() async throws -> Mesh_V1_Member? { try await fanout.fullView(tenantID: t.id, nodeID: node.id).members[d.id] }
        try await eventually("the device at FanoutSvc") { try await member()?.active == true }

        let s = try await c.client.suspendDevice(caller: owner, deviceID: d.id)
        #expect(s.device.status == .suspended && s.revision > 0)
        try await eventually("the suspension at FanoutSvc") { try await member()?.active == false }
        #expect(try await member()?.publicKey == d.publicKey, "the device keeps its key and addresses")
        let r = try await c.client.resumeDevice(caller: owner, deviceID: d.id)
        #expect(r.device.status == .active)
        try await eventually("the resumption at FanoutSvc") { try await member()?.active == true }

        // An expired device: swept, refused a resume, back with an extension.
        let soon = Date().addingTimeInterval(1.5).unixMilliseconds
        let temp = try await c.client.createDevice(caller: owner, label: "temp", type: .other, expiresAtMs: soon).device
        try await eventually("the expiry") { try await c.client.getDevice(caller: owner, deviceID: temp.id).status == .expired }
        let refused = await meshError { _ = try await c.client.resumeDevice(caller: admin, deviceID: temp.id) }
        #expect(refused?.code == .failedPrecondition, "\(String(describing: refused))")
        #expect(await meshError { _ = try await c.client.setDeviceExpiry(caller: owner, deviceID: temp.id, expiresAtMs: 0) }?.code == .permissionDenied)
        let back = try await c.client.setDeviceExpiry(caller: admin, deviceID: temp.id, expiresAtMs: Date().addingTimeInterval(3600).unixMilliseconds)
        #expect(back.device.status == .active && back.revision > 0)

        // The mesh switch: one settings change for the nodes; creation refused; devices kept.
        var off = Mesh_V1_UpdateTenantSettingsRequest()
        off.caller = admin
        off.meshEnabled = false
        #expect(await meshError { var o = off; o.caller = owner; _ = try await c.client.updateTenantSettings(o) }?.code == .permissionDenied)
        let switched = try await c.client.updateTenantSettings(off)
        #expect(!switched.settings.meshEnabled && switched.revision > 0)
        try await eventually("the switch at FanoutSvc") { try await fanout.fullView(tenantID: t.id, nodeID: node.id).settings.meshEnabled == false }
        let refusedCreate = await meshError { _ = try await c.client.createDevice(caller: owner, label: "no", type: .other) }
        #expect(refusedCreate?.code == .failedPrecondition && refusedCreate?.message.contains("turned off") == true)
        #expect(try await c.client.license(caller: owner).enabled == false)
        #expect(try await c.client.listDevices(caller: admin).count == 2)
        var on = off
        on.meshEnabled = true
        #expect(try await c.client.updateTenantSettings(on).settings.meshEnabled)
        try await eventually("the mesh back on at FanoutSvc") { try await fanout.fullView(tenantID: t.id, nodeID: node.id).settings.meshEnabled }
        let actions = try await c.client.audit(caller: admin, limit: 500).entries.map(\.action)
        for a in ["device.suspend", "device.resume", "device.expire", "device.expiry", "mesh.disable", "mesh.enable"] {
            #expect(actions.contains(a), "\(a) is audited")
        }
        try await c.stop()
    }
}

import Foundation
import MeshClient
import MeshDomain
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// The device count kept on the tenant row (migration 8, a trigger on `provision.devices`) follows
/// every path that adds or removes devices, and the plan's cap is enforced from it.
@Suite(.enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"), .timeLimit(.minutes(3)))
struct DeviceCountTests {
    @Test func theTenantsDeviceCountFollowsCreationsDeletionsAndUserRemoval() async throws {
        let c = try await ControlPlane.start("devcount", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let admin = try await c.user(t, .admin)
        _ = try await c.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        let member = try await c.user(t)
        let tid = try #require(UUID(text: t.id))
        func counts() async throws -> (kept: Int, real: Int) {
            let r = try await c.store.query("""
                SELECT device_count AS kept, (SELECT count(*) FROM provision.devices WHERE tenant_id = $1) AS real
                  FROM provision.tenants WHERE id = $1
                """, tid)
            return (try r[0].decode("kept", as: Int.self), try r[0].decode("real", as: Int.self))
        }
        var mine: [String] = []
        for i in 0..<5 { mine.append(try await c.client.createDevice(caller: admin, label: "a\(i)", type: .other).device.id) }
        for i in 0..<3 { _ = try await c.client.createDevice(caller: member, label: "m\(i)", type: .other) }
        var n = try await counts()
        #expect(n.kept == 8 && n.real == 8)
        _ = try await c.client.deleteDevice(caller: admin, deviceID: mine[0])
        _ = try await c.client.deleteDevice(caller: admin, deviceID: mine[1])
        n = try await counts()
        #expect(n.kept == 6 && n.real == 6)
        // Removing a user with their devices removes three more.
        _ = try await c.client.deleteUser(caller: admin, userID: member.userID, devices: .delete)
        n = try await counts()
        #expect(n.kept == 3 && n.real == 3)
        try await c.stop()
    }

    @Test func theCapIsEnforcedFromTheKeptCountAndFreedByADeletion() async throws {
        let c = try await ControlPlane.start("devcap", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.free)
        let admin = try await c.user(t, .admin)
        _ = try await c.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        let cap = try #require(PlanPolicy.of(.free)?.deviceCap)
        var ids: [String] = []
        for i in 0..<cap { ids.append(try await c.client.createDevice(caller: admin, label: "d\(i)", type: .other).device.id) }
        await #expect(throws: MeshError.self) { _ = try await c.client.createDevice(caller: admin, label: "over", type: .other) }
        _ = try await c.client.deleteDevice(caller: admin, deviceID: ids[0])
        _ = try await c.client.createDevice(caller: admin, label: "again", type: .other)
        await #expect(throws: MeshError.self) { _ = try await c.client.createDevice(caller: admin, label: "over 2", type: .other) }
        let tid = try #require(UUID(text: t.id))
        let r = try await c.store.query("SELECT device_count AS n FROM provision.tenants WHERE id = $1", tid)
        #expect(try r[0].decode("n", as: Int.self) == cap)
        try await c.stop()
    }
}

import Foundation
import MeshDomain
import MeshProto
import ProvisionCore
import Testing

extension Harness {
    func suspend(_ c: Mesh_V1_Caller, _ id: String) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        var r = Mesh_V1_SuspendDeviceRequest()
        r.caller = c
        r.deviceID = id
        return try await devices.suspend(r)
    }

    func resume(_ c: Mesh_V1_Caller, _ id: String) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        var r = Mesh_V1_ResumeDeviceRequest()
        r.caller = c
        r.deviceID = id
        return try await devices.resume(r)
    }

    func setExpiry(_ c: Mesh_V1_Caller, _ id: String, _ at: Date?) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        var r = Mesh_V1_SetDeviceExpiryRequest()
        r.caller = c
        r.deviceID = id
        r.expiresAtMs = at?.unixMilliseconds ?? 0
        return try await devices.setExpiry(r)
    }

    func list(_ c: Mesh_V1_Caller, _ change: (inout Mesh_V1_ListDevicesRequest) -> Void = { _ in }) async throws(MeshError) -> Mesh_V1_ListDevicesResponse {
        var r = Mesh_V1_ListDevicesRequest()
        r.caller = c
        change(&r)
        return try await devices.list(r)
    }

    func settings(_ c: Mesh_V1_Caller, mesh: Bool? = nil, lifetime: UInt32? = nil) async throws(MeshError) -> Mesh_V1_TenantSettingsResponse {
        var r = Mesh_V1_UpdateTenantSettingsRequest()
        r.caller = c
        if let mesh { r.meshEnabled = mesh }
        if let lifetime { r.deviceLifetimeSeconds = lifetime }
        return try await tenants.updateAdminSettings(r, by: try await users.identify(c), requestID: "r")
    }

    /// The device's member in the last change of it in the tenant's outbox.
    func published(_ t: Mesh_V1_Tenant, _ id: String) async -> Mesh_V1_Member? {
        (await store.outbox[UUID(text: t.id)!] ?? []).compactMap(\.upserted).last { $0.id == id }
    }

    func auditActions(_ t: Mesh_V1_Tenant) async throws -> [String] {
        try await store.audit(tenant: UUID(text: t.id)!, before: .max, limit: 1000).map(\.action)
    }
}

@Suite("Device and node lifecycle through the services, in memory", .timeLimit(.minutes(1)))
struct LifecycleTests {
    @Test func suspendAndResumeArePublishedAndAudited() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.team)
        let owner = try await h.user(t)
        let d = try await h.create(owner, "phone").device
        #expect(d.status == .active)
        #expect(await h.published(t, d.id)?.active == true)

        let s = try await h.suspend(owner, d.id)
        #expect(s.device.status == .suspended && s.device.suspendReason == .user && s.device.suspendedAtMs > 0 && s.revision > 0)
        #expect(await h.published(t, d.id)?.active == false, "the nodes hear that the device left the mesh")
        #expect(try await h.suspend(owner, d.id).revision == 0, "suspending again changes nothing")
        let r = try await h.resume(owner, d.id)
        #expect(r.device.status == .active && r.device.suspendedAtMs == 0 && r.revision > s.revision)
        #expect(await h.published(t, d.id)?.active == true)
        // Keys, addresses and name are kept throughout.
        let after = try await h.list(admin).devices.first { $0.id == d.id }!
        #expect(after.publicKey == d.publicKey && after.ipv4 == d.ipv4 && after.ipv6 == d.ipv6 && after.slug == d.slug)

        // An admin's suspension: the owner may not lift it; the admin may.
        _ = try await h.suspend(admin, d.id)
        await #expect(throws: MeshError.permissionDenied("an admin suspended this device; only an admin can resume it")) {
            _ = try await h.resume(owner, d.id)
        }
        #expect(try await h.resume(admin, d.id).device.status == .active)
        // Another owner of the tenant sees nothing.
        let stranger = try await h.user(t)
        await #expect(throws: MeshError.notFound("no such device")) { _ = try await h.suspend(stranger, d.id) }
        await #expect(throws: MeshError.notFound("no such device")) { _ = try await h.suspend(owner, "not-a-uuid") }
        let actions = try await h.auditActions(t)
        #expect(actions.filter { $0 == "device.suspend" }.count == 2 && actions.filter { $0 == "device.resume" }.count == 2)
        // A rename keeps the device suspended on the nodes.
        _ = try await h.suspend(owner, d.id)
        var rn = Mesh_V1_RenameDeviceRequest()
        rn.caller = owner
        rn.deviceID = d.id
        rn.label = "new name"
        #expect(try await h.devices.rename(rn).device.status == .suspended)
        let member = await h.published(t, d.id)
        #expect(member?.active == false && member?.slug == "new-name")
    }

    @Test func expiryIsSweptExactlyOnceAndNeedsAnExtension() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.pro)
        let owner = try await h.user(t)
        let soon = h.clock.now.addingTimeInterval(60)
        let d = try await h.create(owner, "temp", expires: soon).device
        #expect(d.expiresAtMs == soon.unixMilliseconds)
        let lasting = try await h.create(owner, "lasting").device
        #expect(lasting.expiresAtMs == 0)
        #expect(try await h.devices.expireDue().isEmpty, "not due yet")
        h.clock.advance(60)
        let swept = try await h.devices.expireDue()
        #expect(swept.map(\.device.lowercased) == [d.id])
        #expect(try await h.devices.expireDue().isEmpty, "exactly once")
        let listed = try await h.list(owner).devices.first { $0.id == d.id }!
        #expect(listed.status == .expired && listed.suspendReason == .expired)
        #expect(await h.published(t, d.id)?.active == false)
        #expect(try await h.auditActions(t).filter { $0 == "device.expire" }.count == 1)

        // Resume is refused until the expiry is extended; owners may not extend.
        for who in [owner, admin] {
            do {
                _ = try await h.resume(who, d.id)
                Issue.record("an expired device resumed")
            } catch {
                #expect(error.code == .failedPrecondition)
            }
        }
        await #expect(throws: MeshError.permissionDenied("only an admin can change a device's expiry")) {
            _ = try await h.setExpiry(owner, d.id, h.clock.now.addingTimeInterval(3600))
        }
        await #expect(throws: MeshError.self) { _ = try await h.setExpiry(admin, d.id, h.clock.now) }
        let extended = try await h.setExpiry(admin, d.id, h.clock.now.addingTimeInterval(3600))
        #expect(extended.device.status == .active && extended.revision > 0, "the extension brings it back")
        #expect(await h.published(t, d.id)?.active == true)
        // Clearing the expiry: nothing for the nodes to hear.
        let cleared = try await h.setExpiry(admin, d.id, nil)
        #expect(cleared.device.expiresAtMs == 0 && cleared.revision == 0)
        #expect(try await h.auditActions(t).filter { $0 == "device.expiry" }.count == 2)
    }

    @Test func theTenantsDefaultLifetime() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.pro)
        let owner = try await h.user(t)
        await #expect(throws: MeshError.permissionDenied("only admins can change the tenant's settings")) {
            _ = try await h.settings(owner, lifetime: 86_400)
        }
        await #expect(throws: MeshError.self) { _ = try await h.settings(admin, lifetime: 60) }
        #expect(try await h.settings(admin, lifetime: 7 * 86_400).settings.deviceLifetimeSeconds == 7 * 86_400)
        let d = try await h.create(owner, "phone").device
        #expect(d.expiresAtMs == h.clock.now.addingTimeInterval(7 * 86_400).unixMilliseconds)
        #expect(await h.code(owner, "x") == nil)
        // Owners stay within it; admins may go further.
        do {
            _ = try await h.create(owner, "long", expires: h.clock.now.addingTimeInterval(8 * 86_400))
            Issue.record("an owner went beyond the tenant's lifetime")
        } catch {
            #expect(error.code == .invalidArgument)
        }
        #expect(try await h.create(admin, "long", expires: h.clock.now.addingTimeInterval(30 * 86_400)).device.expiresAtMs > 0)
        #expect(try await h.settings(admin, lifetime: 0).settings.deviceLifetimeSeconds == 0)
        #expect(try await h.create(owner, "forever").device.expiresAtMs == 0)
        await #expect(throws: MeshError.self) { _ = try await h.create(owner, "past", expires: h.clock.now.addingTimeInterval(-1)) }
        #expect(try await h.auditActions(t).filter { $0 == "tenant.settings" }.count == 2)
    }

    @Test func aReissueRenewsTheDefaultLifetime() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.pro)
        let owner = try await h.user(t)
        func reissue(_ id: String) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
            var r = Mesh_V1_ReissueDeviceRequest()
            r.caller = owner
            r.deviceID = id
            return try await h.devices.reissue(r)
        }
        let d = try await h.create(owner, "phone", expires: h.clock.now.addingTimeInterval(60)).device
        h.clock.advance(61)
        _ = try await h.devices.expireDue()
        // Without a default lifetime a re-issue changes nothing: the new config waits for an admin.
        #expect(try await reissue(d.id).device.status == .expired)
        #expect(await h.published(t, d.id)?.active == false)
        // With one, the re-issue renews the device like a new one, and it is back on the nodes.
        _ = try await h.settings(admin, lifetime: 7 * 86_400)
        let renewed = try await reissue(d.id).device
        #expect(renewed.status == .active && renewed.expiresAtMs == h.clock.now.addingTimeInterval(7 * 86_400).unixMilliseconds)
        #expect(await h.published(t, d.id)?.active == true)
    }

    @Test func theMeshSwitch() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.free)
        let owner = try await h.user(t)
        _ = try await h.create(owner, "phone")
        await #expect(throws: MeshError.permissionDenied("only admins can change the tenant's settings")) { _ = try await h.settings(owner, mesh: false) }
        let off = try await h.settings(admin, mesh: false)
        #expect(!off.settings.meshEnabled && off.revision > 0)
        let outbox = await h.store.outbox[UUID(text: t.id)!] ?? []
        #expect(outbox.last?.newSettings?.meshEnabled == false, "every node hears it as one change of the settings")
        do {
            _ = try await h.create(owner, "refused")
            Issue.record("created a device with the mesh off")
        } catch {
            #expect(error.code == .failedPrecondition && error.message.contains("turned off"))
        }
        #expect(try await h.settings(admin, mesh: false).revision == 0, "unchanged")
        #expect(try await h.list(owner).devices.count == 1, "devices are kept")
        var lic = Mesh_V1_Caller()
        lic.tenantID = t.id
        #expect(try await h.audit.license(caller: lic).enabled == false)
        #expect(try await h.settings(admin, mesh: true).settings.meshEnabled)
        #expect(try await h.audit.license(caller: lic).enabled)
        #expect(await h.code(owner, "again") == nil)
        let actions = try await h.auditActions(t)
        #expect(actions.contains("mesh.disable") && actions.contains("mesh.enable"))
    }

    @Test func freeListsTheBasicStateAndProThePerPeerStats() async throws {
        for plan in [Mesh_V1_Plan.free, .pro] {
            let h = Harness()
            let (t, admin) = try await h.tenant(plan)
            let d = try await h.create(admin, "phone").device
            let node = try #require(try await h.store.nodes(tenant: UUID(text: t.id)!)?.1.first)
            var p = Mesh_V1_PeerStats()
            p.publicKey = d.publicKey
            p.endpoint = "203.0.113.7:40000"
            p.rxBytes = 100
            p.txBytes = 200
            p.lastHandshakeMs = h.clock.now.unixMilliseconds
            _ = try await h.store.applyReport(tenant: UUID(text: t.id)!, node: node.id, peers: [p])
            let page = try await h.list(admin)
            var g = Mesh_V1_GetDeviceRequest()
            g.caller = admin
            g.deviceID = d.id
            for shown in [page.devices[0], try await h.devices.get(g)] {
                #expect(shown.lastHandshakeAtMs == p.lastHandshakeMs, "the pill's basic state on every plan")
                if plan == .free {
                    #expect(!page.perPeerStats && !shown.perPeerStats && shown.endpoint.isEmpty && shown.rxBytes == 0 && shown.txBytes == 0)
                } else {
                    #expect(page.perPeerStats && shown.perPeerStats && shown.endpoint == p.endpoint && shown.rxBytes == 100 && shown.txBytes == 200)
                }
            }
        }
    }

    @Test func pagesAndFilters() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.enterprise)
        let owner = try await h.user(t)
        var made: [Mesh_V1_Device] = []
        for i in 0..<7 {
            made.append(try await h.create(i % 2 == 0 ? owner : admin, "d\(i)", type: i < 3 ? .iphone : .laptop).device)
            h.clock.advance(0.000_001 * Double(i % 3))
        }
        _ = try await h.suspend(owner, made[0].id)
        var seen: [String] = []
        var cursor = ""
        var pages = 0
        repeat {
            let page = try await h.list(admin) { $0.limit = 3; $0.cursor = cursor }
            seen += page.devices.map(\.id)
            cursor = page.nextCursor
            pages += 1
        } while !cursor.isEmpty && pages < 10
        #expect(pages == 3 && seen.count == 7 && Set(seen) == Set(made.map(\.id)), "every device once, in pages of 3")
        #expect(try await h.list(admin) { $0.limit = 7 }.nextCursor.isEmpty, "a full last page has no next page")
        #expect(try await h.list(admin) { $0.ownerUserID = owner.userID }.devices.count == 4)
        #expect(try await h.list(admin) { $0.type = .laptop }.devices.count == 4)
        #expect(try await h.list(admin) { $0.status = .suspended }.devices.map(\.id) == [made[0].id])
        #expect(try await h.list(admin) { $0.status = .active; $0.type = .iphone }.devices.count == 2)
        #expect(try await h.list(owner) { $0.ownerUserID = admin.userID }.devices.isEmpty, "owners never see others' devices")
        #expect(try await h.list(admin).devices.first { $0.id == made[1].id }?.ownerName == "u")
        for bad: (inout Mesh_V1_ListDevicesRequest) -> Void in [{ $0.cursor = "bogus" }, { $0.limit = 501 }, { $0.ownerUserID = "x" }] {
            await #expect(throws: MeshError.self) { _ = try await h.list(admin, bad) }
        }
        var g = Mesh_V1_GetDeviceRequest()
        g.caller = owner
        g.deviceID = made[1].id
        await #expect(throws: MeshError.notFound("no such device")) { _ = try await h.devices.get(g) }
        g.deviceID = made[0].id
        #expect(try await h.devices.get(g).status == .suspended)
    }

    @Test func theLiveNodeListAndEnrollmentLimits() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.pro, nodes: 2)
        let owner = try await h.user(t)
        var r = Mesh_V1_ListNodesRequest()
        r.caller = admin
        let nodes = try await h.nodes.list(r)
        var up = Mesh_V1_NodeState()
        up.active = true
        up.backend = "userspace"
        up.revision = 9
        up.lastSyncMs = 1234
        h.nodeStates.answering.withLock { $0[nodes[0].id] = up }
        r.live = true
        let live = try await h.nodes.list(r)
        #expect(live[0].live && live[0].online && live[0].backend == "userspace" && live[0].appliedRevision == 9 && live[0].lastSyncAtMs == 1234)
        #expect(live[1].live && !live[1].online && live[1].stateError.contains("does not answer"))
        r.caller = owner
        await #expect(throws: MeshError.permissionDenied("the live node list is for admins")) { _ = try await h.nodes.list(r) }
        for (ttl, uses) in [(UInt32(59), UInt32(1)), (2_592_001, 1), (3600, 10_001)] {
            var e = Mesh_V1_CreateEnrollmentTokenRequest()
            e.caller = admin
            e.ttlSeconds = ttl
            e.maxUses = uses
            await #expect(throws: MeshError.self) { _ = try await h.nodes.createEnrollmentToken(e) }
        }
    }

    @Test func aTokenForAUserThatDoesNotExistIsNoSession() async throws {
        let h = Harness()
        let (_, admin) = try await h.tenant(.pro)
        var ghost = admin
        ghost.userID = UUID().lowercased
        await #expect(throws: MeshError.self) { _ = try await h.list(ghost) }
        do {
            _ = try await h.list(ghost)
        } catch {
            #expect(error.code == .unauthenticated)
        }
        do {
            _ = try await h.suspend(ghost, UUID().lowercased)
        } catch {
            #expect(error.code == .unauthenticated)
        }
    }

    @Test func theAuditLogFilters() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.team)
        let d = try await h.create(admin, "phone").device
        _ = try await h.suspend(admin, d.id)
        _ = try await h.resume(admin, d.id)
        var a = Mesh_V1_ListAuditRequest()
        a.caller = admin
        a.action = "device"
        #expect(try await h.audit.list(a).entries.map(\.action) == ["device.resume", "device.suspend", "device.create"])
        a.action = "device.suspend"
        #expect(try await h.audit.list(a).entries.count == 1)
        a.action = ""
        a.actor = "system"
        let bySystem = try await h.audit.list(a).entries
        #expect(!bySystem.isEmpty && bySystem.allSatisfy { $0.actor == "system" })
        a.actor = "bad actor"
        await #expect(throws: MeshError.self) { _ = try await h.audit.list(a) }
        _ = t
    }
}

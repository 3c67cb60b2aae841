import Foundation
import Logging
import MeshDomain
import MeshProto
import ProvisionCore
import Testing

/// The walk-through and one-time config links over the in-memory store: no servers.
@Suite("Migration and config links", .timeLimit(.minutes(1)))
struct MigrationRulesTests {
    func service(_ h: Harness) -> MigrationService {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return MigrationService(migration: h.store, users: h.users, devices: h.devices, configuration: ProvisionConfiguration(), logger: logger)
    }

    func create(_ m: MigrationService, _ caller: Mesh_V1_Caller, for user: String = "", label: String = "Phone", ttl: UInt32 = 0,
                hash: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }) async throws(MeshError) -> ([UInt8], Mesh_V1_ConfigLink) {
        var r = Mesh_V1_CreateConfigLinkRequest()
        r.caller = caller
        r.userID = user
        r.label = label
        r.type = .iphone
        r.ttlSeconds = ttl
        r.tokenHash = Data(hash)
        return (hash, try await m.createLink(r).link)
    }

    func open(_ m: MigrationService, _ hash: [UInt8]) async throws(MeshError) -> Mesh_V1_OpenConfigLinkResponse {
        var r = Mesh_V1_OpenConfigLinkRequest()
        r.tokenHash = Data(hash)
        return try await m.open(r, requestID: "r")
    }

    @Test func aLinkMakesItsDeviceWhenOpenedAndOnlyOnce() async throws {
        let h = Harness()
        let m = service(h)
        let (t, admin) = try await h.tenant(.pro)
        let owner = try await h.user(t)
        let (hash, link) = try await create(m, admin, for: owner.userID, ttl: 600)
        #expect(link.userID == owner.userID && link.usedAtMs == 0 && link.expiresAtMs - link.createdAtMs == 600_000)
        var list = Mesh_V1_ListDevicesRequest()
        list.caller = owner
        #expect(try await h.devices.list(list).devices.isEmpty, "no device before the link is opened")
        let opened = try await open(m, hash)
        #expect(opened.created.config.contains("PrivateKey = ") && opened.created.device.ownerUserID == owner.userID)
        #expect(opened.link.deviceID == opened.created.device.id)
        #expect(try await h.devices.list(list).devices.map(\.id) == [opened.created.device.id])
        await #expect(throws: MeshError.gone("this config link was already used; ask for a new one")) { try await open(m, hash) }
        await #expect(throws: MeshError.notFound("no such config link")) { try await open(m, (0..<32).map { _ in 7 }) }
        await #expect(throws: MeshError.notFound("no such config link")) { try await open(m, [1, 2, 3]) }
    }

    @Test func anExpiredLinkIsGone() async throws {
        let h = Harness()
        let m = service(h)
        let (t, admin) = try await h.tenant(.pro)
        let owner = try await h.user(t)
        let (hash, _) = try await create(m, owner, ttl: 60)
        var status = Mesh_V1_MigrationStatusRequest()
        status.caller = admin
        #expect(try await m.status(status).users.first { $0.user.id == owner.userID }?.pendingLinks.count == 1)
        h.clock.advance(60)
        await #expect(throws: MeshError.gone("this config link has expired; ask for a new one")) { try await open(m, hash) }
        #expect(try await m.status(status).users.allSatisfy { $0.devices.isEmpty && $0.pendingLinks.isEmpty })
    }

    @Test func onlyAdminsMakeLinksForOthersAndSeeTheWalkThrough() async throws {
        let h = Harness()
        let m = service(h)
        let (t, admin) = try await h.tenant(.pro)
        let a = try await h.user(t), b = try await h.user(t)
        await #expect(throws: MeshError.notFound("no such user")) { try await create(m, a, for: b.userID) }
        let (other, otherAdmin) = try await h.tenant(.pro)
        _ = other
        await #expect(throws: MeshError.notFound("no such user")) { try await create(m, otherAdmin, for: a.userID) }
        await #expect(throws: MeshError.self) { try await create(m, admin, ttl: 30) }
        var status = Mesh_V1_MigrationStatusRequest()
        status.caller = a
        await #expect(throws: MeshError.permissionDenied("the Pritunl walk-through is for admins")) { try await m.status(status) }

        var check = Mesh_V1_SetMigrationCheckRequest()
        check.caller = admin
        check.userID = b.userID
        check.pritunlRevoked = true
        let set = try await m.setCheck(check)
        #expect(set.user.user.id == b.userID && set.user.pritunlRevoked && set.user.checkedBy == "user:\(admin.userID)")
        status.caller = admin
        let rows = try await m.status(status).users
        #expect(rows.first { $0.user.id == b.userID }?.pritunlRevoked == true)
        #expect(rows.first { $0.user.id == a.userID }?.pritunlRevoked == false)
        check.userID = UUID().lowercasedText
        await #expect(throws: MeshError.notFound("no such user")) { try await m.setCheck(check) }
    }

    @Test func aLinkStoppedByTheCapIsHandedBack() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let m = service(h)
        let (t, _) = try await h.tenant(.free)
        let owner = try await h.user(t)
        var ids: [String] = []
        for i in 0..<3 {
            var r = Mesh_V1_CreateDeviceRequest()
            r.caller = owner
            r.label = "d\(i)"
            r.type = .laptop
            ids.append(try await h.devices.create(r).device.id)
        }
        let (hash, _) = try await create(m, owner)
        await #expect(throws: MeshError.quotaExceeded(plan: .free, cap: 3)) { try await open(m, hash) }
        var del = Mesh_V1_DeleteDeviceRequest()
        del.caller = owner
        del.deviceID = ids[0]
        _ = try await h.devices.delete(del)
        #expect(try await open(m, hash).created.device.label == "Phone")
        let actions = try await h.store.audit(tenant: UUID(text: t.id)!, before: .max, limit: 100).map(\.action)
        #expect(actions.contains("config_link.open_failed") && actions.contains("config_link.used"))
    }
}

import Foundation
import Logging
import MeshDomain
import MeshProto
import ProvisionCore
import Synchronization
import Testing

/// AllocatorSvc stand-in: addresses from a counter, releases recorded.
actor MemoryAllocator: AddressAllocator, TenantPrefixSource {
    var next = 10
    var held: [UUID: (String, String)] = [:]
    var released: [(UUID, neverPublished: Bool)] = []
    var failAllocations = false

    func allocate(tenant: UUID, owner: UUID, kind: Mesh_V1_PeerKind, requestID: String) async throws(MeshError) -> (ipv4: String, ipv6: String) {
        if failAllocations { throw .unavailable("allocator down") }
        if let h = held[owner] { return h }
        next += 1
        let a = ("100.64.\(next / 250).\(next % 250 + 1)", "fd00::\(String(next, radix: 16))")
        held[owner] = a
        return a
    }

    func release(tenant: UUID, owner: UUID, neverPublished: Bool, requestID: String) async throws(MeshError) {
        if held.removeValue(forKey: owner) != nil { released.append((owner, neverPublished)) }
    }

    func ensureTenant(_ id: UUID, requestID: String) async throws(MeshError) -> (ipv4: String, ipv6: String) {
        ("100.64.0.0/16", "fd00:\(String(Int.random(in: 1...0xffff), radix: 16))::/48")
    }

    func setFailing(_ f: Bool) { failAllocations = f }
}

/// Records which tenants changed.
final class Changes: ChangeNotifier {
    let seen = Mutex<[UUID]>([])
    func changed(tenant: UUID) { seen.withLock { $0.append(tenant) } }
    func deliver(tenant: UUID, through revision: UInt64) async -> Bool { changed(tenant: tenant); return true }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    let t = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { t.withLock { $0 } }
    func advance(_ seconds: Double) { t.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

/// Which nodes answer their state subject, and how (the live node list).
final class NodeStates: Sendable {
    let answering = Mutex<[String: Mesh_V1_NodeState]>([:])

    func state(_ id: String) throws(MeshError) -> Mesh_V1_NodeState {
        guard let s = answering.withLock({ $0[id] }) else { throw .unavailable("no responders") }
        return s
    }
}

/// ProvisionSvc's services over the in-memory store: every rule, no servers.
struct Harness {
    let nodeStates = NodeStates()
    let store: InMemoryProvisionStore
    let allocator = MemoryAllocator()
    let changes = Changes()
    let clock = TestClock()
    let tenants: TenantService
    let users: UserService
    let devices: DeviceService
    let nodes: NodeService
    let audit: AuditService
    let accounts: AccountService
    let keeper: LeaseKeeper

    init(rate: RateLimit = .seed) {
        let clock = self.clock
        store = InMemoryProvisionStore(clock: { clock.now })
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let config = ProvisionConfiguration(rateLimit: rate)
        users = UserService(users: store)
        tenants = TenantService(tenants: store, prefixes: allocator, notifier: changes, logger: logger)
        devices = DeviceService(devices: store, users: users, leases: store, allocator: allocator, notifier: changes, configuration: config, logger: logger)
        let states = nodeStates
        nodes = NodeService(nodes: store, users: users, leases: store, allocator: allocator, notifier: changes, busIdentities: nil,
                            probe: { _ async throws(MeshError) in Mesh_V1_PeerDump() },
                            stateProbe: { id async throws(MeshError) in try states.state(id) }, configuration: config, logger: logger)
        audit = AuditService(audit: store, users: users)
        accounts = AccountService(accounts: store, users: users, leases: store, allocator: allocator, notifier: changes, logger: logger)
        keeper = LeaseKeeper(tasks: store, allocator: allocator, logger: logger)
    }

    func tenant(_ plan: Mesh_V1_Plan, saml: Bool = false, nodes count: Int = 1) async throws -> (Mesh_V1_Tenant, admin: Mesh_V1_Caller) {
        var r = Mesh_V1_CreateTenantRequest()
        r.name = "t"
        r.plan = plan
        r.requireSaml = saml
        let t = try await tenants.create(r, requestID: "r")
        let admin = try await user(t, .admin)
        for i in 0..<count { _ = try await node(t, admin: admin, name: "edge \(i)") }
        return (t, admin)
    }

    func user(_ t: Mesh_V1_Tenant, _ role: Mesh_V1_Role = .owner) async throws -> Mesh_V1_Caller {
        var r = Mesh_V1_CreateUserRequest()
        r.tenantID = t.id
        r.name = "u"
        r.role = role
        let u = try await users.create(r, requestID: "r")
        var c = Mesh_V1_Caller()
        c.tenantID = t.id
        c.userID = u.id
        c.role = role
        return c
    }

    func node(_ t: Mesh_V1_Tenant, admin: Mesh_V1_Caller, name: String, endpoint: String? = nil) async throws -> Mesh_V1_Node {
        let token = try await nodes.createEnrollmentToken({ var r = Mesh_V1_CreateEnrollmentTokenRequest(); r.caller = admin; return r }())
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = name
        r.publicKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        r.endpoint = endpoint ?? "192.0.2.\(Int.random(in: 1...250)):51820"
        r.listenPort = 51820
        return try await nodes.register(r, requestID: "r").node
    }

    func create(_ caller: Mesh_V1_Caller, _ label: String, type: Mesh_V1_DeviceType = .iphone,
                expires: Date? = nil) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        var r = Mesh_V1_CreateDeviceRequest()
        r.caller = caller
        r.label = label
        r.type = type
        r.expiresAtMs = expires?.unixMilliseconds ?? 0
        return try await devices.create(r)
    }

    func code(_ caller: Mesh_V1_Caller, _ label: String) async -> Mesh_V1_ErrorCode? {
        do {
            _ = try await create(caller, label)
            return nil
        } catch {
            return error.code
        }
    }
}

@Suite("Provisioning rules through the services, in memory", .timeLimit(.minutes(1)))
struct ProvisionRulesTests {
    @Test("the cap of every plan, exactly", arguments: [Mesh_V1_Plan.free, .pro, .team])
    func caps(plan: Mesh_V1_Plan) async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(plan)
        let cap = plan.policy!.deviceCap!
        for i in 0..<cap { _ = try await h.create(admin, "d\(i)") }
        do {
            _ = try await h.create(admin, "one too many")
            Issue.record("\(plan) took \(cap + 1) devices")
        } catch {
            #expect(error == .quotaExceeded(plan: plan, cap: cap))
        }
        #expect(try await h.store.license(tenant: UUID(text: t.id)!)?.devices == cap)
        // The refused creation was refused before it allocated anything, and left no hold behind.
        #expect(await h.allocator.held.count == cap + 1, "the devices and the node")
        #expect(await h.store.leaseTaskCount == 0)
    }

    @Test func aRegistrationRetriedWithItsSpentTokenGetsTheSameNodeAndSpendsNothing() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.pro)
        let token = try await h.nodes.createEnrollmentToken({ var r = Mesh_V1_CreateEnrollmentTokenRequest(); r.caller = admin; return r }())
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = "retrying"
        r.publicKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        r.endpoint = "192.0.2.7:51820"
        r.listenPort = 51820
        let first = try await h.nodes.register(r, requestID: "a")
        let again = try await h.nodes.register(r, requestID: "b")
        #expect(again.node.id == first.node.id && again.node.ipv4 == first.node.ipv4)
        var other = r
        other.publicKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        await #expect(throws: MeshError.self) { _ = try await h.nodes.register(other, requestID: "c") }
        #expect(try await h.nodes.list({ var l = Mesh_V1_ListNodesRequest(); l.caller = admin; return l }()).count == 2)
        _ = t
    }

    @Test func enterpriseHasNoCap() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (_, admin) = try await h.tenant(.enterprise)
        for i in 0..<150 { _ = try await h.create(admin, "d\(i)") }
    }

    @Test func theRateLimitWindowSlides() async throws {
        let h = Harness()
        let (t, _) = try await h.tenant(.enterprise)
        let u = try await h.user(t)
        for i in 0..<5 {
            #expect(await h.code(u, "d\(i)") == nil)
            h.clock.advance(10)
        }
        // 5 creations at 0, 10, ..., 40 s; now is 50 s: the first leaves the window at 60 s.
        do {
            _ = try await h.create(u, "sixth")
            Issue.record("a sixth creation inside the window")
        } catch {
            #expect(error == .rateLimited(retryAfterSeconds: 10))
        }
        h.clock.advance(9.5)
        #expect(await h.code(u, "still") == .rateLimited)
        #expect(await h.store.leaseTaskCount == 0, "rate-limited creations left no hold")
        h.clock.advance(0.6)
        #expect(await h.code(u, "after") == nil, "the first creation left the window")
        // Another user of the tenant has a window of their own.
        #expect(await h.code(try await h.user(t), "other") == nil)
    }

    @Test func theSAMLGate() async throws {
        let h = Harness()
        let (t, _) = try await h.tenant(.enterprise, saml: true)
        var u = try await h.user(t)
        #expect(await h.code(u, "x") == .permissionDenied)
        #expect(await h.store.leaseTaskCount == 0, "the refused session left no hold")
        u.amr = ["pwd", "saml"]
        #expect(await h.code(u, "x") == nil)
        // Only Enterprise offers it.
        var r = Mesh_V1_CreateTenantRequest()
        r.name = "team"
        r.plan = .team
        r.requireSaml = true
        await #expect(throws: MeshError.self) { _ = try await h.tenants.create(r, requestID: "r") }
    }

    @Test func planChangesKeepDevicesButApplyTheNewRules() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.enterprise, saml: true)
        var saml = admin
        saml.amr = ["saml"]
        for i in 0..<5 { _ = try await h.create(saml, "d\(i)") }
        var down = Mesh_V1_UpdateTenantRequest()
        down.tenantID = t.id
        down.plan = .free
        let after = try await h.tenants.update(down, requestID: "r")
        #expect(after.plan == .free && !after.requireSaml, "the gate goes with a plan that lacks it")
        #expect(await h.code(admin, "sixth") == .quotaExceeded, "over the new cap: nothing new")
        #expect(try await h.devices.list({ var r = Mesh_V1_ListDevicesRequest(); r.caller = admin; return r }()).devices.count == 5)
        down.plan = .pro
        _ = try await h.tenants.update(down, requestID: "r")
        #expect(await h.code(admin, "sixth") == nil)
    }

    @Test func slugsAreUniqueAcrossDevicesAndNodesAndFollowRenames() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.pro, nodes: 0)
        _ = try await h.node(t, admin: admin, name: "phone")
        let a = try await h.create(admin, "Phone").device
        let b = try await h.create(admin, "phone").device
        #expect(a.slug == "phone-2" && b.slug == "phone-3" && a.dnsName == "phone-2.quazzar.mesh")
        var r = Mesh_V1_RenameDeviceRequest()
        r.caller = admin
        r.deviceID = b.id
        r.label = "Zoë's laptop"
        let renamed = try await h.devices.rename(r)
        #expect(renamed.device.slug == "zoes-laptop" && renamed.revision > 0)
        #expect(try await h.create(admin, "phone").device.slug == "phone-3", "the old name is free again")
    }

    @Test func refusalsBeforeAnythingIsAllocated() async throws {
        let h = Harness()
        let (t, admin) = try await h.tenant(.pro, nodes: 0)
        #expect(await h.code(admin, "no node yet") == .failedPrecondition)
        _ = try await h.node(t, admin: admin, name: "edge")
        #expect(await h.code(admin, "") == .invalidArgument)
        var stranger = admin
        stranger.userID = UUID().lowercased
        #expect(await h.code(stranger, "x") == .unauthenticated, "a caller whose user is gone is not signed in")
        // The address hold is written while the caller is looked up; a refused caller leaves none.
        #expect(await h.store.leaseTaskCount == 0, "a refused caller leaves no hold")
        await h.allocator.setFailing(true)
        #expect(await h.code(admin, "allocator down") == .unavailable)
        await h.allocator.setFailing(false)
        #expect(await h.store.leaseTaskCount == 0, "a failed allocation leaves no hold")
    }

    @Test func theFirstNodeIsTheHubAndRemovingNodesOutdatesConfigs() async throws {
        let h = Harness(rate: RateLimit(limit: 0, window: .seconds(60)))
        let (t, admin) = try await h.tenant(.pro, nodes: 0)
        let hub = try await h.node(t, admin: admin, name: "hub")
        let second = try await h.node(t, admin: admin, name: "second")
        #expect(hub.hub && !second.hub)
        let phone = try await h.create(admin, "phone")
        #expect(phone.config.contains("AllowedIPs = \(hub.ipv4)/32, \(hub.ipv6)/128, 100.64.0.0/16"))
        #expect(phone.device.configHubID == hub.id && Set(phone.device.configNodeIds) == [hub.id, second.id])
        // A node joining later outdates nothing: the hub routes to it.
        _ = try await h.node(t, admin: admin, name: "late")
        var list = Mesh_V1_ListDevicesRequest()
        list.caller = admin
        #expect(try await h.devices.list(list).devices.allSatisfy { !$0.configOutdated })
        // Removing the hub: the next node becomes the hub, and the phone's config is outdated.
        var dr = Mesh_V1_DeregisterNodeRequest()
        dr.caller = admin
        dr.nodeID = hub.id
        _ = try await h.nodes.deregister(dr)
        let listed = try await h.devices.list(list).devices
        #expect(listed.first?.configOutdated == true && listed.first?.configOutdatedReason == "its hub hub was removed")
        var nl = Mesh_V1_ListNodesRequest()
        nl.caller = admin
        #expect(try await h.nodes.list(nl).first { $0.hub }?.id == second.id)
        let outbox = await h.store.outbox[UUID(text: t.id)!] ?? []
        #expect(outbox.map(\.revision) == Array(1...UInt64(outbox.count)), "revisions rise by one")
        #expect(outbox.last?.newSettings?.hubNodeID == second.id)
    }

    @Test func anOverdueHoldIsReleasedAndItsCreationCannotCommit() async throws {
        let h = Harness()
        let (t, _) = try await h.tenant(.pro)
        let owner = UUID()
        try await h.store.holdLease(owner: owner, tenant: UUID(text: t.id)!, due: h.clock.now.addingTimeInterval(120))
        _ = try await h.allocator.allocate(tenant: UUID(text: t.id)!, owner: owner, kind: .device, requestID: "r")
        #expect(try await h.keeper.runOnce() == 0, "not due yet")
        h.clock.advance(121)
        #expect(try await h.keeper.runOnce() == 1)
        #expect(await h.allocator.released.map(\.0) == [owner])
        #expect(await h.allocator.released.first?.neverPublished == true)
        #expect(await h.store.leaseTaskCount == 0)
    }

    @Test func theAuditLogNeedsTeamAndAnAdmin() async throws {
        let h = Harness()
        let (_, proAdmin) = try await h.tenant(.pro)
        var a = Mesh_V1_ListAuditRequest()
        a.caller = proAdmin
        await #expect(throws: MeshError.self) { _ = try await h.audit.list(a) }
        let (team, teamAdmin) = try await h.tenant(.team)
        a.caller = teamAdmin
        let page = try await h.audit.list(a)
        #expect(page.entries.contains { $0.action == "tenant.create" } && page.entries.contains { $0.action == "node.register" })
        a.caller = try await h.user(team)
        await #expect(throws: MeshError.self) { _ = try await h.audit.list(a) }
    }
}

import Foundation
import MeshBus
import MeshClient
import MeshDomain
import MeshKeys
import MeshProto
import MeshStore
import MeshTestSupport
import ProvisionCore
import SwiftProtobuf
import Testing

@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.hasInfra, "\(TestEnvironment.skipReason)"))
struct ProvisionTests {
    @Test func capIsExactUnderConcurrencyAcrossThreeReplicas() async throws {
        let c = try await ControlPlane.start("cap", replicas: 3)
        for (plan, cap) in [(Mesh_V1_Plan.free, 3), (.pro, 20)] {
            let t = try await c.readyTenant(plan)
            var callers: [Mesh_V1_Caller] = []
            for _ in 0..<50 { callers.append(try await c.user(t)) }
            let results = await withTaskGroup(of: MeshError?.self) { group in
                for caller in callers {
                    group.addTask { await meshError { _ = try await c.client.createDevice(caller: caller, label: "phone", type: .iphone) } }
                }
                return await group.reduce(into: [MeshError?]()) { $0.append($1) }
            }
            let ok = results.filter { $0 == nil }.count
            let capped = results.filter { $0 == .quotaExceeded(plan: plan, cap: cap) }.count
            #expect(ok == cap, "\(plan): \(ok) succeeded")
            #expect(capped == 50 - cap, "\(plan): other errors: \(results.compactMap { $0 }.filter { $0.code != .quotaExceeded })")
            let row = try await c.store.query("""
                SELECT (SELECT count(*) FROM devices WHERE tenant_id = $1) AS d,
                       (SELECT count(*) FROM leases WHERE tenant_id = $1 AND kind = 'device') AS l
                """, UUID(uuidString: t.id)!).first!
            #expect(try row.decode("d", as: Int.self) == cap)
            #expect(try row.decode("l", as: Int.self) == cap, "refused creations leak no address")
        }
        // The quota error names the plan and the cap.
        #expect(MeshError.quotaExceeded(plan: .free, cap: 3).message == "device cap reached: the Free plan allows 3 devices")
        try await c.stop()
    }

    /// Seven concurrent creations by one user, spread over three replicas: exactly five succeed.
    /// The window is an hour, so the outcome cannot depend on how long the creations take; the
    /// window then passes by ageing the user's creation records, and creating works again.
    @Test func rateLimitIsExactAcrossReplicasAndRecovers() async throws {
        let c = try await ControlPlane.start("rate", replicas: 3, environment: ["MESH_RATE_WINDOW_SECONDS": "3600"])
        let t = try await c.readyTenant(.enterprise)
        let caller = try await c.user(t)
        let results = await withTaskGroup(of: MeshError?.self) { group in
            for i in 0..<7 {
                group.addTask { await meshError { _ = try await c.client.createDevice(caller: caller, label: "laptop \(i)", type: .laptop) } }
            }
            return await group.reduce(into: [MeshError?]()) { $0.append($1) }
        }
        #expect(results.filter { $0 == nil }.count == 5)
        var retry = 0
        for case .rateLimited(let s)? in results { retry = max(retry, s) }
        #expect(results.filter { if case .rateLimited? = $0 { true } else { false } }.count == 2, "\(results)")
        #expect((1...3600).contains(retry), "retry-after \(retry) s within the one-hour window")
        // The requests were spread over the replicas.
        let served = try await ServiceProcesses.requestsServed(bus: c.bus, service: MeshServiceName.provision, endpoint: "device-create",
                                                               instances: ["provisionsvc-0", "provisionsvc-1", "provisionsvc-2"])
        #expect(served.values.filter { $0 > 0 }.count >= 2, "only one replica served creates: \(served)")
        #expect(served.values.reduce(0, +) == 7, "\(served)")
        // Still limited; then the window passes (the records age by an hour) and it recovers.
        #expect(await meshError { _ = try await c.client.createDevice(caller: caller, label: "still", type: .other) }?.code == .rateLimited)
        try await c.store.query("UPDATE provision_events SET at = at - interval '3601 seconds' WHERE user_id = $1", UUID(uuidString: caller.userID)!)
        #expect(await meshError { _ = try await c.client.createDevice(caller: caller, label: "after", type: .other) } == nil)
        try await c.stop()
    }

    @Test func outboxRevisionsHaveNoGapsAndNoDuplicates() async throws {
        let c = try await ControlPlane.start("outbox", replicas: 3, environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.enterprise)
        let admin = try await c.user(t, .admin)
        _ = try await c.node(t, admin: admin, name: "edge-1", endpoint: "198.51.100.1:51820")
        let devices = try await withThrowingTaskGroup(of: Mesh_V1_Device.self) { group in
            for i in 0..<30 { group.addTask { try await c.client.createDevice(caller: admin, label: "d\(i)", type: .other).device } }
            return try await group.reduce(into: [Mesh_V1_Device]()) { $0.append($1) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for d in devices.prefix(10) { group.addTask { _ = try await c.client.deleteDevice(caller: admin, deviceID: d.id) } }
            try await group.waitForAll()
        }
        let rows = try await c.store.query("SELECT revision, payload FROM outbox WHERE tenant_id = $1 ORDER BY revision", UUID(uuidString: t.id)!)
        let revisions = try rows.map { try $0.decode("revision", as: Int.self) }
        #expect(revisions == Array(1...43), "settings, the node and its hub setting, 30 creates, 10 deletes: revisions 1...43 with no gap")
        let changes = try rows.map { try Mesh_V1_PeersUpdated(serializedBytes: try $0.decode("payload", as: ByteA.self).bytes) }
        let upserts = changes.compactMap { if case .upsert(let m) = $0.change { m } else { nil } }
        #expect(upserts.count == 31)
        #expect(changes.filter { if case .remove = $0.change { true } else { false } }.count == 10)
        #expect(changes.filter { if case .settings = $0.change { true } else { false } }.count == 2)
        let tenant = try await c.client.getTenant(t.id)
        #expect(tenant.revision == 43)
        // Every device change carries the member with what its config lists.
        let device = try #require(upserts.first { $0.kind == .device })
        #expect(device.configNodeIds.count == 1 && device.configHubID == device.configNodeIds[0] && device.active && device.slug.hasPrefix("d"))
        try await c.stop()
    }

    @Test func labelsSlugsAndNonASCII() async throws {
        let c = try await ControlPlane.start("slug", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.readyTenant(.enterprise)
        let u = try await c.user(t)
        let a = try await c.client.createDevice(caller: u, label: "  Zoë's iPhone ", type: .iphone).device
        let b = try await c.client.createDevice(caller: u, label: "Zoë's iPhone", type: .iphone).device
        let e = try await c.client.createDevice(caller: u, label: "🚀🚀", type: .laptop).device
        let r = try await c.client.createDevice(caller: u, label: "Иван", type: .android).device
        #expect(a.label == "Zoë's iPhone", "shown as typed (trimmed)")
        #expect(a.slug == "zoes-iphone")
        #expect(b.slug == "zoes-iphone-2")
        #expect(a.dnsName == "zoes-iphone.quazzar.mesh")
        #expect(e.slug == "laptop")
        #expect(r.slug == "ivan")
        let long = String(repeating: "x", count: 63)
        let l = try await c.client.createDevice(caller: u, label: long, type: .other).device
        #expect(l.slug.count == 63)
        let l2 = try await c.client.createDevice(caller: u, label: long, type: .other).device
        #expect(l2.slug.count <= 63 && l2.slug.hasSuffix("-2"))
        try await c.stop()
    }

    @Test func badInputIsRejectedWithoutSideEffects() async throws {
        let c = try await ControlPlane.start("bad")
        let t = try await c.readyTenant(.pro)
        let u = try await c.user(t)
        let admin = try await c.user(t, .admin)
        func code(_ label: String, _ type: Mesh_V1_DeviceType, _ caller: Mesh_V1_Caller) async -> Mesh_V1_ErrorCode? {
            await meshError { _ = try await c.client.createDevice(caller: caller, label: label, type: type) }?.code
        }
        #expect(await code("", .iphone, u) == .invalidArgument)
        #expect(await code("   ", .iphone, u) == .invalidArgument)
        #expect(await code(String(repeating: "a", count: 64), .iphone, u) == .invalidArgument)
        #expect(await code("bad\u{0}name", .iphone, u) == .invalidArgument)
        #expect(await code("bell\u{7}", .iphone, u) == .invalidArgument)
        #expect(await code("rtl\u{202E}", .iphone, u) == .invalidArgument)
        #expect(await code("ok", .unspecified, u) == .invalidArgument)
        #expect(await code("ok", Mesh_V1_DeviceType(rawValue: 99)!, u) == .invalidArgument)
        var stranger = u
        stranger.userID = UUID().uuidString
        // A caller whose user the tenant does not have (never had, or removed) is not signed in.
        #expect(await code("ok", .iphone, stranger) == .unauthenticated)
        var otherTenant = u
        otherTenant.tenantID = UUID().uuidString
        #expect(await code("ok", .iphone, otherTenant) == .unauthenticated)
        var malformed = u
        malformed.userID = "robert'); DROP TABLE users;--"
        #expect(await code("ok", .iphone, malformed) == .invalidArgument)

        let token = try await c.client.createEnrollmentToken(caller: admin)
        func register(_ mutate: (inout Mesh_V1_RegisterNodeRequest) -> Void) async -> Mesh_V1_ErrorCode? {
            var r = Mesh_V1_RegisterNodeRequest()
            r.enrollmentToken = token.token
            r.name = "node"
            r.publicKey = WireGuardKeyPair.generate().publicKey
            r.endpoint = "203.0.113.5:51820"
            r.listenPort = 51820
            mutate(&r)
            return await meshError { _ = try await c.client.registerNode(r) }?.code
        }
        #expect(await register { $0.publicKey = "not-base64!" } == .invalidArgument)
        #expect(await register { $0.publicKey = Data(repeating: 1, count: 31).base64EncodedString() } == .invalidArgument)
        #expect(await register { $0.endpoint = "203.0.113.5" } == .invalidArgument)
        #expect(await register { $0.endpoint = "203.0.113.5:0" } == .invalidArgument)
        #expect(await register { $0.endpoint = "exa mple.com:1" } == .invalidArgument)
        #expect(await register { $0.listenPort = 70000 } == .invalidArgument)
        #expect(await register { $0.enrollmentToken = "qme_forged" } == .unauthenticated)
        #expect(await meshError { _ = try await c.client.deregisterNode(caller: admin, nodeID: UUID().uuidString) }?.code == .notFound)

        // Nothing was half-written and no address leaked.
        // (The tenant has its one node: its settings, the node and the hub setting are its three changes.)
        let row = try await c.store.query("""
            SELECT (SELECT count(*) FROM devices) AS d, (SELECT count(*) FROM nodes) AS n, (SELECT count(*) FROM leases) AS l,
                   (SELECT count(*) FROM outbox) AS o, (SELECT count(*) FROM lease_tasks) AS h
            """).first!
        #expect(try row.decode("d", as: Int.self) == 0)
        #expect(try row.decode("n", as: Int.self) == 1)
        #expect(try row.decode("l", as: Int.self) == 1)
        #expect(try row.decode("o", as: Int.self) == 3)
        #expect(try row.decode("h", as: Int.self) == 0, "no address hold is left behind")
        // Still serving.
        #expect(await code("fine", .iphone, u) == nil)
        try await c.stop()
    }

    /// A node whose registration committed but whose answer it never got retries with the same
    /// single-use token: it gets the same node back and spends nothing; anyone else with that spent
    /// token (another WireGuard key, or the same key with another bus key) is refused.
    @Test func aRegistrationRetriedWithItsSpentTokenGetsTheSameNode() async throws {
        let c = try await ControlPlane.start("reg-retry")
        let t = try await c.readyTenant(.pro)
        let admin = try await c.user(t, .admin)
        let token = try await c.client.createEnrollmentToken(caller: admin)
        var r = Mesh_V1_RegisterNodeRequest()
        r.enrollmentToken = token.token
        r.name = "retrying node"
        r.publicKey = WireGuardKeyPair.generate().publicKey
        r.endpoint = "203.0.113.9:51820"
        r.listenPort = 51820
        let first = try await c.client.registerNode(r)
        let again = try await c.client.registerNode(r)
        #expect(again.node.id == first.node.id)
        #expect(again.node.ipv4 == first.node.ipv4 && again.node.ipv6 == first.node.ipv6)
        #expect(again.node.dnsName == first.node.dnsName)
        var other = r
        other.publicKey = WireGuardKeyPair.generate().publicKey
        #expect(await meshError { _ = try await c.client.registerNode(other) }?.code == .unauthenticated)
        let uses = try await c.store.query("SELECT uses_left FROM enrollment_tokens").map { try $0.decode("uses_left", as: Int.self) }
        #expect(uses.contains(0), "the retry spent nothing: the token's one use went to the first attempt")
        let nodes = try await c.store.query("SELECT count(*) AS n FROM nodes WHERE public_key = $1", r.publicKey).first!
        #expect(try nodes.decode("n", as: Int.self) == 1)
        try await c.stop()
    }

    /// Pages walk the tenant in PostgreSQL's own `(created_at, id)` order, also through devices that
    /// share a creation time to the microsecond (the cursor then decides by id alone), and every
    /// device carries its owner's name.
    @Test func pagesFollowTheDatabaseOrderThroughSharedCreationTimes() async throws {
        let c = try await ControlPlane.start("pages", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.readyTenant(.team)
        let a = try await c.user(t), admin = try await c.user(t, .admin)
        for i in 0..<9 { _ = try await c.client.createDevice(caller: i % 3 == 0 ? admin : a, label: "dev \(i)", type: .laptop) }
        let tid = try #require(UUID(uuidString: t.id))
        // Six of the nine get one creation time, so only their ids order them.
        try await c.store.query("""
            UPDATE provision.devices SET created_at = timestamptz '2026-01-02 03:04:05.678901+00'
            WHERE id IN (SELECT id FROM provision.devices WHERE tenant_id = $1 ORDER BY id LIMIT 6)
            """, tid)
        let ordered = try await c.store.query("SELECT id, created_at FROM provision.devices WHERE tenant_id = $1 ORDER BY created_at, id", tid)
            .map { DeviceCursor(createdMicros: try $0.decode("created_at", as: PGMicroseconds.self).value, id: try $0.decode("id")) }
        let expected = ordered.map(\.id.lowercased)
        // The order the service restores should a page ever come out of the database unsorted.
        #expect(ordered.shuffled().sorted { $0.precedes($1) } == ordered)
        var r = Mesh_V1_ListDevicesRequest()
        r.caller = admin
        r.limit = 2
        var seen: [Mesh_V1_Device] = [], pages = 0
        while pages < 20 {
            let page = try await c.client.listDevices(r)
            seen += page.devices
            pages += 1
            #expect(page.devices.count <= 2)
            guard !page.nextCursor.isEmpty else { break }
            r.cursor = page.nextCursor
        }
        #expect(expected.count == 9)
        #expect(seen.map(\.id) == expected, "pages: \(pages)")
        #expect(pages == 5)
        let names = Dictionary(grouping: seen, by: \.ownerUserID).mapValues { Set($0.map(\.ownerName)) }
        #expect(Set(names.keys) == [a.userID, admin.userID] && names.values.allSatisfy { $0.count == 1 && !$0.contains("") }, "\(names)")
        #expect(names[a.userID] != names[admin.userID])
        try await c.stop()
    }

    /// The listing view (what the page and the live channel ask for) carries every field of the full
    /// view but the tenant, the public key, the config hub and the listed nodes, which it leaves
    /// empty; the full view is the default. An unknown view is refused.
    @Test func theListingViewLeavesOutOnlyWhatAListingNeverShows() async throws {
        let c = try await ControlPlane.start("view", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.readyTenant(.team)
        let a = try await c.user(t), admin = try await c.user(t, .admin)
        var ids: [String] = []
        for i in 0..<4 { ids.append(try await c.client.createDevice(caller: i % 2 == 0 ? admin : a, label: "view \(i)", type: .laptop).device.id) }
        _ = try await c.client.suspendDevice(caller: a, deviceID: ids[1])
        var r = Mesh_V1_ListDevicesRequest()
        r.caller = admin
        r.limit = 3
        func walk(_ view: Mesh_V1_DeviceView) async throws -> [Mesh_V1_Device] {
            var q = r, all: [Mesh_V1_Device] = []
            q.view = view
            for _ in 0..<5 {
                let page = try await c.client.listDevices(q)
                all += page.devices
                guard !page.nextCursor.isEmpty else { break }
                q.cursor = page.nextCursor
            }
            return all
        }
        let full = try await walk(.unspecified), explicit = try await walk(.full), listing = try await walk(.listing)
        #expect(full.map(\.id) == ids && explicit == full)
        #expect(full.allSatisfy { $0.tenantID == t.id && $0.publicKey.count == 44 && !$0.configHubID.isEmpty && $0.configNodeIds.contains($0.configHubID) })
        #expect(full.contains { $0.status == .suspended } && Set(full.map(\.ownerName)).count == 2)
        let stripped = full.map { d -> Mesh_V1_Device in
            var d = d
            d.tenantID = ""
            d.publicKey = ""
            d.configHubID = ""
            d.configNodeIds = []
            return d
        }
        // Only the four fields differ (online_until_ms is 0 for devices that never handshook).
        #expect(listing == stripped)
        var bad = r
        bad.view = .UNRECOGNIZED(7)
        #expect(await meshError { _ = try await c.client.listDevices(bad) }?.code == .invalidArgument)
        try await c.stop()
    }

    @Test func ownershipRulesForListAndDelete() async throws {
        let c = try await ControlPlane.start("owner", environment: ["MESH_RATE_LIMIT": "0"])
        let t = try await c.readyTenant(.pro)
        let a = try await c.user(t), b = try await c.user(t), admin = try await c.user(t, .admin)
        let other = try await c.readyTenant(.pro)
        let otherAdmin = try await c.user(other, .admin)
        let da = try await c.client.createDevice(caller: a, label: "a's laptop", type: .laptop).device
        let db = try await c.client.createDevice(caller: b, label: "b's phone", type: .android).device
        #expect(try await c.client.listDevices(caller: a).map(\.id) == [da.id])
        #expect(try await c.client.listDevices(caller: b).map(\.id) == [db.id])
        #expect(Set(try await c.client.listDevices(caller: admin).map(\.id)) == [da.id, db.id])
        #expect(try await c.client.listDevices(caller: otherAdmin).isEmpty)
        #expect(await meshError { _ = try await c.client.deleteDevice(caller: b, deviceID: da.id) }?.code == .notFound)
        #expect(await meshError { _ = try await c.client.deleteDevice(caller: otherAdmin, deviceID: da.id) }?.code == .notFound)
        #expect(await meshError { _ = try await c.client.deleteDevice(caller: a, deviceID: da.id) } == nil)
        #expect(await meshError { _ = try await c.client.deleteDevice(caller: admin, deviceID: db.id) } == nil)
        #expect(await meshError { _ = try await c.client.deleteDevice(caller: admin, deviceID: db.id) }?.code == .notFound)
        // Deleting released the addresses into quarantine.
        let q = try await c.store.query("SELECT count(*) AS n FROM free_hosts WHERE available_at > now() + interval '1 minute'").first!
        #expect(try q.decode("n", as: Int.self) == 2)
        try await c.stop()
    }

    @Test func handshakeReportsSetOnlineAndCountersSurviveResets() async throws {
        let c = try await ControlPlane.start("report")
        let t = try await c.tenant(.pro)
        let admin = try await c.user(t, .admin)
        let (node, _) = try await c.node(t, admin: admin, name: "edge", endpoint: "198.51.100.7:51820")
        let d = try await c.client.createDevice(caller: admin, label: "phone", type: .iphone).device
        #expect(!d.online)
        func report(rx: UInt64, tx: UInt64, endpoint: String) async throws {
            var s = Mesh_V1_PeerStats()
            s.publicKey = d.publicKey
            s.lastHandshakeMs = Date().unixMilliseconds
            s.rxBytes = rx
            s.txBytes = tx
            s.endpoint = endpoint
            var r = Mesh_V1_HandshakeReport()
            r.tenantID = t.id
            r.nodeID = node.id
            r.peers = [s]
            let _: Google_Protobuf_Empty = try await c.bus.call(MeshSubjects.handshakeReport(tenant: t.id, node: node.id), r)
        }
        try await report(rx: 1000, tx: 500, endpoint: "203.0.113.9:4500")
        var listed = try await c.client.listDevices(caller: admin).first!
        #expect(listed.online)
        #expect(listed.lastHandshakeAtMs > 0)
        #expect(listed.rxBytes == 1000 && listed.txBytes == 500)
        #expect(listed.endpoint == "203.0.113.9:4500")
        try await report(rx: 1500, tx: 700, endpoint: "203.0.113.9:4500")
        // The node restarted its interface: raw counters start again from zero.
        try await report(rx: 100, tx: 10, endpoint: "203.0.113.9:4501")
        listed = try await c.client.listDevices(caller: admin).first!
        #expect(listed.rxBytes == 1600 && listed.txBytes == 710)
        #expect(listed.endpoint == "203.0.113.9:4501")
        // A report on another node's subject is refused.
        var forged = Mesh_V1_HandshakeReport()
        forged.tenantID = t.id
        forged.nodeID = UUID().uuidString.lowercased()
        let err = await meshError {
            let _: Google_Protobuf_Empty = try await c.bus.call(MeshSubjects.handshakeReport(tenant: t.id, node: node.id), forged)
        }
        #expect(err?.code == .permissionDenied)
        // A handshake time no node can have seen (in the future, before 2000, or beyond any date)
        // is refused with a typed error, and nothing of that report is stored.
        for ms in [Int64.max, Int64.min, -1, 1, Date().addingTimeInterval(86_400).unixMilliseconds] {
            var bad = Mesh_V1_HandshakeReport()
            bad.tenantID = t.id
            bad.nodeID = node.id
            var s = Mesh_V1_PeerStats()
            s.publicKey = d.publicKey
            s.lastHandshakeMs = ms
            s.rxBytes = 999_999
            bad.peers = [s]
            let e = await meshError {
                let _: Google_Protobuf_Empty = try await c.bus.call(MeshSubjects.handshakeReport(tenant: t.id, node: node.id), bad)
            }
            #expect(e?.code == .invalidArgument, "last_handshake_ms \(ms): \(String(describing: e))")
        }
        #expect(try await c.client.listDevices(caller: admin).first!.rxBytes == 1600)
        try await c.stop()
    }

    @Test func licenseAuditAndSamlGate() async throws {
        let c = try await ControlPlane.start("license")
        let free = try await c.readyTenant(.free)
        let freeAdmin = try await c.user(free, .admin)
        _ = try await c.client.createDevice(caller: freeAdmin, label: "one", type: .other)
        let lic = try await c.client.license(caller: freeAdmin)
        #expect(lic.enabled && lic.plan == .free && lic.deviceCap == 3 && lic.devicesUsed == 1 && lic.diagnostics == .basicState)
        #expect(await meshError { _ = try await c.client.audit(caller: freeAdmin) }?.code == .permissionDenied)

        let team = try await c.readyTenant(.team)
        var teamAdmin = try await c.user(team, .admin)
        let owner = try await c.user(team)
        for i in 0..<3 {
            teamAdmin.requestID = "req-\(i)"
            _ = try await c.client.createDevice(caller: teamAdmin, label: "t\(i)", type: .other)
        }
        #expect(await meshError { _ = try await c.client.audit(caller: owner) }?.code == .permissionDenied)
        let page1 = try await c.client.audit(caller: teamAdmin, limit: 2)
        #expect(page1.entries.count == 2)
        #expect(page1.entries[0].action == "device.create" && page1.entries[0].requestID == "req-2")
        #expect(page1.entries[0].actor == "user:\(teamAdmin.userID)")
        #expect(page1.nextBeforeID > 0)
        let page2 = try await c.client.audit(caller: teamAdmin, beforeID: page1.nextBeforeID, limit: 50)
        #expect(page2.entries.map(\.action).contains("tenant.create"))
        #expect(page2.entries.allSatisfy { $0.id < page1.nextBeforeID })

        let ent = try await c.readyTenant(.enterprise, requireSaml: true)
        var entUser = try await c.user(ent)
        #expect(await meshError { _ = try await c.client.createDevice(caller: entUser, label: "x", type: .laptop) }?.code == .permissionDenied)
        entUser.amr = ["pwd", "saml"]
        #expect(await meshError { _ = try await c.client.createDevice(caller: entUser, label: "x", type: .laptop) } == nil)
        let entLic = try await c.client.license(caller: entUser)
        #expect(entLic.unlimited && entLic.diagnostics == .samlGated && entLic.requireSaml)
        // SAML gating is Enterprise-only.
        var up = Mesh_V1_UpdateTenantRequest()
        up.tenantID = team.id
        up.setRequireSaml = true
        up.requireSaml = true
        #expect(await meshError { _ = try await c.client.updateTenant(up) }?.code == .failedPrecondition)
        try await c.stop()
    }

    /// Re-issue: who may, what stays, what changes, the rate limit, the cap, and a race with a delete.
    @Test func reissueKeepsTheDeviceAndReplacesItsKey() async throws {
        // A window of an hour: the six calls below fall in it however slowly a loaded machine runs them.
        let c = try await ControlPlane.start("reissue", replicas: 2, environment: ["MESH_RATE_WINDOW_SECONDS": "3600"])
        let t = try await c.readyTenant(.free)
        let owner = try await c.user(t), other = try await c.user(t), admin = try await c.user(t, .admin)
        let strangerTenant = try await c.readyTenant(.pro)
        let stranger = try await c.user(strangerTenant, .admin)
        let d = try await c.client.createDevice(caller: owner, label: "phone", type: .iphone).device
        for caller in [other, stranger] {
            #expect(await meshError { _ = try await c.client.reissueDevice(caller: caller, deviceID: d.id) }?.code == .notFound)
        }
        #expect(await meshError { _ = try await c.client.reissueDevice(caller: owner, deviceID: "robert'); --") }?.code == .notFound)
        #expect(await meshError { _ = try await c.client.reissueDevice(caller: owner, deviceID: UUID().lowercased) }?.code == .notFound)

        let r = try await c.client.reissueDevice(caller: admin, deviceID: d.id)
        #expect(r.device.publicKey != d.publicKey && r.config.contains("PrivateKey = "))
        #expect(r.device.ipv4 == d.ipv4 && r.device.ipv6 == d.ipv6 && r.device.slug == d.slug && r.device.createdAtMs == d.createdAtMs)
        #expect(!r.qrSvg.isEmpty)
        // A Free tenant at its cap can still re-issue (the device keeps its slot).
        _ = try await c.client.createDevice(caller: owner, label: "two", type: .other)
        _ = try await c.client.createDevice(caller: admin, label: "three", type: .other)
        #expect(await meshError { _ = try await c.client.createDevice(caller: admin, label: "four", type: .other) }?.code == .quotaExceeded)
        _ = try await c.client.reissueDevice(caller: owner, deviceID: d.id)
        // The owner made two devices and one re-issue: two more, then the rate limit.
        _ = try await c.client.reissueDevice(caller: owner, deviceID: d.id)
        _ = try await c.client.reissueDevice(caller: owner, deviceID: d.id)
        guard case .rateLimited(let retry)? = await meshError({ _ = try await c.client.reissueDevice(caller: owner, deviceID: d.id) }) else {
            Issue.record("the sixth creation or re-issue in the window was not rate limited")
            try await c.stop()
            return
        }
        #expect((1...3600).contains(retry))
        let audit = try await c.store.query("SELECT count(*) AS n FROM audit_log WHERE action = 'device.reissue' AND target_id = $1", d.id).first!
        #expect(try audit.decode("n", as: Int.self) == 4)

        // A re-issue racing a delete: the device ends up gone, in ProvisionSvc and in FanoutSvc.
        let e = try await c.client.createDevice(caller: stranger, label: "race", type: .laptop).device
        async let reissued: MeshError? = meshError { _ = try await c.client.reissueDevice(caller: stranger, deviceID: e.id) }
        async let deleted: MeshError? = meshError { _ = try await c.client.deleteDevice(caller: stranger, deviceID: e.id) }
        let (re, de) = await (reissued, deleted)
        #expect(de == nil && (re == nil || re?.code == .notFound), "\(String(describing: re)) \(String(describing: de))")
        #expect(try await c.client.listDevices(caller: stranger).allSatisfy { $0.id != e.id })
        try await waitUntil("the deleted device stops being a member for the nodes") {
            try await c.store.query("SELECT 1 AS x FROM fanout.members WHERE member_id = $1", UUID(text: e.id)!).first == nil
        }
        try await c.stop()
    }

    @Test func aConfigTooLargeForAQRCodeIsStillProvisioned() async throws {
        let c = try await ControlPlane.start("bigqr")
        let t = try await c.tenant(.pro)
        let admin = try await c.user(t, .admin)
        // Configs list every node here (the default lists eight, which fits a QR code).
        var up = Mesh_V1_UpdateTenantRequest()
        up.tenantID = t.id
        up.settings.configMaxNodes = 16
        _ = try await c.client.updateTenant(up)
        for i in 0..<16 { _ = try await c.node(t, admin: admin, name: "edge \(i)", endpoint: "198.51.100.\(i + 1):51820") }
        let r = try await c.client.createDevice(caller: admin, label: "laptop", type: .laptop)
        #expect(r.config.components(separatedBy: "[Peer]").count == 17, "one [Peer] per node")
        #expect(r.qrSvg.isEmpty)
        #expect(r.qrUnavailableReason.contains("too large for a QR code"))
        #expect(r.config.utf8.count > 2953)
        try await c.stop()
    }
}

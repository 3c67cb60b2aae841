import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshAuth
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

extension GatewayTests {
    /// One device, suspend and resume, expiry, pages and filters, and every way they refuse bad input.
    @Test func deviceLifecycleRoutes() async throws {
        let f = try await Fixture.start("lifecycle", environment: ["MESH_RATE_LIMIT": "0"])
        let app = try await f.application()
        try await app.test(.router) { client in
            let created = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("Phone", type: "iphone"))
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect(created.json["qr_unavailable_reason"] is NSNull, "the member is always there (null with a QR code)")
            #expect(created.json["status"] as? String == "active" && created.json["expires_at"] is NSNull)

            // The Location of a creation is a route.
            let location = try #require(created.headers[.location])
            let one = try await client.send(.get, location, token: f.tokens.ownerA)
            #expect(one.status == 200 && one.json["id"] as? String == id && one.json["status"] as? String == "active", "\(one.text)")
            #expect(one.json["rx_bytes"] is Int && one.json["endpoint"] is NSNull, "Team shows per-peer stats")
            #expect(try await client.send(.get, location, token: f.tokens.ownerB).status == 404)
            #expect(try await client.send(.get, location, token: f.tokens.otherAdmin).status == 404)
            #expect(try await client.send(.get, "/api/mesh/devices/\(UUID())", token: f.tokens.admin).status == 404)
            #expect(try await client.send(.get, "/api/mesh/devices/nope", token: f.tokens.admin).status == 404)

            // Suspend and resume, each idempotent; the owner cannot lift an admin's suspension.
            let s = try await client.send(.post, "\(location)/suspend", token: f.tokens.ownerA)
            #expect(s.status == 200 && s.json["status"] as? String == "suspended" && s.json["suspend_reason"] as? String == "user", "\(s.text)")
            #expect((s.json["suspended_at"] as? String)?.hasSuffix("Z") == true)
            #expect(try await client.send(.post, "\(location)/suspend", token: f.tokens.ownerA).json["status"] as? String == "suspended")
            #expect(try await client.send(.post, "\(location)/suspend", token: f.tokens.admin).json["suspend_reason"] as? String == "admin")
            let refused = try await client.send(.post, "\(location)/resume", token: f.tokens.ownerA)
            #expect(refused.status == 403 && refused.errorCode == "permission_denied", "\(refused.text)")
            let resumed = try await client.send(.post, "\(location)/resume", token: f.tokens.admin)
            #expect(resumed.status == 200 && resumed.json["status"] as? String == "active" && resumed.json["suspended_at"] is NSNull)
            #expect(try await client.send(.post, "\(location)/resume", token: f.tokens.ownerB).status == 404)
            #expect(try await client.send(.post, "/api/mesh/devices/\(UUID())/suspend", token: f.tokens.admin).status == 404)

            // Expiry: admins only, RFC 3339, in the future; one change per PATCH.
            let future = Timestamp.iso(ms: Date().addingTimeInterval(86_400).unixMilliseconds)
            let byOwner = try await client.send(.patch, location, token: f.tokens.ownerA, body: #"{"expires_at":"\#(future)"}"#)
            #expect(byOwner.status == 403 && byOwner.errorCode == "permission_denied", "\(byOwner.text)")
            let set = try await client.send(.patch, location, token: f.tokens.admin, body: #"{"expires_at":"\#(future)"}"#)
            #expect(set.status == 200 && set.json["expires_at"] as? String == future, "\(set.text)")
            let bad: [(String, String)] = [
                (#"{"expires_at":"tomorrow"}"#, "expires_at"), (#"{"expires_at":"2020-01-01T00:00:00Z"}"#, "expires_at"),
                (#"{"expires_at":"2026-02-30T00:00:00Z"}"#, "expires_at"), (#"{"expires_at":12345}"#, "expires_at"),
                (#"{"expires_at":"9999-01-01T00:00:00Z"}"#, "expires_at"), (#"{"label":"x","expires_at":null}"#, "expires_at"),
                ("{}", "label"), (#"{"colour":"red"}"#, "colour"),
            ]
            for (body, field) in bad {
                let r = try await client.send(.patch, location, token: f.tokens.admin, body: body)
                #expect(r.status == 400 && r.errorCode == "invalid_argument" && r.error["field"] as? String == field, "\(body): \(r.text)")
            }
            let cleared = try await client.send(.patch, location, token: f.tokens.admin, body: #"{"expires_at":null}"#)
            #expect(cleared.status == 200 && cleared.json["expires_at"] is NSNull)
            for body in [#"{"label":"t","expires_at":"yesterday"}"#, #"{"label":"t","expires_at":"2020-01-01T00:00:00Z"}"#] {
                let r = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: body)
                #expect(r.status == 400 && r.error["field"] as? String == "expires_at", "\(body): \(r.text)")
            }
            let expiring = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA,
                                                 body: #"{"label":"temp","type":"laptop","expires_at":"\#(future)"}"#)
            #expect(expiring.status == 201 && expiring.json["expires_at"] as? String == future, "\(expiring.text)")

            // Pages and filters.
            for i in 0..<5 { _ = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: deviceBody("b\(i)", type: i < 2 ? "android" : "other")) }
            var seen: [String] = []
            var cursor: String? = ""
            var pages = 0
            while let c = cursor, pages < 10 {
                let page = try await client.send(.get, "/api/mesh/devices?limit=3" + (c.isEmpty ? "" : "&cursor=\(c)"), token: f.tokens.admin)
                #expect(page.status == 200, "\(page.text)")
                seen += (page.json["devices"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                cursor = page.json["next_cursor"] as? String
                pages += 1
            }
            #expect(pages == 3 && seen.count == 7 && Set(seen).count == 7, "\(pages) pages, \(seen.count) devices")
            let androids = try await client.send(.get, "/api/mesh/devices?type=android", token: f.tokens.admin).json["devices"] as? [[String: Any]] ?? []
            #expect(androids.count == 2 && androids.allSatisfy { $0["type"] as? String == "android" })
            let mine = try await client.send(.get, "/api/mesh/devices?owner=me", token: f.tokens.ownerB).json["devices"] as? [[String: Any]] ?? []
            #expect(mine.count == 5 && mine.allSatisfy { $0["owner_user_id"] as? String == f.ownerB.userID && $0["owner_name"] is String })
            let byOwnerA = try await client.send(.get, "/api/mesh/devices?owner=\(f.ownerA.userID)", token: f.tokens.admin).json["devices"] as? [[String: Any]]
            #expect(byOwnerA?.count == 2)
            _ = try await client.send(.post, "\(location)/suspend", token: f.tokens.ownerA)
            let suspended = try await client.send(.get, "/api/mesh/devices?status=suspended", token: f.tokens.admin).json["devices"] as? [[String: Any]]
            #expect(suspended?.compactMap { $0["id"] as? String } == [id])
            #expect((try await client.send(.get, "/api/mesh/devices?status=expired", token: f.tokens.admin).json["devices"] as? [Any])?.isEmpty == true)
            for q in ["limit=0", "limit=501", "limit=x", "cursor=bogus", "owner=x", "status=gone", "type=IPHONE", "type=tablet"] {
                let r = try await client.send(.get, "/api/mesh/devices?\(q)", token: f.tokens.admin)
                #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(q): \(r.text)")
            }
        }
        try await f.stop()
    }

    /// Free tenants get the basic state in the device list and the single device: no per-peer stats.
    @Test func freeDeviceListsHaveNoPerPeerStats() async throws {
        let f = try await Fixture.start("free-stats", plan: .free)
        let app = try await f.application()
        try await app.test(.router) { client in
            let created = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("phone"))
            let id = try #require(created.json["id"] as? String)
            // A handshake report with traffic, as a node would send it.
            let d = try await f.cp.client.getDevice(caller: f.ownerA, deviceID: id)
            var report = Mesh_V1_HandshakeReport()
            report.tenantID = f.tenant.id
            report.nodeID = f.node.id
            var p = Mesh_V1_PeerStats()
            p.publicKey = d.publicKey
            p.endpoint = "203.0.113.9:41000"
            p.rxBytes = 1000
            p.txBytes = 2000
            p.lastHandshakeMs = Date().unixMilliseconds
            report.peers = [p]
            try f.cp.bus.publish(MeshSubjects.handshakeReport(tenant: f.tenant.id, node: f.node.id), try report.serializedBytes())
            var list = try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerA)
            let deadline = ContinuousClock.now + .seconds(20)
            while (list.json["devices"] as? [[String: Any]])?.first?["online"] as? Bool != true, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                list = try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerA)
            }
            #expect(list.json["per_peer_stats"] as? Bool == false)
            let row = try #require((list.json["devices"] as? [[String: Any]])?.first)
            #expect(row["online"] as? Bool == true && row["last_handshake_at"] is String, "the status pill keeps its basic state: \(row)")
            #expect(row["rx_bytes"] == nil && row["tx_bytes"] == nil && row["endpoint"] == nil, "\(row)")
            let one = try await client.send(.get, "/api/mesh/devices/\(id)", token: f.tokens.ownerA).json
            #expect(one["rx_bytes"] == nil && one["endpoint"] == nil && one["online"] as? Bool == true)
            let renamed = try await client.send(.patch, "/api/mesh/devices/\(id)", token: f.tokens.ownerA, body: #"{"label":"phone 2"}"#).json
            #expect(renamed["rx_bytes"] == nil && renamed["endpoint"] == nil)
            #expect(!list.text.contains("203.0.113.9") && !list.text.contains("1000"))
            // The same device on Pro shows them.
            var up = Mesh_V1_UpdateTenantRequest()
            up.tenantID = f.tenant.id
            up.plan = .pro
            _ = try await f.cp.client.updateTenant(up)
            let pro = try await client.send(.get, "/api/mesh/devices/\(id)", token: f.tokens.ownerA).json
            #expect(pro["rx_bytes"] as? Int == 1000 && pro["tx_bytes"] as? Int == 2000 && pro["endpoint"] as? String == "203.0.113.9:41000", "\(pro)")
        }
        try await f.stop()
    }

    /// Nodes over HTTP, the tenant's settings, the mesh switch, refresh, the audit filters and export,
    /// and the loose ends: 401 for a user that does not exist, 409 for a tenant without nodes.
    @Test func nodesSettingsAuditAndLooseEnds() async throws {
        let f = try await Fixture.start("admin-routes", environment: ["MESH_RATE_LIMIT": "0"])
        let app = try await f.application()
        try await app.test(.router) { client in
            // Nodes, hub first, with what each node said about itself.
            let (silent, _) = try await f.cp.node(f.tenant, admin: f.admin, name: "silent", endpoint: "198.51.100.5:51820")
            let nodes = try await client.send(.get, "/api/mesh/nodes", token: f.tokens.admin)
            #expect(nodes.status == 200, "\(nodes.text)")
            let list = nodes.json["nodes"] as? [[String: Any]] ?? []
            #expect(list.map { $0["id"] as? String } == [f.node.id, f.otherNode.id, silent.id], "the hub first, then by age")
            #expect(list[0]["hub"] as? Bool == true && list[0]["online"] as? Bool == true && list[0]["backend"] as? String == "userspace")
            #expect(list[0]["revision"] as? Int == 7 && list[0]["last_sync_at"] as? String == "2023-11-14T22:13:20.000Z" && list[0]["state_error"] is NSNull)
            #expect((list[0]["mesh_ips"] as? [String])?.count == 2 && list[0]["endpoint"] as? String == "198.51.100.1:51820")
            #expect(list[2]["online"] as? Bool == false && list[2]["backend"] is NSNull && (list[2]["state_error"] as? String)?.isEmpty == false)
            #expect(try await client.send(.get, "/api/mesh/nodes", token: f.tokens.ownerA).status == 403)

            // Enrollment tokens.
            let token = try await client.send(.post, "/api/mesh/enrollment-tokens", token: f.tokens.admin, body: #"{"ttl_seconds":600,"uses":3}"#)
            #expect(token.status == 201 && (token.json["token"] as? String)?.hasPrefix("qme_") == true && token.json["uses"] as? Int == 3, "\(token.text)")
            #expect(token.headers[.cacheControl] == "no-store")
            #expect(try await client.send(.post, "/api/mesh/enrollment-tokens", token: f.tokens.admin).status == 201, "the body is optional")
            for body in [#"{"ttl_seconds":10}"#, #"{"ttl_seconds":9999999}"#, #"{"uses":0}"#, #"{"uses":10001}"#, #"{"uses":"many"}"#,
                         #"{"uses":true}"#, #"{"ttl":60}"#, "[]"] {
                let r = try await client.send(.post, "/api/mesh/enrollment-tokens", token: f.tokens.admin, body: body)
                #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(body): \(r.text)")
            }

            // Removing a node: unknown is 404, the node itself goes, and it is audited.
            #expect(try await client.send(.delete, "/api/mesh/nodes/\(UUID())", token: f.tokens.admin).status == 404)
            #expect(try await client.send(.delete, "/api/mesh/nodes/garbage", token: f.tokens.admin).status == 404)
            #expect(try await client.send(.delete, "/api/mesh/nodes/\(silent.id)", token: f.tokens.otherAdmin).status == 404)
            #expect(try await client.send(.delete, "/api/mesh/nodes/\(silent.id)", token: f.tokens.admin).status == 204)
            #expect(try await f.cp.client.listNodes(caller: f.admin).allSatisfy { $0.id != silent.id })

            // Settings and the mesh switch.
            let settings = try await client.send(.get, "/api/mesh/settings", token: f.tokens.ownerA)
            #expect(settings.json["mesh_enabled"] as? Bool == true && settings.json["device_lifetime_seconds"] is NSNull, "\(settings.text)")
            #expect(try await client.send(.patch, "/api/mesh/settings", token: f.tokens.ownerA, body: #"{"mesh_enabled":false}"#).status == 403)
            for body in [#"{"mesh_enabled":"no"}"#, #"{"mesh_enabled":0}"#, #"{"mesh_enabled":null}"#, #"{"device_lifetime_seconds":60}"#,
                         #"{"device_lifetime_seconds":-1}"#, #"{"device_lifetime_seconds":1.5}"#, "{}", #"{"hub":true}"#] {
                let r = try await client.send(.patch, "/api/mesh/settings", token: f.tokens.admin, body: body)
                #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(body): \(r.text)")
            }
            let off = try await client.send(.patch, "/api/mesh/settings", token: f.tokens.admin, body: #"{"mesh_enabled":false}"#)
            #expect(off.status == 200 && off.json["mesh_enabled"] as? Bool == false, "\(off.text)")
            let features = try await client.send(.get, "/api/license/orbit-features", token: f.tokens.ownerA)
            #expect((features.json["mesh_vpn"] as? [String: Any])?["enabled"] as? Bool == false)
            let refused = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("while off"))
            #expect(refused.status == 409 && refused.errorCode == "failed_precondition" && (refused.error["message"] as? String)?.contains("turned off") == true,
                    "\(refused.text)")
            let on = try await client.send(.patch, "/api/mesh/settings", token: f.tokens.admin, body: #"{"mesh_enabled":true,"device_lifetime_seconds":604800}"#)
            #expect(on.json["mesh_enabled"] as? Bool == true && on.json["device_lifetime_seconds"] as? Int == 604_800)
            let later = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("after"))
            #expect(later.status == 201 && later.json["expires_at"] is String, "the default lifetime applies: \(later.text)")
            _ = try await client.send(.patch, "/api/mesh/settings", token: f.tokens.admin, body: #"{"device_lifetime_seconds":null}"#)
            #expect(try await client.send(.get, "/api/mesh/settings", token: f.tokens.admin).json["device_lifetime_seconds"] is NSNull)

            // The audit log's filters and its export.
            let filtered = try await client.send(.get, "/api/mesh/audit?action=mesh", token: f.tokens.admin)
            #expect((filtered.json["entries"] as? [[String: Any]])?.compactMap { $0["action"] as? String } == ["mesh.enable", "mesh.disable"], "\(filtered.text)")
            let byAdmin = try await client.send(.get, "/api/mesh/audit?actor=user:\(f.admin.userID)&action=node.deregister", token: f.tokens.admin)
            #expect((byAdmin.json["entries"] as? [Any])?.count == 1)
            #expect(try await client.send(.get, "/api/mesh/audit?actor=has%20space", token: f.tokens.admin).status == 400)
            let csv = try await client.send(.get, "/api/mesh/audit/export?format=csv", token: f.tokens.admin)
            #expect(csv.status == 200 && csv.headers[.contentType]?.hasPrefix("text/csv") == true)
            #expect(csv.headers[.contentDisposition]?.hasPrefix("attachment; filename=\"audit-") == true)
            let lines = csv.text.components(separatedBy: "\r\n").filter { !$0.isEmpty }
            #expect(lines.first == "id,at,actor,action,target_id,request_id,detail")
            let all = try await f.cp.client.audit(caller: f.admin, limit: 500).entries
            #expect(lines.count == all.count + 1 && lines.contains { $0.contains(",mesh.disable,") }, "\(lines.count) lines, \(all.count) entries")
            let jsonl = try await client.send(.get, "/api/mesh/audit/export?format=jsonl&action=device", token: f.tokens.admin)
            #expect(jsonl.headers[.contentType]?.hasPrefix("application/x-ndjson") == true)
            let objects = jsonl.text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(!objects.isEmpty && objects.allSatisfy { ($0["action"] as? String)?.hasPrefix("device.") == true })
            #expect(try await client.send(.get, "/api/mesh/audit/export?format=xml", token: f.tokens.admin).status == 400)
            #expect(try await client.send(.get, "/api/mesh/audit/export", token: f.tokens.ownerA).status == 403)

            // A valid token for a user that does not exist: 401, so the page signs out.
            let ghost = try await f.minter.user(tenantID: f.tenant.id, userID: UUID().uuidString.lowercased(), role: .admin)
            for (method, path) in [(HTTPRequest.Method.get, "/api/mesh/devices"), (.get, "/api/license/orbit-features"), (.post, "/api/mesh/refresh"),
                                   (.get, "/api/mesh/nodes"), (.get, "/api/mesh/settings")] {
                let r = try await client.send(method, path, token: ghost)
                #expect(r.status == 401 && r.errorCode == "unauthenticated" && r.headers[.wwwAuthenticate] != nil, "\(path): \(r.status) \(r.text)")
            }
            let ghostCreate = try await client.send(.post, "/api/mesh/devices", token: ghost, body: deviceBody("x"))
            #expect(ghostCreate.status == 401, "\(ghostCreate.text)")
        }

        // A tenant without nodes: creation and refresh are refused with what to do.
        let bare = try await f.cp.tenant(.pro)
        let bareAdmin = try await f.cp.user(bare, .admin)
        let bareToken = try await f.minter.user(tenantID: bare.id, userID: bareAdmin.userID, role: .admin)
        try await app.test(.router) { client in
            let r = try await client.send(.post, "/api/mesh/devices", token: bareToken, body: deviceBody("x"))
            #expect(r.status == 409 && r.errorCode == "failed_precondition" && (r.error["message"] as? String)?.contains("enroll a node first") == true,
                    "\(r.text)")
            let refresh = try await client.send(.post, "/api/mesh/refresh", token: bareToken)
            #expect(refresh.status == 409 && refresh.errorCode == "failed_precondition", "\(refresh.text)")
            // The other tenant's node answers nothing: none reached.
            let none = try await client.send(.post, "/api/mesh/refresh", token: f.tokens.otherAdmin)
            #expect(none.status == 503 && none.headers[nodesReachedHeader] == "0" && none.headers[nodesTotalHeader] == "1", "\(none.text)")
        }
        try await f.stop()
    }
}

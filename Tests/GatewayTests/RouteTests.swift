import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshBus
import MeshClient
import MeshAuth
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import Testing

extension GatewayTests {
    /// Creating, listing and deleting devices, and every way a request can be refused.
    @Test func devicesAndTheirErrors() async throws {
        let f = try await Fixture.start("devices")
        let app = try await f.application()
        try await app.test(.router) { client in
            // Created: the config and QR code, once, and never stored by anything on the way.
            let created = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("Zoë's iPhone", type: "iphone"),
                                                headers: [requestIDHeader: "test-create-1"])
            #expect(created.status == 201, "\(created.text)")
            let d = created.json
            let id = try #require(d["id"] as? String)
            #expect(d["label"] as? String == "Zoë's iPhone")
            #expect(d["slug"] as? String == "zoes-iphone")
            #expect(d["dns_name"] as? String == "zoes-iphone.quazzar.mesh")
            #expect(d["type"] as? String == "iphone")
            #expect((d["mesh_ips"] as? [String])?.count == 2)
            #expect((d["created_at"] as? String)?.hasSuffix("Z") == true)
            let config = try #require(d["config"] as? String)
            #expect(config.contains("PrivateKey = "))
            #expect((d["qr_svg"] as? String)?.contains("<svg") == true)
            #expect(d["private_key_notice"] as? String == CreatedDeviceJSON.notice)
            #expect(created.headers[.cacheControl] == "no-store")
            #expect(created.headers[.location] == "/api/mesh/devices/\(id)")
            #expect(created.headers[requestIDHeader] == "test-create-1")

            // Listed without the key; a device that never handshook has nulls.
            let privateKey = config.split(separator: "\n").first { $0.hasPrefix("PrivateKey") }!.split(separator: "=", maxSplits: 1)[1]
                .trimmingCharacters(in: .whitespaces)
            let list = try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerA)
            #expect(list.status == 200)
            #expect(!list.text.contains(privateKey) && !list.text.contains("PrivateKey"), "the key is never served again")
            let listed = try #require((list.json["devices"] as? [[String: Any]])?.first { $0["id"] as? String == id })
            #expect(listed["last_handshake_at"] is NSNull)
            #expect(listed["endpoint"] is NSNull)
            #expect(listed["online"] as? Bool == false)
            #expect(listed["rx_bytes"] as? Int == 0 && listed["tx_bytes"] as? Int == 0)
            #expect(Set(listed.keys).isSuperset(of: ["id", "label", "slug", "dns_name", "type", "mesh_ips", "created_at", "last_handshake_at",
                                                      "online", "rx_bytes", "tx_bytes", "endpoint"]))

            // The type defaults to other.
            let plain = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: #"{"label":"box"}"#)
            #expect(plain.status == 201 && plain.json["type"] as? String == "other")

            // Strict decoding: every malformed body is a 400 that names the problem.
            let bad: [(String, String?)] = [
                (#"{"label":"x","extra":1}"#, "extra"),
                (#"{"label":"x","type":"tablet"}"#, "type"),
                (#"{"label":"x","type":"IPHONE"}"#, "type"),
                (#"{"label":"x","type":3}"#, "type"),
                (#"{"type":"laptop"}"#, "label"),
                (#"{"label":7}"#, "label"),
                (#"{"label":""}"#, "label"),
                (#"{"label":"\#(String(repeating: "x", count: 200))"}"#, "label"),
                ("not json", nil),
                ("[1,2]", nil),
                ("", nil),
            ]
            for (body, field) in bad {
                let r = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: body)
                #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(body): \(r.status) \(r.text)")
                if let field { #expect(r.error["field"] as? String == field, "\(body): \(r.text)") }
            }

            // Bodies over the limit: 413, by Content-Length or by what arrives.
            let big = #"{"label":"\#(String(repeating: "y", count: 20_000))"}"#
            let tooBig = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: big)
            #expect(tooBig.status == 413 && tooBig.errorCode == "payload_too_large", "\(tooBig.text)")
            let cpTooBig = try await client.send(.post, "/cp/api/v1/mesh/devices", token: f.tokens.ownerB, body: big)
            #expect(cpTooBig.status == 413)

            // Rate limit: five per minute per user, then 429 with Retry-After.
            for i in 0..<4 {
                let r = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: deviceBody("b\(i)"))
                #expect(r.status == 201, "\(r.text)")
            }
            let limited = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerB, body: deviceBody("b-too-many"))
            #expect(limited.status == 429 && limited.errorCode == "rate_limited", "\(limited.text)")
            let retry = try #require(limited.headers[.retryAfter].flatMap { Int($0) })
            #expect((1...60).contains(retry))
            #expect(limited.error["retry_after_seconds"] as? Int == retry)
            // Re-issuing draws on the same budget: 429 with Retry-After too, on both surfaces.
            let mine = try #require((try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerB).json["devices"] as? [[String: Any]])?
                .first?["id"] as? String)
            for path in ["/api/mesh/devices/\(mine)/reissue", "/cp/api/v1/mesh/devices/\(mine)/reissue"] {
                let again = try await client.send(.post, path, token: f.tokens.ownerB)
                #expect(again.status == 429 && again.errorCode == "rate_limited" && again.headers[.retryAfter] != nil, "\(path): \(again.text)")
            }
            #expect(try await client.send(.post, "/api/mesh/devices/not-a-uuid/reissue", token: f.tokens.ownerB).status == 404)
            #expect(try await client.send(.post, "/api/mesh/devices/\(mine)/reissue", token: f.tokens.ownerA).status == 404, "another owner's device")

            // Delete: twice is 404 the second time; not a UUID is 404 too.
            #expect(try await client.send(.delete, "/api/mesh/devices/\(id)", token: f.tokens.ownerA).status == 204)
            #expect(try await client.send(.delete, "/api/mesh/devices/\(id)", token: f.tokens.ownerA).status == 404)
            #expect(try await client.send(.delete, "/api/mesh/devices/not-a-uuid", token: f.tokens.ownerA).status == 404)
            #expect(try await client.send(.delete, "/api/mesh/devices/\(UUID())", token: f.tokens.admin).status == 404)

            // The request id reached the service: the audit log has it.
            let audit = try await client.send(.get, "/api/mesh/audit?limit=500", token: f.tokens.admin)
            #expect(audit.status == 200)
            let entries = audit.json["entries"] as? [[String: Any]] ?? []
            #expect(entries.contains { $0["request_id"] as? String == "test-create-1" && $0["action"] as? String == "device.create" }, "\(audit.text.prefix(500))")

            // Audit paging and its parameters.
            let page1 = try await client.send(.get, "/api/mesh/audit?limit=2", token: f.tokens.admin)
            #expect((page1.json["entries"] as? [Any])?.count == 2)
            let next = try #require(page1.json["next_before"] as? Int)
            let page2 = try await client.send(.get, "/api/mesh/audit?limit=2&before=\(next)", token: f.tokens.admin)
            let ids2 = (page2.json["entries"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? Int }
            #expect(!ids2.isEmpty && ids2.allSatisfy { $0 < next })
            for q in ["limit=0", "limit=501", "limit=x", "before=-1", "before=x"] {
                let r = try await client.send(.get, "/api/mesh/audit?\(q)", token: f.tokens.admin)
                #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(q): \(r.text)")
            }

            // License feature: a Team tenant, devices counted.
            let lic = try await client.send(.get, "/api/license/orbit-features", token: f.tokens.ownerA)
            let mesh = try #require(lic.json["mesh_vpn"] as? [String: Any])
            #expect(mesh["plan"] as? String == "team" && mesh["cap"] as? Int == 100 && mesh["diagnostics"] as? String == "audit_log")
            #expect(mesh["used"] as? Int == 5 && mesh["require_saml"] as? Bool == false && mesh["enabled"] as? Bool == true)

            // Unknown routes and methods are JSON 404s.
            let nowhere = try await client.send(.get, "/api/mesh/nowhere", token: f.tokens.admin)
            #expect(nowhere.status == 404 && nowhere.errorCode == "not_found")
            // A known path with another method: 405 with what it takes.
            let put = try await client.send(.put, "/api/mesh/devices", token: f.tokens.admin)
            #expect(put.status == 405 && put.errorCode == "method_not_allowed" && put.headers[.allow] == "GET, HEAD, POST", "\(put.headers) \(put.text)")
            let put2 = try await client.send(.put, "/api/mesh/devices/\(UUID())/suspend", token: f.tokens.admin)
            #expect(put2.status == 405 && put2.headers[.allow] == "POST", "\(put2.status) \(put2.headers) \(put2.text)")
            #expect(try await client.send(.put, "/api/mesh/nowhere/else", token: f.tokens.admin).status == 404)

            // A sane X-Request-Id is echoed, anything else replaced.
            let echoed = try await client.send(.get, "/healthz", headers: [requestIDHeader: "abc.DEF_1:2-3"])
            #expect(echoed.headers[requestIDHeader] == "abc.DEF_1:2-3")
            let replaced = try await client.send(.get, "/healthz", headers: [requestIDHeader: "no spaces <here>"])
            #expect(replaced.headers[requestIDHeader] != "no spaces <here>" && replaced.headers[requestIDHeader]?.count == 36)

            // The web page and its settings.
            let page = try await client.send(.get, "/vpn/mesh/")
            #expect(page.status == 200 && page.headers[.contentType]?.hasPrefix("text/html") == true)
            let ui = try await client.send(.get, "/api/mesh/ui-config")
            #expect(ui.json["pritunl_configured"] as? Bool == false && ui.json["mesh_domain"] as? String == "quazzar.mesh")
        }

        // Plan caps: the Free plan stops at three devices with a body naming plan and cap.
        let free = try await f.cp.readyTenant(.free)
        let freeUser = try await f.cp.user(free)
        let freeToken = try await f.minter.user(tenantID: free.id, userID: freeUser.userID, role: .owner)
        // SAML-gated Enterprise tenant: creation needs amr saml.
        let ent = try await f.cp.readyTenant(.enterprise, requireSaml: true)
        let entUser = try await f.cp.user(ent)
        let noSaml = try await f.minter.user(tenantID: ent.id, userID: entUser.userID, role: .owner)
        let saml = try await f.minter.user(tenantID: ent.id, userID: entUser.userID, role: .owner, amr: ["saml"])
        let app2 = try await f.application(configuration: GatewayConfiguration(nodeID: f.node.id, pritunlConfigured: true))
        try await app2.test(.router) { client in
            for i in 0..<3 {
                #expect(try await client.send(.post, "/api/mesh/devices", token: freeToken, body: deviceBody("f\(i)")).status == 201)
            }
            let capped = try await client.send(.post, "/api/mesh/devices", token: freeToken, body: deviceBody("f4"))
            #expect(capped.status == 403 && capped.errorCode == "quota_exceeded", "\(capped.text)")
            #expect(capped.error["plan"] as? String == "free" && capped.error["cap"] as? Int == 3)
            #expect((capped.error["message"] as? String)?.contains("Free plan allows 3") == true)

            let refused = try await client.send(.post, "/api/mesh/devices", token: noSaml, body: deviceBody("laptop"))
            #expect(refused.status == 403 && refused.errorCode == "permission_denied", "\(refused.text)")
            #expect(try await client.send(.post, "/api/mesh/devices", token: saml, body: deviceBody("laptop")).status == 201)
            let lic = try await client.send(.get, "/api/license/orbit-features", token: saml).json["mesh_vpn"] as? [String: Any] ?? [:]
            #expect(lic["cap"] is NSNull && lic["plan"] as? String == "enterprise" && lic["require_saml"] as? Bool == true)

            #expect(try await client.send(.get, "/api/mesh/ui-config").json["pritunl_configured"] as? Bool == true)
        }
        await f.stop()
    }

    /// State, peers (per plan), refresh and the node's own peer list.
    @Test func nodeRoutes() async throws {
        let f = try await Fixture.start("nodes", plan: .free)
        let app = try await f.application()
        try await app.test(.router) { client in
            let state = try await client.send(.get, "/api/mesh/state", token: f.tokens.ownerA)
            #expect(state.status == 200, "\(state.text)")
            let s = state.json
            #expect(s["active"] as? Bool == true && s["listen_port"] as? Int == 51820 && s["peer_count"] as? Int == 2)
            #expect(s["mesh_ip"] as? String == "100.64.0.1" && s["node_id"] as? String == f.node.id)
            let dns = try #require(s["dns_status"] as? [String: Any])
            #expect(dns["serving"] as? Bool == true && dns["zone"] as? String == "quazzar.mesh" && dns["record_count"] as? Int == 3)
            #expect(dns["last_update"] as? String == "2023-11-14T22:13:20.000Z" && dns["listen"] as? [String] == ["100.64.0.1:53"])

            // Admins may look at another node of the tenant; owners may not choose.
            let other = try await client.send(.get, "/api/mesh/state?node_id=\(f.otherNode.id)", token: f.tokens.admin)
            #expect(other.status == 200 && other.json["node_id"] as? String == f.otherNode.id)
            #expect(try await client.send(.get, "/api/mesh/state?node_id=\(f.otherNode.id)", token: f.tokens.ownerA).status == 403)
            #expect(try await client.send(.get, "/api/mesh/state?node_id=nope", token: f.tokens.admin).status == 400)
            #expect(try await client.send(.get, "/api/mesh/state?node_id=\(UUID())", token: f.tokens.admin).status == 404)

            // Free plan: basic state only.
            let basic = try await client.send(.get, "/api/mesh/peers", token: f.tokens.admin)
            #expect(basic.status == 200 && basic.json["diagnostics"] as? String == "basic_state", "\(basic.text)")
            let bp = try #require((basic.json["peers"] as? [[String: Any]])?.first)
            #expect(bp["public_key"] is String && bp["allowed_ips"] as? [String] == ["100.64.1.2/32", "fd00::1:2/128"] && bp["dns_name"] is String)
            #expect(bp["rx_bytes"] == nil && bp["tx_bytes"] == nil && bp["endpoint"] == nil && bp["last_handshake_at"] == nil)
        }
        // Pro: per-peer stats too.
        var up = Mesh_V1_UpdateTenantRequest()
        up.tenantID = f.tenant.id
        up.plan = .pro
        _ = try await f.cp.client.updateTenant(up)
        try await app.test(.router) { client in
            let stats = try await client.send(.get, "/api/mesh/peers", token: f.tokens.admin)
            #expect(stats.json["diagnostics"] as? String == "per_peer_stats")
            let p = try #require((stats.json["peers"] as? [[String: Any]])?.first)
            #expect(p["rx_bytes"] as? Int == 1234 && p["tx_bytes"] as? Int == 5678 && p["endpoint"] as? String == "203.0.113.7:40000")
            #expect(p["last_handshake_at"] as? String == "2023-11-14T22:13:20.000Z")

            // Refresh reaches every node of the tenant, and says how many.
            let refreshed = try await client.send(.post, "/api/mesh/refresh", token: f.tokens.admin)
            #expect(refreshed.status == 204 && refreshed.headers[nodesReachedHeader] == "2" && refreshed.headers[nodesTotalHeader] == "2")
            #expect(Set(f.fakes.calls.refreshes.withLock { $0 }) == [f.node.id, f.otherNode.id])

            // The node's own peer list, from FanoutSvc's SyncFromCP.
            let sync = try await client.send(.get, "/cp/api/v1/mesh/peers/\(f.node.id)", token: f.tokens.node)
            #expect(sync.status == 200, "\(sync.text)")
            #expect(sync.json["tenant_id"] as? String == f.tenant.id && sync.json["revision"] as? Int == 7)
            #expect((sync.json["self"] as? [String: Any])?["hub"] as? Bool == true)
            #expect((sync.json["peers"] as? [[String: Any]])?.first?["kind"] as? String == "device")
            #expect(f.fakes.calls.syncs.withLock { $0 } == ["\(f.tenant.id)/\(f.node.id)"])
            // Uppercase spelling of its own id is still its own id; anything else is 404.
            #expect(try await client.send(.get, "/cp/api/v1/mesh/peers/\(f.node.id.uppercased())", token: f.tokens.node).status == 200)
            #expect(try await client.send(.get, "/cp/api/v1/mesh/peers/garbage", token: f.tokens.node).status == 404)

            // Audit needs Team: a Pro admin is refused by ProvisionSvc.
            let audit = try await client.send(.get, "/api/mesh/audit", token: f.tokens.admin)
            #expect(audit.status == 403 && audit.errorCode == "permission_denied")
        }

        // A gateway with no node of its own says so.
        let bare = try await f.application(configuration: GatewayConfiguration(nodeID: ""))
        try await bare.test(.router) { client in
            let r = try await client.send(.get, "/api/mesh/state", token: f.tokens.ownerA)
            #expect(r.status == 503 && r.errorCode == "unavailable")
        }
        await f.stop()
    }

    /// Services that are missing or slow give 503 or 504 within the deadline, never a hang.
    @Test func unavailableAndSlowServices() async throws {
        let f = try await Fixture.start("failures")
        // A registered node whose NodeApplier is not running, and one that answers too slowly.
        let (silent, _) = try await f.cp.node(f.tenant, admin: f.admin, name: "silent", endpoint: "198.51.100.3:51820")
        let (slow, _) = try await f.cp.node(f.tenant, admin: f.admin, name: "slow", endpoint: "198.51.100.4:51820")
        let slowFake = try await FakeNodeServices(bus: f.cp.bus, nodes: [slow.id: f.tenant.id], stateDelay: .seconds(3))
        var config = GatewayConfiguration(nodeID: silent.id)
        config.nodeTimeout = .milliseconds(500)
        let app = try await f.application(configuration: config)
        try await app.test(.router) { client in
            let clock = ContinuousClock()
            var start = clock.now
            let none = try await client.send(.get, "/api/mesh/state", token: f.tokens.ownerA)
            #expect(none.status == 503 && none.errorCode == "unavailable", "\(none.text)")
            #expect(clock.now - start < .seconds(2))
            start = clock.now
            let late = try await client.send(.get, "/api/mesh/state?node_id=\(slow.id)", token: f.tokens.admin)
            #expect(late.status == 504 && late.errorCode == "deadline_exceeded", "\(late.text)")
            #expect(clock.now - start < .seconds(2))
            // Refresh still answers, within its own bound, although one node never answers: 3 of 4.
            let refreshed = try await client.send(.post, "/api/mesh/refresh", token: f.tokens.admin)
            #expect(refreshed.status == 204 && refreshed.headers[nodesReachedHeader] == "3" && refreshed.headers[nodesTotalHeader] == "4",
                    "\(refreshed.headers)")
            #expect(try await client.send(.get, "/readyz").status == 200)
        }
        await slowFake.stop()

        // No ProvisionSvc at all: a bus with nothing on it.
        let empty = try TestNatsServer(name: "gw-empty")
        let bus = try await TestEnvironment.connectBus("gw-empty", url: empty.url)
        let lonely = try await f.application(bus: bus)
        try await lonely.test(.router) { client in
            let r = try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerA)
            #expect(r.status == 503 && r.errorCode == "unavailable", "\(r.text)")
            let ready = try await client.send(.get, "/readyz")
            #expect(ready.status == 503 && (ready.json["checks"] as? [String: String])?["ProvisionSvc"] != "ok")
            #expect(try await client.send(.get, "/healthz").status == 200)
        }
        await bus.close()
        await empty.stop()
        await f.stop()
    }

    /// A node's peer list through the real FanoutSvc.
    @Test func nodePeerListFromFanoutSvc() async throws {
        let f = try await Fixture.start("fanout", realFanout: true)
        let device = try await f.cp.client.createDevice(caller: f.ownerA, label: "phone", type: .iphone).device
        let app = try await f.application()
        try await app.test(.router) { client in
            // The device reaches FanoutSvc through ProvisionSvc's outbox relay, just after the reply.
            var r = try await client.send(.get, "/cp/api/v1/mesh/peers/\(f.node.id)", token: f.tokens.node)
            let deadline = ContinuousClock.now + .seconds(20)
            while !r.text.contains(device.id), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
                r = try await client.send(.get, "/cp/api/v1/mesh/peers/\(f.node.id)", token: f.tokens.node)
            }
            #expect(r.status == 200, "\(r.text)")
            let me = try #require(r.json["self"] as? [String: Any])
            #expect(me["id"] as? String == f.node.id && me["kind"] as? String == "node" && me["hub"] as? Bool == true)
            let ids = Set((r.json["peers"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
            #expect(ids == [f.otherNode.id, device.id], "\(r.text.prefix(600))")
            #expect(r.json["ipv4_prefix"] as? String == f.tenant.ipv4Prefix && (r.json["revision"] as? Int ?? 0) >= 3)
            // Another node asking for this node's list, and a node of another tenant: 404.
            #expect(try await client.send(.get, "/cp/api/v1/mesh/peers/\(f.node.id)", token: f.tokens.otherNode).status == 404)
            let stranger = try await f.minter.node(tenantID: f.otherTenant.id, nodeID: f.node.id)
            let s = try await client.send(.get, "/cp/api/v1/mesh/peers/\(f.node.id)", token: stranger)
            #expect(s.status == 404 && s.errorCode == "not_found", "\(s.text)")
        }
        await f.stop()
    }
}

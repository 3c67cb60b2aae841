import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshAuth
import MeshBus
import MeshDomain
import MeshKeys
import MeshProto
import MeshStore
import MeshTestSupport
import Testing

/// A JSON body.
func jsonBody(_ o: [String: Any]) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
}

/// An ISO 8601 timestamp with milliseconds, as the API writes them.
func isoDate(_ s: String?) -> Date? {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return s.flatMap { f.date(from: $0) }
}

/// The stand-in for a Pritunl web server (`Tests/pritunl/pritunl_ping.py`), as a real process.
final class PritunlPing: Sendable {
    let process: ManagedProcess
    let port: Int

    init(_ name: String, pingStatus: Int = 200, logDir: URL) async throws {
        let p = try ManagedProcess(name: "pritunl-\(name)-\(Nuid.short())", executable: "/usr/bin/python3",
                                   arguments: [TestEnvironment.repoRoot.appendingPathComponent("Tests/pritunl/pritunl_ping.py").path,
                                               "--ping-status", "\(pingStatus)"],
                                   environment: ["PYTHONUNBUFFERED": "1"], logDir: logDir)
        var port: Int?
        let deadline = ContinuousClock.now + .seconds(30)
        while port == nil && ContinuousClock.now < deadline && p.isRunning {
            for line in p.log().split(separator: "\n") where line.hasPrefix("{") {
                if let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], o["event"] as? String == "ready" {
                    port = o["port"] as? Int
                }
            }
            if port == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard let port else {
            await p.terminate()
            throw TestSetupError.failed("the Pritunl stand-in did not start: \(p.log().suffix(2000))")
        }
        process = p
        self.port = port
    }

    var url: URL { URL(string: "https://127.0.0.1:\(port)")! }

    func stop() async { await process.terminate(timeout: .seconds(5)) }
}

extension GatewayTests {
    /// The banner follows a probe of the configured Pritunl address; the flag still forces it.
    @Test func pritunlProbe() async throws {
        let f = try await Fixture.start("pritunl-probe")
        let pritunl = try await PritunlPing("up", logDir: f.cp.logDir)
        let notPritunl = try await PritunlPing("other", pingStatus: 404, logDir: f.cp.logDir)
        let logger = TestEnvironment.logger("probe")
        let probe = PritunlProbe(url: pritunl.url, timeout: .seconds(5), logger: logger)
        let verifying = PritunlProbe(url: pritunl.url, timeout: .seconds(5), verifyTLS: true, logger: logger)
        let other = PritunlProbe(url: notPritunl.url, timeout: .seconds(5), logger: logger)
        let app = try await f.application(pritunlProbe: probe)
        try await app.test(.router) { client in
            // Before the first probe only the flag counts, and it is off.
            #expect(try await client.send(.get, "/api/mesh/ui-config").json["pritunl_configured"] as? Bool == false)

            let found = await probe.probe()
            #expect(found.detected && found.detail == "HTTP 200", "\(found)")
            #expect(try await client.send(.get, "/api/mesh/ui-config").json["pritunl_configured"] as? Bool == true)
            let m = try await client.send(.get, "/api/mesh/migration", token: f.tokens.admin)
            #expect(m.status == 200, "\(m.text)")
            let p = try #require(m.json["pritunl"] as? [String: Any])
            let pp = try #require(p["probe"] as? [String: Any])
            #expect(p["banner"] as? Bool == true && p["configured"] as? Bool == false)
            #expect(pp["detected"] as? Bool == true && pp["url"] as? String == pritunl.url.absoluteString && pp["answer"] as? String == "HTTP 200")
            #expect((pp["checked_at"] as? String)?.hasSuffix("Z") == true)

            // Its certificate is self-signed, as Pritunl's own: a probe told to verify it finds nothing.
            let refused = await verifying.probe()
            #expect(!refused.detected && refused.detail.hasPrefix("no answer"), "\(refused)")
            // A server that answers, but not as Pritunl does, is not Pritunl.
            let wrong = await other.probe()
            #expect(!wrong.detected && wrong.detail == "HTTP 404", "\(wrong)")

            // Pritunl goes away: the banner goes with it at the next probe.
            await pritunl.stop()
            let gone = await probe.probe()
            #expect(!gone.detected, "\(gone)")
            #expect(try await client.send(.get, "/api/mesh/ui-config").json["pritunl_configured"] as? Bool == false)
        }
        // The flag alone still shows the banner, with no probe at all.
        let flagged = try await f.application(configuration: GatewayConfiguration(nodeID: f.node.id, pritunlConfigured: true))
        try await flagged.test(.router) { client in
            #expect(try await client.send(.get, "/api/mesh/ui-config").json["pritunl_configured"] as? Bool == true)
            let p = try await client.send(.get, "/api/mesh/migration", token: f.tokens.admin).json["pritunl"] as? [String: Any] ?? [:]
            #expect(p["banner"] as? Bool == true && p["configured"] as? Bool == true && p["probe"] is NSNull)
        }
        for pr in [probe, verifying, other] { try await pr.shutdown() }
        await notPritunl.stop()
        try await f.stop()
    }

    /// The walk-through: every user with devices and the checklist item, kept in the database,
    /// admins only, audited.
    @Test func pritunlWalkThrough() async throws {
        let f = try await Fixture.start("walkthrough")
        let app = try await f.application()
        let replica = try await f.application()
        try await app.test(.router) { client in
            #expect(try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("Anna's laptop", type: "laptop")).status == 201)
            let m = try await client.send(.get, "/api/mesh/migration", token: f.tokens.admin)
            #expect(m.status == 200 && m.headers[.cacheControl] == "no-store", "\(m.text)")
            let users = try #require(m.json["users"] as? [[String: Any]])
            func row(_ list: [[String: Any]], _ id: String) -> [String: Any]? { list.first { ($0["user"] as? [String: Any])?["id"] as? String == id } }
            let a = try #require(row(users, f.ownerA.userID))
            #expect(row(users, f.ownerB.userID) != nil && row(users, f.admin.userID) != nil)
            #expect((a["devices"] as? [[String: Any]])?.map { $0["label"] as? String } == ["Anna's laptop"])
            #expect(a["pritunl_revoked"] as? Bool == false && a["checked_at"] is NSNull && a["checked_by"] is NSNull)
            #expect((row(users, f.ownerB.userID)?["devices"] as? [Any])?.isEmpty == true)
            #expect(!users.contains { ($0["user"] as? [String: Any])?["tenant_id"] as? String == f.otherTenant.id })

            // Owners are refused; the walk-through is the admins'.
            let owner = try await client.send(.get, "/api/mesh/migration", token: f.tokens.ownerA)
            #expect(owner.status == 403 && owner.errorCode == "permission_denied")

            // The checklist item is set, kept, and read back by another gateway.
            let set = try await client.send(.put, "/api/mesh/migration/users/\(f.ownerA.userID)", token: f.tokens.admin, body: #"{"pritunl_revoked": true}"#)
            #expect(set.status == 200, "\(set.text)")
            #expect(set.json["pritunl_revoked"] as? Bool == true && set.json["checked_by"] as? String == "user:\(f.admin.userID)")
            #expect((set.json["checked_at"] as? String)?.hasSuffix("Z") == true)
            for bad in [#"{"pritunl_revoked": 1}"#, #"{"pritunl_revoked": "yes"}"#, "{}", #"{"pritunl_revoked": true, "x": 1}"#] {
                let r = try await client.send(.put, "/api/mesh/migration/users/\(f.ownerB.userID)", token: f.tokens.admin, body: bad)
                #expect(r.status == 400 && r.errorCode == "invalid_argument", "\(bad): \(r.text)")
            }
            let unknown = try await client.send(.put, "/api/mesh/migration/users/\(UUID().lowercasedText)", token: f.tokens.admin, body: #"{"pritunl_revoked": true}"#)
            #expect(unknown.status == 404 && unknown.errorCode == "not_found")
            let foreign = try await client.send(.put, "/api/mesh/migration/users/\(f.ownerA.userID)", token: f.tokens.otherAdmin, body: #"{"pritunl_revoked": false}"#)
            #expect(foreign.status == 404, "\(foreign.text)")
            let byOwner = try await client.send(.put, "/api/mesh/migration/users/\(f.ownerA.userID)", token: f.tokens.ownerA, body: #"{"pritunl_revoked": false}"#)
            #expect(byOwner.status == 403)
        }
        try await replica.test(.router) { client in
            let users = try await client.send(.get, "/api/mesh/migration", token: f.tokens.admin).json["users"] as? [[String: Any]] ?? []
            let a = users.first { ($0["user"] as? [String: Any])?["id"] as? String == f.ownerA.userID }
            #expect(a?["pritunl_revoked"] as? Bool == true)
            let b = users.first { ($0["user"] as? [String: Any])?["id"] as? String == f.ownerB.userID }
            #expect(b?["pritunl_revoked"] as? Bool == false)
            // Unticked again: kept too.
            #expect(try await client.send(.put, "/api/mesh/migration/users/\(f.ownerA.userID)", token: f.tokens.admin,
                                          body: #"{"pritunl_revoked": false}"#).json["pritunl_revoked"] as? Bool == false)
        }
        let stored = try await f.cp.store.query("SELECT pritunl_revoked, checked_by FROM provision.migration_checklist WHERE user_id = $1",
                                                UUID(text: f.ownerA.userID)!)
        #expect(stored.count == 1)
        #expect(try stored.first?.decode("pritunl_revoked", as: Bool.self) == false)
        let audit = try await f.cp.client.audit(caller: f.admin, limit: 100).entries.filter { $0.action == "migration.check" }
        #expect(audit.map(\.detail) == ["Pritunl access revoked: no", "Pritunl access revoked: yes"], "\(audit)")
        #expect(audit.allSatisfy { $0.targetID == f.ownerA.userID && $0.actor == "user:\(f.admin.userID)" })
        try await f.stop()
    }

    /// One-time config links: the key is made when the link is opened, once; a second use or an
    /// expired link is 410, a guessed one 404; every step audited.
    @Test func oneTimeConfigLinks() async throws {
        let f = try await Fixture.start("links", environment: ["MESH_RATE_LIMIT": "0"])
        let app = try await f.application()
        try await app.test(.router) { client in
            func devices(_ token: String) async throws -> [[String: Any]] {
                try await client.send(.get, "/api/mesh/devices", token: token).json["devices"] as? [[String: Any]] ?? []
            }
            func link(_ token: String, _ body: [String: Any]) async throws -> Reply {
                try await client.send(.post, "/api/mesh/links", token: token, body: jsonBody(body))
            }
            func open(_ t: String) async throws -> Reply { try await client.send(.post, "/api/mesh/links/open", body: jsonBody(["token": t])) }

            let made = try await link(f.tokens.admin, ["label": "Zoë's phone", "type": "iphone", "user_id": f.ownerA.userID, "expires_in": 600])
            #expect(made.status == 201 && made.headers[.cacheControl] == "no-store", "\(made.text)")
            let token = try #require(made.json["token"] as? String)
            let linkID = try #require(made.json["id"] as? String)
            #expect(ConfigLinkFormat.isWellFormed(token))
            #expect(made.json["url"] as? String == "/vpn/mesh/link.html#\(token)")
            #expect(made.json["user_id"] as? String == f.ownerA.userID && made.json["used_at"] is NSNull && made.json["device_id"] is NSNull)
            #expect(made.json["created_by"] as? String == "user:\(f.admin.userID)")
            let expires = try #require(isoDate(made.json["expires_at"] as? String))
            let created = try #require(isoDate(made.json["created_at"] as? String))
            #expect(abs(expires.timeIntervalSince(created) - 600) < 2)

            // Nothing exists yet: no device, no key; only the token's hash is stored.
            #expect(try await devices(f.tokens.ownerA).isEmpty)
            let rows = try await f.cp.store.query("SELECT token_hash FROM provision.config_links WHERE id = $1", UUID(text: linkID)!)
            #expect(try rows.first?.decode("token_hash", as: ByteA.self).bytes == SignInSecrets.tokenHash(token))
            let pending = try await client.send(.get, "/api/mesh/migration", token: f.tokens.admin).json["users"] as? [[String: Any]] ?? []
            let aRow = pending.first { ($0["user"] as? [String: Any])?["id"] as? String == f.ownerA.userID }
            #expect((aRow?["pending_links"] as? [[String: Any]])?.map { $0["id"] as? String } == [linkID])
            #expect((aRow?["pending_links"] as? [[String: Any]])?.first?["token"] == nil, "a listed link never shows its token")

            // Guessed: 404 with a JSON body, whatever its shape.
            var rng = SystemRandomNumberGenerator()
            for guess in [ConfigLinkFormat.make(using: &rng), "qml_short", String(token.dropLast()) + (token.hasSuffix("A") ? "B" : "A")] {
                let r = try await open(guess)
                #expect(r.status == 404 && r.errorCode == "not_found", "\(guess): \(r.text)")
            }

            // Opened: the device is made now, for the link's user, with a key nobody saw before.
            let first = try await open(token)
            #expect(first.status == 200 && first.headers[.cacheControl] == "no-store", "\(first.text)")
            let config = try #require(first.json["config"] as? String)
            #expect(first.json["label"] as? String == "Zoë's phone" && first.json["type"] as? String == "iphone")
            #expect((first.json["qr_svg"] as? String)?.contains("<svg") == true)
            let privateKey = try #require(config.split(separator: "\n").first { $0.hasPrefix("PrivateKey = ") }.map { String($0.dropFirst(13)) })
            let listed = try await devices(f.tokens.ownerA)
            #expect(listed.count == 1 && listed.first?["id"] as? String == first.json["id"] as? String)
            #expect(listed.first?["owner_user_id"] as? String == f.ownerA.userID)
            let stored = try await f.cp.client.listDevices(caller: f.ownerA)
            #expect(stored.first?.publicKey == WireGuardKeyPair(privateKey: privateKey)?.publicKey)

            // Used once: the second use is 410 with a JSON body, and makes nothing.
            let second = try await open(token)
            #expect(second.status == 410 && second.errorCode == "gone", "\(second.text)")
            #expect((second.error["message"] as? String)?.contains("already used") == true)
            #expect(try await devices(f.tokens.ownerA).count == 1)

            // Expired: 410 too, and nothing made.
            let late = try await link(f.tokens.ownerA, ["label": "Late laptop", "type": "laptop"])
            #expect(late.status == 201, "\(late.text)")
            let lateToken = try #require(late.json["token"] as? String)
            _ = try await f.cp.store.query("UPDATE provision.config_links SET expires_at = now() - interval '1 second' WHERE id = $1 RETURNING id",
                                           UUID(text: late.json["id"] as? String ?? "")!)
            let expired = try await open(lateToken)
            #expect(expired.status == 410 && expired.errorCode == "gone", "\(expired.text)")
            #expect((expired.error["message"] as? String)?.contains("expired") == true)
            #expect(try await devices(f.tokens.ownerA).count == 1)

            // Two people open the same link at once: exactly one gets the config.
            let raced = try await link(f.tokens.admin, ["label": "Raced", "user_id": f.ownerB.userID])
            let racedToken = try #require(raced.json["token"] as? String)
            async let r1 = open(racedToken)
            async let r2 = open(racedToken)
            let statuses = [try await r1.status, try await r2.status].sorted()
            #expect(statuses == [200, 410], "\(statuses)")
            #expect(try await devices(f.tokens.ownerB).count == 1)

            // Who may make a link for whom; bad input.
            #expect(try await link(f.tokens.ownerB, ["label": "Not yours", "user_id": f.ownerA.userID]).status == 404)
            #expect(try await link(f.tokens.otherAdmin, ["label": "Other tenant", "user_id": f.ownerA.userID]).status == 404)
            #expect(try await link(f.tokens.ownerB, ["label": "Mine"]).status == 201)
            for (body, field) in [(["label": "x", "expires_in": 10], "expires_in"), (["label": "x", "expires_in": 700_000], "expires_in"),
                                  (["label": "x", "type": "toaster"], "type"), (["type": "laptop"], "label"),
                                  (["label": "x", "user_id": "nope"], "user_id")] as [([String: Any], String)] {
                let r = try await link(f.tokens.admin, body)
                #expect(r.status == 400 && r.error["field"] as? String == field, "\(body): \(r.text)")
            }
            #expect(try await client.send(.post, "/api/mesh/links", body: jsonBody(["label": "x"])).status == 401)
            #expect(try await client.send(.post, "/api/mesh/links/open", body: "{}").status == 400)
        }
        // Every step is in the audit log.
        let entries = try await f.cp.client.audit(caller: f.admin, limit: 200).entries
        let forLink = entries.filter { $0.targetID == entries.first { $0.action == "config_link.create" && $0.detail.contains("Zoë's phone") }?.targetID }
        #expect(Set(forLink.map(\.action)) == ["config_link.create", "config_link.open", "config_link.used", "config_link.refused"], "\(forLink)")
        #expect(entries.contains { $0.action == "config_link.refused" && $0.detail == "expired" })
        #expect(entries.contains { $0.action == "config_link.refused" && $0.detail == "used" })
        #expect(entries.contains { $0.action == "device.create" && $0.actor == "user:\(f.ownerA.userID)" })
        try await f.stop()
    }

    /// A link whose device cannot be made (the plan's cap) is handed back: it opens once a slot is free.
    @Test func configLinkGivenBackWhenTheCapStopsIt() async throws {
        let f = try await Fixture.start("link-cap", plan: .free, environment: ["MESH_RATE_LIMIT": "0"])
        let app = try await f.application()
        try await app.test(.router) { client in
            var ids: [String] = []
            for i in 0..<3 {
                let r = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("d\(i)"))
                ids.append(r.json["id"] as? String ?? "")
            }
            let made = try await client.send(.post, "/api/mesh/links", token: f.tokens.ownerA, body: jsonBody(["label": "Fourth"]))
            let token = try #require(made.json["token"] as? String)
            let capped = try await client.send(.post, "/api/mesh/links/open", body: jsonBody(["token": token]))
            #expect(capped.status == 403 && capped.errorCode == "quota_exceeded", "\(capped.text)")
            #expect(try await client.send(.delete, "/api/mesh/devices/\(ids[0])", token: f.tokens.ownerA).status == 204)
            let opened = try await client.send(.post, "/api/mesh/links/open", body: jsonBody(["token": token]))
            #expect(opened.status == 200 && opened.json["label"] as? String == "Fourth", "\(opened.text)")
            #expect(try await client.send(.post, "/api/mesh/links/open", body: jsonBody(["token": token])).status == 410)
        }
        try await f.stop()
    }
}

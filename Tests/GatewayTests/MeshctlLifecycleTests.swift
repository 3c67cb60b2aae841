import Foundation
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

extension GatewayTests {
    /// The real meshctl for the lifecycle: devices shown, renamed, suspended, resumed, given an expiry
    /// and filtered; the mesh switch and the default lifetime; the live node list; the audit log's
    /// filters and export.
    @Test func meshctlLifecycleCommands() async throws {
        let cp = try await ControlPlane.start("gw-meshctl-life", environment: ["MESH_RATE_LIMIT": "0"])
        let env = ["MESH_NATS_URL": cp.nats.url, "MESH_JWT_SECRET": String(decoding: testSecret, as: UTF8.self)]
        let bin = TestEnvironment.binDir.appendingPathComponent("meshctl").path
        func ctl(_ args: String...) throws -> String {
            let r = try run(bin, args, environment: env)
            guard r.status == 0 else { throw TestSetupError.failed("meshctl \(args.joined(separator: " ")) exited \(r.status): \(r.output)") }
            return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func json(_ text: String) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }

        let t = try await cp.readyTenant(.team)
        let admin = try await cp.user(t, .admin), owner = try await cp.user(t)
        let phone = try await cp.client.createDevice(caller: owner, label: "phone", type: .iphone).device
        _ = try await cp.client.createDevice(caller: owner, label: "laptop", type: .laptop)

        // Show, rename, suspend, resume, expiry.
        let shown = json(try ctl("device", "get", "--tenant", t.id, "--as", owner.userID, "--device", phone.id, "--json"))
        #expect(shown["id"] as? String == phone.id && shown["status"] as? String == "active" && shown["expires_at"] is NSNull)
        let renamed = json(try ctl("device", "rename", "--tenant", t.id, "--as", owner.userID, "--device", phone.id, "--label", "Zoë's phone", "--json"))
        #expect(renamed["dns_name"] as? String == "zoes-phone.quazzar.mesh")
        let suspended = json(try ctl("device", "suspend", "--tenant", t.id, "--as", owner.userID, "--device", phone.id, "--json"))
        #expect((suspended["device"] as? [String: Any])?["status"] as? String == "suspended" && (suspended["revision"] as? Int ?? 0) > 0)
        let listed = try ctl("device", "list", "--tenant", t.id, "--as", admin.userID, "--status", "suspended")
        #expect(listed.contains(phone.id) && listed.contains("suspended") && !listed.contains("laptop"), "\(listed)")
        #expect((json(try ctl("device", "list", "--tenant", t.id, "--as", admin.userID, "--type", "laptop", "--json"))["devices"] as? [Any])?.count == 1)
        let page = json(try ctl("device", "list", "--tenant", t.id, "--as", admin.userID, "--limit", "1", "--json"))
        let cursor = try #require(page["next_cursor"] as? String)
        let next = json(try ctl("device", "list", "--tenant", t.id, "--as", admin.userID, "--limit", "1", "--cursor", cursor, "--json"))
        #expect((next["devices"] as? [[String: Any]])?.first?["id"] as? String != (page["devices"] as? [[String: Any]])?.first?["id"] as? String)
        _ = try ctl("device", "resume", "--tenant", t.id, "--as", owner.userID, "--device", phone.id)
        let expiring = json(try ctl("device", "set-expiry", "--tenant", t.id, "--as", admin.userID, "--device", phone.id, "--at", "30d", "--json"))
        #expect(((expiring["device"] as? [String: Any])?["expires_at"] as? String)?.hasSuffix("Z") == true)
        let never = json(try ctl("device", "set-expiry", "--tenant", t.id, "--as", admin.userID, "--device", phone.id, "--at", "never", "--json"))
        #expect((never["device"] as? [String: Any])?["expires_at"] is NSNull)
        // An owner may not; a past time is refused; a bad one is a usage error.
        let byOwner = try await run(bin, ["device", "set-expiry", "--tenant", t.id, "--as", owner.userID, "--device", phone.id, "--at", "30d"], environment: env)
        #expect(byOwner.status == 1 && byOwner.output.contains("only an admin"), "\(byOwner.output)")
        let past = try await run(bin, ["device", "set-expiry", "--tenant", t.id, "--as", admin.userID, "--device", phone.id, "--at", "2020-01-01T00:00:00Z"], environment: env)
        #expect(past.status == 1 && past.output.contains("in the future"), "\(past.output)")
        await #expect(try run(bin, ["device", "set-expiry", "--tenant", t.id, "--as", admin.userID, "--device", phone.id, "--at", "soon"], environment: env).status == 64)
        await #expect(try run(bin, ["device", "list", "--tenant", t.id, "--as", admin.userID, "--status", "gone"], environment: env).status == 64)

        // The mesh switch and the default lifetime.
        #expect(try ctl("mesh", "off", "--tenant", t.id, "--admin", admin.userID).hasPrefix("mesh off at revision"))
        #expect(try ctl("mesh", "off", "--tenant", t.id, "--admin", admin.userID) == "mesh off (unchanged)")
        #expect(try await cp.client.license(caller: owner).enabled == false)
        let notAdmin = try await run(bin, ["mesh", "on", "--tenant", t.id, "--admin", owner.userID], environment: env)
        #expect(notAdmin.status == 1 && notAdmin.output.contains("only admins"), "\(notAdmin.output)")
        #expect(try ctl("mesh", "on", "--tenant", t.id, "--admin", admin.userID).hasPrefix("mesh on at revision"))
        #expect(try ctl("settings", "--tenant", t.id, "--as", owner.userID) == "mesh on; device lifetime off")
        let lifetime = json(try ctl("settings", "--tenant", t.id, "--as", admin.userID, "--device-lifetime", "7d", "--json"))
        #expect(lifetime["device_lifetime_seconds"] as? Int == 604_800 && lifetime["mesh_enabled"] as? Bool == true)
        #expect(try ctl("settings", "--tenant", t.id, "--as", admin.userID, "--device-lifetime", "off") == "mesh on; device lifetime off")
        await #expect(try run(bin, ["settings", "--tenant", t.id, "--as", admin.userID, "--device-lifetime", "10s"], environment: env).status == 1)

        // The live node list (the node is a registration only: it does not answer).
        let nodes = json(try ctl("node", "list", "--tenant", t.id, "--as", admin.userID, "--live", "--json"))["nodes"] as? [[String: Any]] ?? []
        #expect(nodes.count == 1 && nodes[0]["online"] as? Bool == false && nodes[0]["state_error"] is String && nodes[0]["hub"] as? Bool == true)

        // The audit log, filtered, and exported as CSV and JSON lines.
        let suspends = json(try ctl("audit", "--tenant", t.id, "--admin", admin.userID, "--action", "device.suspend", "--json"))["entries"] as? [[String: Any]]
        #expect(suspends?.count == 1)
        let csv = try await run(bin, ["audit", "--tenant", t.id, "--admin", admin.userID, "--export", "csv"], environment: env)
        let lines = csv.stdout.components(separatedBy: "\r\n").filter { !$0.isEmpty }
        #expect(csv.status == 0 && lines.first == "id,at,actor,action,target_id,request_id,detail" && lines.contains { $0.contains(",mesh.disable,") })
        let jsonl = try await run(bin, ["audit", "--tenant", t.id, "--admin", admin.userID, "--export", "jsonl", "--action", "mesh"], environment: env)
        let rows = jsonl.stdout.split(separator: "\n").map { json(String($0)) }
        #expect(rows.map { $0["action"] as? String } == ["mesh.enable", "mesh.disable"], "\(jsonl.stdout)")
        try await cp.stop()
    }
}

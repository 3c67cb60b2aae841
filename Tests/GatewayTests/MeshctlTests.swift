import Foundation
import GatewayCore
import MeshAuth
import MeshDomain
import MeshKeys
import MeshProto
import MeshTestSupport
import Testing

extension GatewayTests {
    /// The real meshctl executable against the real services: ids and tokens come out machine-readable,
    /// and its tokens are the gateway's.
    @Test func meshctlAgainstTheServices() async throws {
        let cp = try await ControlPlane.start("gw-meshctl")
        let env = ["MESH_NATS_URL": cp.nats.url, "MESH_JWT_SECRET": String(decoding: testSecret, as: UTF8.self)]
        let bin = TestEnvironment.binDir.appendingPathComponent("meshctl").path
        func ctl(_ args: String...) throws -> String {
            let r = try run(bin, args, environment: env)
            guard r.status == 0 else { throw TestSetupError.failed("meshctl \(args.joined(separator: " ")) exited \(r.status): \(r.output)") }
            return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func json(_ text: String) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }

        let tenantID = UUID().uuidString.lowercased()
        let tenant = json(try ctl("tenant", "create", "--name", "acme", "--plan", "team", "--id", tenantID, "--json"))
        #expect(tenant["id"] as? String == tenantID && tenant["plan"] as? String == "team")
        let admin = try ctl("user", "create", "--tenant", tenantID, "--name", "alice", "--role", "admin")
        #expect(UUID(uuidString: admin) != nil, "plain output is just the id: \(admin)")
        let owner = try ctl("user", "create", "--tenant", tenantID, "--name", "bob")
        #expect(json(try ctl("tenant", "set-plan", "--tenant", tenantID, "--plan", "enterprise", "--json"))["plan"] as? String == "enterprise")
        #expect((json(try ctl("tenant", "list", "--json"))["tenants"] as? [[String: Any]])?.contains { $0["id"] as? String == tenantID } == true)
        #expect((json(try ctl("user", "list", "--tenant", tenantID, "--json"))["users"] as? [Any])?.count == 2)

        // Tokens verify with the gateway's verifier and carry what was asked for.
        let verifier = await TokenVerifier(keys: try JWTKeyMaterial(hmacSecret: testSecret))
        let userToken = try ctl("token", "user", "--tenant", tenantID, "--user", owner, "--role", "owner", "--amr", "saml")
        #expect(try await verifier.verify(userToken) == .user(tenantID: tenantID, userID: owner, role: .owner, amr: ["saml"]))
        let nodeID = UUID().uuidString.lowercased()
        let nodeToken = json(try ctl("token", "node", "--tenant", tenantID, "--node", nodeID, "--ttl", "60", "--json"))
        #expect(try await verifier.verify(nodeToken["token"] as? String ?? "") == .node(tenantID: tenantID, nodeID: nodeID))

        // An enrollment token registers a node; the lists and the audit log show it.
        let enroll = try ctl("node", "enroll", "--tenant", tenantID, "--admin", admin)
        #expect(enroll.hasPrefix("qme_"))
        var reg = Mesh_V1_RegisterNodeRequest()
        reg.enrollmentToken = enroll
        reg.name = "edge-1"
        reg.publicKey = WireGuardKeyPair.generate().publicKey
        reg.endpoint = "198.51.100.1:51820"
        reg.listenPort = 51820
        let node = try await cp.client.registerNode(reg).node
        let nodes = json(try ctl("node", "list", "--tenant", tenantID, "--as", owner, "--json"))["nodes"] as? [[String: Any]] ?? []
        #expect(nodes.map { $0["id"] as? String } == [node.id])
        var caller = Mesh_V1_Caller()
        caller.tenantID = tenantID
        caller.userID = owner
        _ = try await cp.client.createDevice(caller: caller, label: "phone", type: .iphone)
        #expect((json(try ctl("device", "list", "--tenant", tenantID, "--as", admin, "--json"))["devices"] as? [Any])?.count == 1)
        let audit = json(try ctl("audit", "--tenant", tenantID, "--admin", admin, "--json"))["entries"] as? [[String: Any]] ?? []
        #expect(Set(audit.compactMap { $0["action"] as? String }).isSuperset(of: ["tenant.create", "user.create", "node.register", "device.create"]))

        // Errors: a message on stderr and exit code 1; bad arguments are usage errors.
        let refused = try await run(bin, ["audit", "--tenant", tenantID, "--admin", owner], environment: env)
        #expect(refused.status == 1 && refused.output.contains("audit log is for admins"), "\(refused.output)")
        await #expect(try run(bin, ["tenant", "create", "--name", "x", "--plan", "gold"], environment: env).status == 64)

        // Users: invite, change a role, remove (the device goes to another user); refusals exit 1.
        let invited = json(try ctl("user", "invite", "--tenant", tenantID, "--admin", admin, "--email", "Zoe@Example.com", "--json"))
        #expect(invited["status"] as? String == "invited" && invited["email"] as? String == "zoe@example.com", "\(invited)")
        #expect(json(try ctl("user", "set-role", "--tenant", tenantID, "--admin", admin, "--user", owner, "--role", "admin", "--json"))["role"] as? String == "admin")
        let selfRemoval = try await run(bin, ["user", "delete", "--tenant", tenantID, "--admin", admin, "--user", admin], environment: env)
        #expect(selfRemoval.status == 1 && selfRemoval.output.contains("cannot remove yourself"), "\(selfRemoval.output)")
        let undecided = try await run(bin, ["user", "delete", "--tenant", tenantID, "--admin", admin, "--user", owner], environment: env)
        #expect(undecided.status == 1 && undecided.output.contains("deleted or reassigned"), "\(undecided.output)")
        let removed = json(try ctl("user", "delete", "--tenant", tenantID, "--admin", admin, "--user", owner, "--devices", "reassign", "--to", admin, "--json"))
        #expect(removed["devices_reassigned"] as? Int == 1 && removed["devices_deleted"] as? Int == 0, "\(removed)")
        _ = try ctl("user", "delete", "--tenant", tenantID, "--admin", admin, "--user", invited["id"] as? String ?? "")
        let left = json(try ctl("user", "list", "--tenant", tenantID, "--json"))["users"] as? [[String: Any]] ?? []
        #expect(left.compactMap { $0["id"] as? String } == [admin])
        #expect((json(try ctl("device", "list", "--tenant", tenantID, "--as", admin, "--json"))["devices"] as? [[String: Any]])?.first?["owner_user_id"] as? String == admin)

        try await cp.stop()
    }
}

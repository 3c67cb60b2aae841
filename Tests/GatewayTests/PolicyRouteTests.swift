import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

extension GatewayTests {
    /// Access policies over HTTP: admins only, rules in their text forms, a 400 that names the field,
    /// ids of another tenant refused, dry runs, the DNS filter and tags.
    @Test func accessPoliciesOverHTTP() async throws {
        let f = try await Fixture.start("policies")
        let app = try await f.application()
        let node = f.node.id, other = f.otherNode.id
        try await app.test(.router) { client in
            let empty = try await client.send(.get, "/api/mesh/policies", token: f.tokens.admin)
            #expect(empty.status == 200, "\(empty.text)")
            #expect(empty.json["version"] as? Int == 0 && (empty.json["rules"] as? [Any])?.isEmpty == true)
            #expect(empty.json["dns_filtered"] as? Bool == false && empty.json["rule_cap"] as? Int == 500)
            #expect(try await client.send(.get, "/api/mesh/policies", token: f.tokens.ownerA).status == 403)
            #expect(try await client.send(.get, "/api/mesh/policies").status == 401)
            #expect(try await client.send(.post, "/api/mesh/policies/rules", token: f.tokens.ownerA,
                                          body: #"{"name":"x","sources":["*"],"destinations":["*"]}"#).status == 403)

            // Add: 201 with the rule in its text forms.
            let body = #"{"name":"ssh to edge","sources":["role:admin","tag:Ops"],"destinations":["node:\#(node)"],"ports":["tcp:22","icmp"]}"#
            let added = try await client.send(.post, "/api/mesh/policies/rules", token: f.tokens.admin, body: body)
            #expect(added.status == 201, "\(added.text)")
            let id = try #require(added.json["id"] as? String)
            #expect(added.headers[.location] == "/api/mesh/policies/rules/\(id)")
            #expect(added.json["sources"] as? [String] == ["role:admin", "tag:ops"])
            #expect(added.json["destinations"] as? [String] == ["node:\(node)"])
            #expect(added.json["ports"] as? [String] == ["tcp:22", "icmp"])

            // Malformed rules: 400 naming the field.
            let bad: [(String, String)] = [
                (#"{"name":"x","sources":["*"],"destinations":["bogus"]}"#, "destinations[0]"),
                (#"{"name":"x","sources":["*"],"destinations":["*"],"ports":["tcp:0"]}"#, "ports[0]"),
                (#"{"name":"x","sources":["*"],"destinations":["*"],"ports":["tcp:22","sctp"]}"#, "ports[1]"),
                (#"{"name":"x","sources":[],"destinations":["*"]}"#, "sources"),
                (#"{"name":"x","sources":["*"]}"#, "destinations"),
                (#"{"name":"x","sources":["*",3],"destinations":["*"]}"#, "sources[1]"),
                (#"{"sources":["*"],"destinations":["*"]}"#, "name"),
                (#"{"name":"x","sources":["*"],"destinations":["*"],"id":"x"}"#, "id"),
                (#"{"name":"x","sources":["*"],"destinations":["type:toaster"]}"#, "destinations[0]"),
                (#"{"name":"x","sources":["user:\#(f.otherAdmin.userID)"],"destinations":["*"]}"#, "sources[0]"),
                (#"{"name":"x","sources":["*"],"destinations":["device:\#(UUID().uuidString)"]}"#, "destinations[0]"),
            ]
            for (b, field) in bad {
                let r = try await client.send(.post, "/api/mesh/policies/rules", token: f.tokens.admin, body: b)
                #expect(r.status == 400 && r.errorCode == "invalid_argument" && r.error["field"] as? String == field, "\(b): \(r.text)")
            }
            let replaceBad = try await client.send(.put, "/api/mesh/policies", token: f.tokens.admin,
                                                   body: #"{"rules":[{"name":"a","sources":["*"],"destinations":["*"]},{"name":"b","sources":["tag:"],"destinations":["*"]}]}"#)
            #expect(replaceBad.status == 400 && replaceBad.error["field"] as? String == "rules[1].sources[0]", "\(replaceBad.text)")

            // Update and the dry run.
            let upd = try await client.send(.put, "/api/mesh/policies/rules/\(id)", token: f.tokens.admin,
                                            body: #"{"name":"ssh to edge","sources":["role:admin"],"destinations":["node:\#(node)"],"ports":["tcp:22"]}"#)
            #expect(upd.status == 200 && upd.json["id"] as? String == id, "\(upd.text)")
            #expect(try await client.send(.put, "/api/mesh/policies/rules/\(UUID())", token: f.tokens.admin,
                                          body: #"{"name":"x","sources":["*"],"destinations":["*"]}"#).status == 404)
            #expect(try await client.send(.put, "/api/mesh/policies/rules/nope", token: f.tokens.admin,
                                          body: #"{"name":"x","sources":["*"],"destinations":["*"]}"#).status == 404)
            let check = try await client.send(.post, "/api/mesh/policies/check", token: f.tokens.admin,
                                              body: #"{"from":"node:\#(other)","to":"node:\#(node)","protocol":"tcp","port":22}"#)
            #expect(check.status == 200 && check.json["allowed"] as? Bool == false && check.json["rule_id"] is NSNull, "\(check.text)")
            #expect(check.json["from"] as? String == "node:\(other)")
            for (b, field) in [(#"{"from":"node:\#(other)","to":"node:\#(node)","protocol":"tcp","port":true}"#, "port"),
                               (#"{"from":"node:\#(other)","to":"node:\#(node)","protocol":"sctp","port":1}"#, "protocol"),
                               (#"{"from":"node:\#(other)","to":"node:\#(UUID())","protocol":"tcp","port":22}"#, "to"),
                               (#"{"to":"node:\#(node)","protocol":"tcp","port":22}"#, "from")] {
                let r = try await client.send(.post, "/api/mesh/policies/check", token: f.tokens.admin, body: b)
                #expect(r.status == 400 && r.error["field"] as? String == field, "\(b): \(r.text)")
            }

            // Tags: the node gets one; a device of the owner too; another tenant's device is 404.
            let tagged = try await client.send(.put, "/api/mesh/nodes/\(other)/tags", token: f.tokens.admin, body: #"{"tags":["Ops","edge"]}"#)
            #expect(tagged.status == 200 && tagged.json["tags"] as? [String] == ["edge", "ops"], "\(tagged.text)")
            #expect(try await client.send(.put, "/api/mesh/nodes/\(other)/tags", token: f.tokens.admin, body: #"{"tags":["bad tag"]}"#)
                .error["field"] as? String == "tags[0]")
            #expect(try await client.send(.put, "/api/mesh/nodes/\(other)/tags", token: f.tokens.ownerA, body: #"{"tags":[]}"#).status == 403)
            let device = try await client.send(.post, "/api/mesh/devices", token: f.tokens.ownerA, body: deviceBody("a laptop", type: "laptop"))
            let deviceID = try #require(device.json["id"] as? String)
            #expect(try await client.send(.put, "/api/mesh/devices/\(deviceID)/tags", token: f.tokens.admin, body: #"{"tags":["ops"]}"#).status == 200)
            let listed = try await client.send(.get, "/api/mesh/devices", token: f.tokens.ownerA)
            #expect((listed.json["devices"] as? [[String: Any]])?.first { $0["id"] as? String == deviceID }?["tags"] as? [String] == ["ops"])
            let otherDevice = try await f.cp.client.createDevice(caller: f.otherAdmin, label: "theirs", type: .laptop).device
            #expect(try await client.send(.put, "/api/mesh/devices/\(otherDevice.id)/tags", token: f.tokens.admin, body: #"{"tags":["x"]}"#).status == 404)

            // A rule for tagged members; the dry run names it.
            let byTag = try await client.send(.post, "/api/mesh/policies/rules", token: f.tokens.admin,
                                              body: #"{"name":"ops to edge","sources":["tag:ops"],"destinations":["node:\#(node)"],"ports":["tcp:443"]}"#)
            #expect(byTag.status == 201)
            let byTagID = try #require(byTag.json["id"] as? String)
            let allowed = try await client.send(.post, "/api/mesh/policies/check", token: f.tokens.admin,
                                                body: #"{"from":"device:\#(deviceID)","to":"node:\#(node)","protocol":"tcp","port":443}"#)
            #expect(allowed.json["allowed"] as? Bool == true && allowed.json["rule_id"] as? String == byTagID, "\(allowed.text)")

            // The DNS filter.
            let dns = try await client.send(.patch, "/api/mesh/policies", token: f.tokens.admin, body: #"{"dns_filtered":true}"#)
            #expect(dns.status == 200 && dns.json["dns_filtered"] as? Bool == true, "\(dns.text)")
            #expect(try await client.send(.patch, "/api/mesh/policies", token: f.tokens.admin, body: #"{"dns_filtered":1}"#).status == 400)

            // Replace everything, then delete.
            let put = try await client.send(.put, "/api/mesh/policies", token: f.tokens.admin,
                                            body: #"{"rules":[{"id":"\#(id)","name":"kept","sources":["*"],"destinations":["*"],"ports":["icmp"]}]}"#)
            #expect(put.status == 200 && (put.json["rules"] as? [[String: Any]])?.map { $0["id"] as? String } == [id], "\(put.text)")
            #expect(try await client.send(.delete, "/api/mesh/policies/rules/\(id)", token: f.tokens.admin).status == 204)
            #expect(try await client.send(.delete, "/api/mesh/policies/rules/\(id)", token: f.tokens.admin).status == 404)
            let after = try await client.send(.get, "/api/mesh/policies", token: f.tokens.admin)
            #expect((after.json["rules"] as? [Any])?.isEmpty == true && (after.json["version"] as? Int ?? 0) >= 5)

            // Another tenant sees none of it.
            let theirs = try await client.send(.get, "/api/mesh/policies", token: f.tokens.otherAdmin)
            #expect(theirs.status == 200 && theirs.json["version"] as? Int == 0 && theirs.json["dns_filtered"] as? Bool == false)

            // Audited (Team plan).
            let audit = try await client.send(.get, "/api/mesh/audit?limit=50", token: f.tokens.admin)
            let actions = (audit.json["entries"] as? [[String: Any]])?.compactMap { $0["action"] as? String } ?? []
            for a in ["policy.rule.add", "policy.rule.update", "policy.rule.delete", "policy.replace", "policy.dns_filter", "node.tags", "device.tags"] {
                #expect(actions.contains(a), "\(a) missing from \(actions)")
            }
        }
        try await f.stop()
    }
}

import Foundation
import GatewayCore
import MeshAuth
import MeshBus
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// One HTTP exchange over real HTTP with curl: status, headers (lowercased names) and body.
struct LiveReply {
    var status: Int
    var headers: [(String, String)]
    var body: String

    func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
    /// The value a Set-Cookie gives `name` (empty for a cleared cookie).
    func setCookie(_ name: String) -> String? {
        headers.filter { $0.0 == "set-cookie" }.compactMap { v -> String? in
            let nv = v.1.split(separator: ";", maxSplits: 1)[0].split(separator: "=", maxSplits: 1).map(String.init)
            return nv[0] == name ? (nv.count > 1 ? nv[1] : "") : nil
        }.first
    }
    /// Every cookie set, by name.
    var cookies: [String: String] {
        var out: [String: String] = [:]
        for (n, v) in headers where n == "set-cookie" {
            let nv = v.split(separator: ";", maxSplits: 1)[0].split(separator: "=", maxSplits: 1).map(String.init)
            out[nv[0]] = nv.count > 1 ? nv[1] : ""
        }
        return out
    }
}

func liveHTTP(_ method: String, _ url: String, token: String? = nil, cookies: [String: String] = [:], origin: String? = nil,
              body: String? = nil) throws -> LiveReply {
    var args = ["-sS", "-i", "--max-time", "20", "-X", method]
    if let token { args += ["-H", "Authorization: Bearer \(token)"] }
    if !cookies.isEmpty { args += ["-H", "Cookie: " + cookies.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")] }
    if let origin { args += ["-H", "Origin: \(origin)"] }
    if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
    let r = try run("/usr/bin/curl", args + [url])
    guard r.status == 0 else { throw TestSetupError.failed("curl \(method) \(url): \(r.output)") }
    let text = r.stdout.replacingOccurrences(of: "\r\n", with: "\n")
    let split = text.range(of: "\n\n")
    let head = split.map { String(text[..<$0.lowerBound]) } ?? text
    let lines = head.split(separator: "\n").map(String.init)
    let status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
    let headers = lines.dropFirst().compactMap { l -> (String, String)? in
        guard let c = l.firstIndex(of: ":") else { return nil }
        return (l[..<c].lowercased(), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces))
    }
    return LiveReply(status: status, headers: headers, body: split.map { String(text[$0.upperBound...]) } ?? "")
}

extension GatewayTests {
    /// Two real Gateway processes sharing the deployment's secrets: a sign-in started on one finishes
    /// on the other; a revoked API token, a logged-out session and a removed user's session and
    /// token fail on their next request, on either replica.
    @Test func sessionsAndTokensAcrossGatewayReplicas() async throws {
        let f = try await Fixture.start("signin-replicas", environment: ["MESH_RATE_LIMIT": "0"])
        let logDir = TestEnvironment.outputDir("gateway")
        let ports = [try freePort(), try freePort()]
        let urls = ports.map { "http://127.0.0.1:\($0)" }
        let publicURL = urls[0]
        let idp = try await TestIdentityProvider(
            name: "replicas", redirectURI: publicURL + "/api/auth/callback",
            users: [TestIdentityProvider.User("alice", password: "alice-pw", claims: ["mesh_tenant": f.tenant.id, "name": "Alice"])], logDir: logDir)
        let secretFile = logDir.appendingPathComponent("replicas-client-secret")
        try Data((idp.clientSecret + "\n").utf8).write(to: secretFile)
        let providers = #"[{"id":"corp","name":"Corp SSO","issuer":"\#(idp.issuer)","client_id":"\#(idp.clientID)","client_secret_file":"\#(secretFile.path)","tenant_claim":"mesh_tenant"}]"#
        var gateways: [ManagedProcess] = []
        for (i, port) in ports.enumerated() {
            gateways.append(try ManagedProcess(
                name: "Gateway-replica\(i)-\(Nuid.short())", executable: TestEnvironment.binDir.appendingPathComponent("Gateway").path,
                environment: ["MESH_NATS_URL": f.cp.nats.url, "MESH_GATEWAY_ADDRESS": "127.0.0.1:\(port)", "MESH_GATEWAY_NODE_ID": f.node.id,
                              "MESH_JWT_SECRET": String(decoding: testSecret, as: UTF8.self), "MESH_SESSION_SECRET": String(decoding: sessionSecret, as: UTF8.self),
                              "MESH_OIDC_PROVIDERS": providers, "MESH_GATEWAY_PUBLIC_URL": publicURL, "MESH_INSTANCE": "gateway-replica\(i)",
                              "MESH_LOG_LEVEL": "info"],
                logDir: logDir))
        }
        for (url, g) in zip(urls, gateways) {
            var up = false
            let deadline = ContinuousClock.now + .seconds(30)
            while !up && ContinuousClock.now < deadline && g.isRunning {
                up = (try? liveHTTP("GET", url + "/readyz").status) == 200
                if !up { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(up, "gateway \(url) is not ready: \(g.log().suffix(2000))")
        }

        /// A sign-in started on replica `a` and finished on replica `b`.
        func signIn(start a: Int, finish b: Int) throws -> [String: String] {
            let login = try liveHTTP("GET", urls[a] + "/api/auth/login?provider=corp")
            guard login.status == 302, let location = login.header("location") else { throw TestSetupError.failed("login: \(login.status) \(login.body)") }
            let answer = try idp.logIn(authorizationURL: location, user: "alice", password: "alice-pw")
            guard let back = answer.location, back.hasPrefix(publicURL) else { throw TestSetupError.failed("provider: \(answer.body.prefix(300))") }
            let callback = try liveHTTP("GET", urls[b] + String(back.dropFirst(publicURL.count)), cookies: login.cookies)
            guard callback.status == 303, let session = callback.setCookie(sessionCookieName), !session.isEmpty else {
                throw TestSetupError.failed("callback: \(callback.status) \(callback.body)")
            }
            return [sessionCookieName: session]
        }

        let alice = try signIn(start: 0, finish: 1)
        for url in urls { #expect(try liveHTTP("GET", url + "/api/mesh/devices", cookies: alice).status == 200) }
        #expect(try liveHTTP("POST", urls[1] + "/api/mesh/devices", cookies: alice, origin: publicURL, body: deviceBody("alice phone")).status == 201)
        func token(_ name: String) throws -> (String, String) {
            let r = try liveHTTP("POST", urls[1] + "/api/mesh/tokens", cookies: alice, origin: publicURL, body: #"{"name":"\#(name)"}"#)
            return (r.json["token"] as? String ?? "", r.json["id"] as? String ?? "")
        }
        let (t1, t1id) = try token("one"), (t2, _) = try token("two")
        #expect(try liveHTTP("GET", urls[0] + "/api/mesh/devices", token: t1).status == 200)

        // A revoked token fails on its next request, on the other replica.
        #expect(try liveHTTP("DELETE", urls[1] + "/api/mesh/tokens/\(t1id)", cookies: alice, origin: publicURL).status == 204)
        let revoked = try liveHTTP("GET", urls[0] + "/api/mesh/devices", token: t1)
        #expect(revoked.status == 401 && revoked.body.contains("revoked"), "\(revoked.body)")
        #expect(try liveHTTP("GET", urls[0] + "/api/mesh/devices", token: t2).status == 200)

        // The admin removes Alice on one replica: her session and her token fail at once on the other.
        let users = try liveHTTP("GET", urls[0] + "/api/mesh/users", token: f.tokens.admin).json["users"] as? [[String: Any]] ?? []
        let aliceID = try #require(users.first { $0["name"] as? String == "Alice" }?["id"] as? String)
        let removed = try liveHTTP("DELETE", urls[0] + "/api/mesh/users/\(aliceID)?devices=delete", token: f.tokens.admin)
        #expect(removed.status == 200 && removed.json["devices_deleted"] as? Int == 1, "\(removed.body)")
        let cut = try liveHTTP("GET", urls[1] + "/api/mesh/devices", cookies: alice)
        #expect(cut.status == 401 && cut.body.contains("no longer exists") && cut.setCookie(sessionCookieName) == "", "\(cut.body)")
        #expect(try liveHTTP("GET", urls[1] + "/api/mesh/devices", token: t2).status == 401)

        // Alice signs in again (the tenant claim admits her as a new user); logging out on one replica
        // ends the session on the other.
        let again = try signIn(start: 1, finish: 0)
        #expect(try liveHTTP("GET", urls[1] + "/api/mesh/devices", cookies: again).status == 200)
        #expect(try liveHTTP("POST", urls[0] + "/api/auth/logout", cookies: again, origin: publicURL).status == 204)
        let ended = try liveHTTP("GET", urls[1] + "/api/mesh/devices", cookies: again)
        #expect(ended.status == 401 && ended.body.contains("session has ended"), "\(ended.body)")

        for g in gateways { #expect(await g.terminate(timeout: .seconds(10)) == 0, "\(g.log().suffix(1000))") }
        await idp.stop()
        await f.stop()
    }
}

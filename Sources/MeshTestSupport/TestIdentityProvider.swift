import Foundation
import MeshBus

/// The OpenID Connect provider of the tests (`Tests/oidc/test_provider.py`: authlib's
/// authorization server with PKCE S256 and nonces required, RS256 ID tokens, a login page), run as
/// a real process over HTTP from the venv `scripts/deps.sh` makes. Its control API rotates keys and
/// breaks the next ID token in one chosen way.
public final class TestIdentityProvider: Sendable {
    public let process: ManagedProcess
    /// The issuer URL (`http://127.0.0.1:<port>`).
    public let issuer: String
    public let clientID: String
    public let clientSecret: String

    /// A user of the provider: name, password and the claims of their ID tokens.
    public struct User: Sendable {
        public var name: String
        public var password: String
        /// JSON object text of the claims (sub defaults to the name).
        public var claims: String

        public init(_ name: String, password: String = "pw-\(Nuid.short())", claims: [String: any Sendable] = [:]) {
            self.name = name
            self.password = password
            self.claims = String(decoding: (try? JSONSerialization.data(withJSONObject: claims, options: [.sortedKeys])) ?? Data("{}".utf8), as: UTF8.self)
        }
    }

    /// The venv's python (`MESH_VENV`, else `.build-venv`).
    public static var python: String {
        let venv = ProcessInfo.processInfo.environment["MESH_VENV"] ?? TestEnvironment.repoRoot.appendingPathComponent(".build-venv").path
        return venv + "/bin/python"
    }

    /// Starts the provider with one client whose redirect URI is `redirectURI`, and `users`.
    public init(name: String, redirectURI: String, users: [User], clientID: String = "quazzar-mesh", logDir: URL) async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.python) else {
            throw TestSetupError.failed("\(Self.python) is missing: run scripts/deps.sh (make test does)")
        }
        let secret = "secret-" + Nuid.next()
        var args = [TestEnvironment.repoRoot.appendingPathComponent("Tests/oidc/test_provider.py").path, "--port", "0", "--control",
                    "--client", "\(clientID):\(secret):\(redirectURI)"]
        for u in users { args += ["--user", "\(u.name):\(u.password):\(u.claims)"] }
        // A log of its own: the ready line of an earlier run must not be read for this one.
        let p = try ManagedProcess(name: "oidc-\(name)-\(Nuid.short())", executable: Self.python, arguments: args, environment: ["PYTHONUNBUFFERED": "1"],
                                   logDir: logDir)
        var issuer: String?
        let deadline = ContinuousClock.now + .seconds(30)
        while issuer == nil && ContinuousClock.now < deadline && p.isRunning {
            for line in p.log().split(separator: "\n") where line.hasPrefix("{") {
                if let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any], o["event"] as? String == "ready" {
                    issuer = o["issuer"] as? String
                }
            }
            if issuer == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard let issuer else {
            await p.terminate()
            throw TestSetupError.failed("the test identity provider did not start: \(p.log().suffix(2000))")
        }
        process = p
        self.issuer = issuer
        self.clientID = clientID
        clientSecret = secret
    }

    public func stop() async { await process.terminate(timeout: .seconds(5)) }

    /// A control call; the answer's body.
    @discardableResult
    func control(_ method: String, _ path: String, _ body: [String: any Sendable]) throws -> String {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
        let r = try run("/usr/bin/curl", ["-sS", "--fail-with-body", "--max-time", "15", "-X", method, "-H", "Content-Type: application/json",
                                          "--data-binary", json, issuer + path])
        guard r.status == 0 else { throw TestSetupError.failed("provider \(method) \(path): \(r.output)") }
        return r.stdout
    }

    /// A new signing key for every token from now on; the old one stays in the JWKS when `keepOld`.
    public func rotateKeys(keepOld: Bool) throws { try control("POST", "/_control/rotate", ["keep_old": keepOld]) }

    /// The next ID token is broken: `unpublished_key`, `wrong_audience`, `wrong_issuer`, `expired`,
    /// `wrong_nonce`, `unsigned`, `bad_signature` or `hs256`.
    public func breakNextToken(_ fault: String) throws { try control("POST", "/_control/next-token", ["fault": fault]) }

    /// Adds or changes a user.
    public func setUser(_ u: User) throws {
        let r = try run("/usr/bin/curl", ["-sS", "--fail-with-body", "--max-time", "15", "-X", "PUT", "-H", "Content-Type: application/json",
                                          "--data-binary", #"{"password":\#(jsonString(u.password)),"claims":\#(u.claims)}"#,
                                          issuer + "/_control/users/\(u.name)"])
        guard r.status == 0 else { throw TestSetupError.failed("provider PUT user: \(r.output)") }
    }

    func jsonString(_ s: String) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: [s])) ?? Data("[\"\"]".utf8), as: UTF8.self).dropFirst().dropLast().description
    }

    /// How often the JWKS and the token endpoint were read.
    public func stats() throws -> (jwksReads: Int, tokenRequests: Int) {
        let r = try run("/usr/bin/curl", ["-sS", "--max-time", "15", issuer + "/_control/stats"])
        let o = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
        return (o["jwks_reads"] as? Int ?? -1, o["token_requests"] as? Int ?? -1)
    }

    /// The person's part of a sign-in: opens the authorization URL's login page, submits the form,
    /// and returns where the provider redirects the browser (the gateway's callback with code and
    /// state), or the status and body when it does not redirect.
    public func logIn(authorizationURL: String, user: String, password: String) throws -> (location: String?, status: Int, body: String) {
        let page = try run("/usr/bin/curl", ["-sS", "--max-time", "15", authorizationURL])
        guard page.stdout.contains("id=\"login\"") else { return (nil, 0, page.output) }
        let r = try run("/usr/bin/curl", ["-sS", "--max-time", "15", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                                          "--data-urlencode", "username=\(user)", "--data-urlencode", "password=\(password)", authorizationURL])
        let parts = r.stdout.split(separator: " ", maxSplits: 1).map(String.init)
        let status = Int(parts.first ?? "") ?? 0
        let location = parts.count > 1 && !parts[1].isEmpty ? parts[1] : nil
        return (location, status, r.output)
    }
}

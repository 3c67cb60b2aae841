import Foundation
import GatewayCore
import Hummingbird
import HummingbirdTesting
import MeshAuth
import MeshDomain
import MeshProto
import MeshTestSupport
import Testing

/// Where the in-process gateway says it is reached (nothing listens there: requests go straight to
/// the router, and the provider only redirects the "browser" to it).
let signInPublicURL = "http://127.0.0.1:18080"
let sessionCookieName = "__Host-qm_session"
/// The secret the test gateways seal cookies with.
let sessionSecret = Array("session-secret-for-the-gateway-tests-0123".utf8)

/// A control plane, the test identity provider (a real process over HTTP) and the gateway's sign-in settings.
struct SignInLab: Sendable {
    let f: Fixture
    let idp: TestIdentityProvider
    /// The gateway's settings. The provider's users: alice (an admin of `f.tenant` by the tenant and
    /// group claims), bob (an email only: needs an invitation), eve (nothing: refused), sue and pat
    /// (of `f.tenant`; sue's ID tokens say amr saml, pat's pwd).
    let signIn: SignInConfiguration

    static func start(_ name: String, plan: Mesh_V1_Plan = .team, jwksRefresh: Duration = .seconds(300), publicURL: String = signInPublicURL,
                      requireSaml: Bool = false) async throws -> SignInLab {
        let f = try await Fixture.start(name, plan: plan, environment: ["MESH_RATE_LIMIT": "0"])
        if requireSaml {
            var r = Mesh_V1_UpdateTenantRequest()
            r.tenantID = f.tenant.id
            r.plan = .enterprise
            r.setRequireSaml = true
            r.requireSaml = true
            _ = try await f.cp.client.updateTenant(r)
        }
        let t = f.tenant.id
        let users = [
            TestIdentityProvider.User("alice", password: "alice-pw", claims: ["email": "alice@example.com", "email_verified": true, "name": "Alice",
                                                                              "mesh_tenant": t, "groups": ["staff", "mesh-admins"]]),
            TestIdentityProvider.User("bob", password: "bob-pw", claims: ["email": "bob@example.com", "email_verified": true, "name": "Bob"]),
            TestIdentityProvider.User("eve", password: "eve-pw", claims: ["email": "eve@example.com", "email_verified": true]),
            TestIdentityProvider.User("sue", password: "sue-pw", claims: ["mesh_tenant": t, "amr": ["saml"], "name": "Sue"]),
            TestIdentityProvider.User("pat", password: "pat-pw", claims: ["mesh_tenant": t, "amr": ["pwd"], "name": "Pat"]),
        ]
        let idp = try await TestIdentityProvider(name: name, redirectURI: publicURL + "/api/auth/callback", users: users,
                                                 logDir: TestEnvironment.outputDir("gateway"))
        let provider = OIDCProviderConfiguration(
            id: "corp", name: "Corp SSO", issuer: idp.issuer, clientID: idp.clientID, clientSecret: idp.clientSecret,
            mapping: ProviderClaimMapping(tenantClaim: "mesh_tenant", admin: ClaimMatch(claim: "groups", value: "mesh-admins")))
        let signIn = SignInConfiguration(providers: [provider], publicURL: URL(string: publicURL), sealer: try CookieSealer(secret: sessionSecret),
                                         jwksRefresh: JWKSRefreshPolicy(interval: jwksRefresh))
        return SignInLab(f: f, idp: idp, signIn: signIn)
    }

    func stop() async {
        await idp.stop()
        await f.stop()
    }

    /// What a sign-in came to.
    struct Outcome {
        /// The callback's answer.
        var reply: Reply
        /// The session cookie it set, if any.
        var session: String?
        /// The callback as the browser called it, and the attempt cookie it sent (for replays).
        var callbackPath: String
        var attemptCookie: [String: String]
    }

    /// A whole sign-in as a browser does it: the gateway's login route, the provider's login page,
    /// the gateway's callback with the attempt cookie. `fault` breaks the provider's next ID token.
    func signIn(_ client: some TestClientProtocol, user: String, password: String, fault: String? = nil, accept: String? = nil) async throws -> Outcome {
        let login = try await client.send(.get, "/api/auth/login?provider=corp&return_to=/vpn/mesh/")
        guard login.status == 302, let location = login.headers[.location],
              let attempt = login.setCookies.first(where: { $0.key.hasPrefix("__Host-qm_signin_") }) else {
            throw TestSetupError.failed("login did not redirect with an attempt cookie: \(login.status) \(login.text)")
        }
        if let fault { try idp.breakNextToken(fault) }
        let answer = try idp.logIn(authorizationURL: location, user: user, password: password)
        guard let back = answer.location, back.hasPrefix(signInPublicURL + "/api/auth/callback") else {
            throw TestSetupError.failed("the provider did not redirect to the callback: \(answer.status) \(answer.body.prefix(500))")
        }
        let path = String(back.dropFirst(signInPublicURL.count))
        let cookies = [attempt.key: attempt.value.value]
        var headers: HTTPFields = [:]
        if let accept { headers[.accept] = accept }
        let reply = try await client.send(.get, path, cookies: cookies, headers: headers)
        return Outcome(reply: reply, session: reply.setCookies[sessionCookieName].flatMap { $0.value.isEmpty ? nil : $0.value },
                       callbackPath: path, attemptCookie: cookies)
    }
}

/// The headers of a request the page sends with its session.
func fromPage(_ origin: String = signInPublicURL) -> HTTPFields { [.origin: origin] }

extension GatewayTests {
    /// Sign-in through the real provider: PKCE S256, state and nonce, a session cookie with the right
    /// attributes, the session working for reads and (from this site's origin only) writes, API
    /// tokens shown once and revoked, logout, and a replayed callback refused.
    @Test func signInThroughTheProviderOpensASession() async throws {
        let lab = try await SignInLab.start("signin")
        let app = try await lab.f.application(signIn: lab.signIn)
        try await app.test(.router) { client in
            // The login route: a redirect to the provider with PKCE S256, state and nonce, and the attempt cookie.
            let login = try await client.send(.get, "/api/auth/login?provider=corp")
            let location = try #require(login.headers[.location])
            let q = Dictionary(uniqueKeysWithValues: (URLComponents(string: location)?.queryItems ?? []).map { ($0.name, $0.value ?? "") })
            #expect(login.status == 302 && location.hasPrefix(lab.idp.issuer + "/authorize?"))
            #expect(q["code_challenge_method"] == "S256" && q["code_challenge"]?.count == 43 && q["state"]?.count == 43 && q["nonce"]?.count == 43)
            #expect(q["redirect_uri"] == signInPublicURL + "/api/auth/callback" && q["client_id"] == lab.idp.clientID)
            let attempt = try #require(login.setCookies.first { $0.key.hasPrefix("__Host-qm_signin_") })
            for a in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] { #expect(attempt.value.attributes.contains(a), "\(attempt.value.attributes)") }
            // The provider requires PKCE: the same request without it is refused.
            let noPKCE = location.replacingOccurrences(of: "code_challenge_method=S256", with: "code_challenge_method=plain")
            #expect(try lab.idp.logIn(authorizationURL: noPKCE, user: "alice", password: "alice-pw").location == nil)

            let s = try await lab.signIn(client, user: "alice", password: "alice-pw")
            #expect(s.reply.status == 303 && s.reply.headers[.location] == "/vpn/mesh/", "\(s.reply.status) \(s.reply.text)")
            let session = try #require(s.session)
            let attrs = s.reply.setCookies[sessionCookieName]!.attributes
            for a in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] { #expect(attrs.contains(a), "\(attrs)") }
            #expect(s.reply.setCookies.contains { $0.key.hasPrefix("__Host-qm_signin_") && $0.value.value.isEmpty }, "the attempt cookie is cleared")
            let cookies = [sessionCookieName: session]

            // Who am I: the user the tenant claim made, an admin by the group claim.
            let me = try await client.send(.get, "/api/auth/session", cookies: cookies)
            let user = me.json["user"] as? [String: Any] ?? [:]
            #expect(me.status == 200 && me.json["credential"] as? String == "session", "\(me.text)")
            #expect(user["name"] as? String == "Alice" && user["role"] as? String == "admin" && user["email"] as? String == "alice@example.com")
            #expect((user["identity"] as? [String: Any])?["subject"] as? String == "alice")
            #expect((me.json["tenant"] as? [String: Any])?["id"] as? String == lab.f.tenant.id)
            #expect((me.json["session"] as? [String: Any])?["provider"] as? String == "corp")

            // Reads with the cookie alone; writes only from this site's origin.
            #expect(try await client.send(.get, "/api/mesh/devices", cookies: cookies).status == 200)
            let body = deviceBody("alice laptop", type: "laptop")
            let noOrigin = try await client.send(.post, "/api/mesh/devices", body: body, cookies: cookies)
            #expect(noOrigin.status == 403 && noOrigin.errorCode == "permission_denied" && noOrigin.text.contains("cross-site"), "\(noOrigin.text)")
            let evil = try await client.send(.post, "/api/mesh/devices", body: body, cookies: cookies, headers: fromPage("https://evil.example"))
            #expect(evil.status == 403 && evil.text.contains("cross-site"))
            let crossSite = try await client.send(.post, "/api/mesh/devices", body: body, cookies: cookies,
                                                  headers: [.origin: signInPublicURL, secFetchSite: "cross-site"])
            #expect(crossSite.status == 403)
            #expect(try await lab.f.cp.client.listDevices(caller: lab.f.admin).allSatisfy { $0.label != "alice laptop" }, "no refused request created anything")
            let created = try await client.send(.post, "/api/mesh/devices", body: body, cookies: cookies, headers: fromPage())
            #expect(created.status == 201, "\(created.text)")
            let users = try await client.send(.get, "/api/mesh/users", cookies: cookies).json["users"] as? [[String: Any]] ?? []
            #expect(users.contains { $0["name"] as? String == "Alice" && $0["status"] as? String == "active" })

            // A personal API token: shown once, works as a bearer token, listed with its last use, revoked.
            let made = try await client.send(.post, "/api/mesh/tokens", body: #"{"name":"ci","expires_in_days":30}"#, cookies: cookies, headers: fromPage())
            let token = try #require(made.json["token"] as? String, "\(made.text)")
            #expect(made.status == 201 && token.hasPrefix("qmp_") && token.count == 40 && made.headers[.cacheControl] == "no-store")
            #expect(try await client.send(.get, "/api/mesh/devices", token: token).status == 200)
            let listed = try await client.send(.get, "/api/mesh/tokens", cookies: cookies).json["tokens"] as? [[String: Any]] ?? []
            #expect(listed.count == 1 && listed[0]["token"] == nil && listed[0]["last_used_at"] is String && listed[0]["prefix"] as? String == String(token.prefix(8)))
            let id = try #require(made.json["id"] as? String)
            #expect(try await client.send(.delete, "/api/mesh/tokens/\(id)", cookies: cookies, headers: fromPage()).status == 204)
            let revoked = try await client.send(.get, "/api/mesh/devices", token: token)
            #expect(revoked.status == 401 && revoked.text.contains("revoked"), "\(revoked.text)")
            let typo = try await client.send(.get, "/api/mesh/devices", token: String(token.dropLast()) + (token.hasSuffix("A") ? "B" : "A"))
            #expect(typo.status == 401 && typo.text.contains("malformed"))

            // The callback replayed (same state, same cookie): refused before the code is spent, no session.
            let statsBefore = try lab.idp.stats()
            let replay = try await client.send(.get, s.callbackPath, cookies: s.attemptCookie)
            #expect(replay.status == 401 && replay.error["reason"] as? String == "state_replayed" && replay.setCookies[sessionCookieName] == nil, "\(replay.text)")
            #expect(try lab.idp.stats().tokenRequests == statsBefore.tokenRequests)

            // Renewal: a session past half its idle window gets a fresh cookie (never past its absolute end);
            // one past its idle end is refused and cleared.
            let sealer = try CookieSealer(secret: sessionSecret)
            var opened = try #require(sealer.open(session, as: SessionCookie.self, purpose: .session))
            let now = Int64(Date().timeIntervalSince1970)
            opened.idle = now + 60
            let renewed = try await client.send(.get, "/api/mesh/devices", cookies: [sessionCookieName: sealer.seal(opened, purpose: .session)])
            let fresh = try #require(renewed.setCookies[sessionCookieName]?.value, "no renewal: \(renewed.headers)")
            let next = try #require(sealer.open(fresh, as: SessionCookie.self, purpose: .session))
            #expect(renewed.status == 200 && next.sid == opened.sid && next.idle > opened.idle && next.idle <= opened.max, "\(next)")
            let quiet = try await client.send(.get, "/api/mesh/devices", cookies: cookies)
            #expect(quiet.status == 200 && quiet.setCookies[sessionCookieName] == nil, "a fresh session is not re-issued on every request")
            opened.idle = now - 1
            let idle = try await client.send(.get, "/api/mesh/devices", cookies: [sessionCookieName: sealer.seal(opened, purpose: .session)])
            #expect(idle.status == 401 && idle.text.contains("expired") && idle.setCookies[sessionCookieName]?.value == "", "\(idle.text)")

            // Log out: the cookie is cleared and, replayed, refused.
            #expect(try await client.send(.post, "/api/auth/logout", cookies: cookies).status == 403, "logout needs the Origin too")
            let out = try await client.send(.post, "/api/auth/logout", cookies: cookies, headers: fromPage())
            #expect(out.status == 204 && out.setCookies[sessionCookieName]?.value == "")
            let after = try await client.send(.get, "/api/mesh/devices", cookies: cookies)
            #expect(after.status == 401 && after.text.contains("session has ended") && after.setCookies[sessionCookieName]?.value == "", "\(after.text)")
        }
        await lab.stop()
    }

    /// Every broken ID token, a replayed or foreign state, a missing attempt and an identity without
    /// an account is refused with its reason, and no session cookie is set.
    @Test func refusedSignInsOpenNoSession() async throws {
        let lab = try await SignInLab.start("signin-refused")
        let app = try await lab.f.application(signIn: lab.signIn)
        let faults: [(String, String)] = [
            ("unpublished_key", "id_token_unknown_key"), ("wrong_audience", "id_token_audience"), ("wrong_issuer", "id_token_issuer"),
            ("expired", "id_token_expired"), ("wrong_nonce", "id_token_nonce"), ("unsigned", "id_token_unsigned"),
            ("bad_signature", "id_token_signature"), ("hs256", "id_token_algorithm"),
        ]
        try await app.test(.router) { client in
            for (fault, reason) in faults {
                let s = try await lab.signIn(client, user: "alice", password: "alice-pw", fault: fault)
                #expect(s.reply.status == 401 && s.reply.errorCode == "unauthenticated" && s.reply.error["reason"] as? String == reason,
                        "\(fault): \(s.reply.status) \(s.reply.text)")
                #expect(s.session == nil, "\(fault) opened a session")
            }
            // A browser is sent back to the page with the reason, still without a session.
            let html = try await lab.signIn(client, user: "alice", password: "alice-pw", fault: "wrong_nonce", accept: "text/html,application/xhtml+xml")
            #expect(html.reply.status == 303 && html.reply.headers[.location]?.hasPrefix("/vpn/mesh/#signin_error=id_token_nonce&message=") == true,
                    "\(html.reply.headers[.location] ?? "")")
            #expect(html.session == nil)

            // No account: eve is neither invited nor named by a tenant claim.
            let eve = try await lab.signIn(client, user: "eve", password: "eve-pw")
            #expect(eve.reply.status == 403 && eve.reply.error["reason"] as? String == "not_invited" && eve.session == nil, "\(eve.reply.text)")

            // The callback without this browser's attempt cookie, or with another attempt's.
            let login = try await client.send(.get, "/api/auth/login?provider=corp")
            let location = try #require(login.headers[.location])
            let answer = try lab.idp.logIn(authorizationURL: location, user: "alice", password: "alice-pw")
            let path = String(try #require(answer.location).dropFirst(signInPublicURL.count))
            let bare = try await client.send(.get, path)
            #expect(bare.status == 401 && bare.error["reason"] as? String == "no_sign_in_in_progress" && bare.setCookies[sessionCookieName] == nil)
            let attempt = try #require(login.setCookies.first { $0.key.hasPrefix("__Host-qm_signin_") })
            let forgedState = SignInSecrets.random()
            let other = lab.signIn.attemptCookieName(SignInSecrets.attemptID(state: forgedState))
            let mismatch = try await client.send(.get, "/api/auth/callback?code=x&state=\(forgedState)", cookies: [other: attempt.value.value])
            #expect(mismatch.status == 401 && mismatch.error["reason"] as? String == "state_mismatch", "\(mismatch.text)")
            // The genuine callback still works after all that.
            let ok = try await client.send(.get, path, cookies: [attempt.key: attempt.value.value])
            #expect(ok.status == 303 && ok.setCookies[sessionCookieName] != nil, "\(ok.text)")

            // A session cookie sealed with another secret, or tampered with, is no session.
            let foreign = try CookieSealer(secret: Array("another-secret-another-secret-0123456".utf8))
                .seal(SessionCookie(sid: UUID().uuidString, uid: lab.f.admin.userID, tid: lab.f.tenant.id, role: "admin", amr: [], provider: "corp",
                                    iat: 0, idle: Int64(Date().timeIntervalSince1970) + 600, max: Int64(Date().timeIntervalSince1970) + 3600),
                      purpose: .session)
            let forged = try await client.send(.get, "/api/mesh/devices", cookies: [sessionCookieName: foreign])
            #expect(forged.status == 401 && forged.text.contains("not valid"), "\(forged.text)")
            // An unknown provider.
            let unknown = try await client.send(.get, "/api/auth/login?provider=nope")
            #expect(unknown.status == 404 && unknown.error["reason"] as? String == "unknown_provider")
        }
        await lab.stop()
    }

    /// The provider rotates its keys: the next sign-in reads the JWKS again for the new key id and
    /// succeeds; tokens with key ids the JWKS does not hold are refused without reading it again
    /// within the refresh interval.
    @Test func keyRotationIsFollowedAndReadsOfTheKeysAreRateLimited() async throws {
        let lab = try await SignInLab.start("signin-keys", jwksRefresh: .seconds(600))
        let app = try await lab.f.application(signIn: lab.signIn)
        try await app.test(.router) { client in
            #expect(try await lab.signIn(client, user: "alice", password: "alice-pw").session != nil)
            #expect(try lab.idp.stats().jwksReads == 1)
            try lab.idp.rotateKeys(keepOld: false)
            let rotated = try await lab.signIn(client, user: "alice", password: "alice-pw")
            #expect(rotated.session != nil, "\(rotated.reply.text)")
            #expect(try lab.idp.stats().jwksReads == 2, "read again for the new key id")
            for _ in 0..<3 {
                let rogue = try await lab.signIn(client, user: "alice", password: "alice-pw", fault: "unpublished_key")
                #expect(rogue.reply.error["reason"] as? String == "id_token_unknown_key" && rogue.session == nil)
            }
            #expect(try lab.idp.stats().jwksReads == 2, "unknown key ids within the interval do not read the keys again")
        }
        await lab.stop()
    }

    /// Invitations bind at the first sign-in; removing a user ends their session at once and deletes
    /// their devices; the Enterprise SAML gate reads the session's amr.
    @Test func invitationsRemovalAndTheSAMLGate() async throws {
        let lab = try await SignInLab.start("signin-users", requireSaml: true)
        let app = try await lab.f.application(signIn: lab.signIn)
        try await app.test(.router) { client in
            let admin = lab.f.tokens.admin
            let invite = try await client.send(.post, "/api/mesh/users", token: admin, body: #"{"email":"Bob@Example.com","role":"owner"}"#)
            #expect(invite.status == 201 && invite.json["status"] as? String == "invited", "\(invite.text)")
            let bobID = try #require(invite.json["id"] as? String)
            #expect(try await client.send(.post, "/api/mesh/users", token: admin, body: #"{"email":"bob@example.com"}"#).status == 409)
            #expect(try await client.send(.post, "/api/mesh/users", token: lab.f.tokens.ownerA, body: #"{"email":"x@example.com"}"#).status == 403)
            let bob = try await lab.signIn(client, user: "bob", password: "bob-pw")
            let cookies = [sessionCookieName: try #require(bob.session, "\(bob.reply.text)")]
            let me = try await client.send(.get, "/api/auth/session", cookies: cookies)
            #expect((me.json["user"] as? [String: Any])?["id"] as? String == bobID)

            // The SAML gate: Bob's session is not SAML-authenticated; Sue's is (amr from the provider).
            let refused = try await client.send(.post, "/api/mesh/devices", body: deviceBody("bob phone"), cookies: cookies, headers: fromPage())
            #expect(refused.status == 403 && refused.text.contains("SAML"), "\(refused.text)")
            let sue = [sessionCookieName: try #require(try await lab.signIn(client, user: "sue", password: "sue-pw").session)]
            let pat = [sessionCookieName: try #require(try await lab.signIn(client, user: "pat", password: "pat-pw").session)]
            #expect(try await client.send(.post, "/api/mesh/devices", body: deviceBody("sue laptop"), cookies: sue, headers: fromPage()).status == 201)
            #expect(try await client.send(.post, "/api/mesh/devices", body: deviceBody("pat laptop"), cookies: pat, headers: fromPage()).status == 403)
            let sueID = try #require((try await client.send(.get, "/api/auth/session", cookies: sue).json["user"] as? [String: Any])?["id"] as? String)

            // Roles: the last admin stays; an admin promotes Bob.
            let role = try await client.send(.patch, "/api/mesh/users/\(bobID)", token: admin, body: #"{"role":"admin"}"#)
            #expect(role.status == 200 && role.json["role"] as? String == "admin")
            #expect(try await client.send(.get, "/api/mesh/users", cookies: cookies).status == 200, "Bob's session is an admin's at once")

            // Removing Sue: her devices need a decision; then her session fails on its next request.
            let undecided = try await client.send(.delete, "/api/mesh/users/\(sueID)", token: admin)
            #expect(undecided.status == 400 && undecided.error["field"] as? String == "devices")
            let removed = try await client.send(.delete, "/api/mesh/users/\(sueID)?devices=delete", token: admin)
            #expect(removed.status == 200 && removed.json["devices_deleted"] as? Int == 1, "\(removed.text)")
            let gone = try await client.send(.get, "/api/mesh/devices", cookies: sue)
            #expect(gone.status == 401 && gone.text.contains("no longer exists"), "\(gone.text)")
            #expect(try await lab.f.cp.client.listDevices(caller: lab.f.admin).allSatisfy { $0.label != "sue laptop" })
            let audit = try await lab.f.cp.client.audit(caller: lab.f.admin, limit: 200).entries.map(\.action)
            #expect(Set(audit).isSuperset(of: ["user.invite", "user.join", "user.create", "session.create", "user.role", "user.delete", "device.delete"]))
        }
        await lab.stop()
    }
}

/// `Sec-Fetch-Site`.
let secFetchSite = HTTPHeaderName("Sec-Fetch-Site")!

import Foundation
import Hummingbird
import MeshAuth
import MeshClient
import MeshDomain
import MeshProto

/// Sign-in through an OpenID Connect provider (authorization code flow with PKCE S256, state and
/// nonce per attempt), the session that follows, "who am I" and "Log out".
///
/// The gateway keeps nothing between the redirect and the callback: the attempt (state, nonce,
/// PKCE verifier, where to return) travels in a sealed cookie of its own, and ProvisionSvc keeps
/// the attempt's id so that any replica can finish it, exactly once, before it expires.
extension GatewayAPI {
    /// A browser navigation (it wants HTML) gets redirects to the page; an API client gets JSON.
    static func wantsHTML(_ request: Request) -> Bool {
        (request.headers[.accept] ?? "").contains("text/html")
    }

    /// Where a sign-in may send the browser back to: a path of the page, nothing else.
    static func safeReturn(_ raw: String?) -> String {
        guard let r = raw, r.hasPrefix("/vpn/mesh"), !r.hasPrefix("//"), !r.contains("\\"), r.utf8.count <= 512,
              !r.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f }) else { return "/vpn/mesh/" }
        return r
    }

    /// A refused sign-in: for a browser, back to the page with the reason in the fragment (never sent
    /// to a server); for an API client, the JSON error. `cookies` go with either.
    func signInRefused(_ error: any Error, request: Request, context: GatewayRequestContext, cookies: [Cookie]) throws -> Response {
        var api: APIError
        if let e = error as? SignInError {
            api = APIError(e)
        } else if let e = error as? MeshError, let s = SignInError.fromBus(e) {
            api = APIError(s)
        } else {
            api = APIError.from(error)
        }
        let reason: String = if case .string(let r) = api.details["reason"] { r } else { api.code }
        context.logger.notice("sign-in refused", metadata: ["reason": "\(reason)", "error": "\(error)"])
        if Self.wantsHTML(request) {
            var items = URLComponents()
            items.queryItems = [URLQueryItem(name: "signin_error", value: reason), URLQueryItem(name: "message", value: api.message)]
            var response = Response(status: .seeOther, headers: [.location: "/vpn/mesh/#" + (items.percentEncodedQuery ?? ""), .cacheControl: "no-store"])
            for c in cookies { response.setCookie(c) }
            return response
        }
        for c in cookies { api.headers.append((.setCookie, c.description)) }
        throw api
    }

    /// `GET /api/auth/login?provider=<id>&return_to=/vpn/mesh/`: starts a sign-in and redirects to the provider.
    func login(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        do {
            guard signIn.sessionsEnabled, let sealer = signIn.sealer, let callback = signIn.callbackURL else {
                throw MeshError.notFound("sign-in through an identity provider is not configured here")
            }
            let q = request.uri.queryParameters
            let id = q["provider"].map(String.init) ?? (signIn.providers.count == 1 ? signIn.providers[0].id : "")
            guard let provider = providers[id] else { throw SignInError.unknownProvider(String(id.prefix(32))) }
            let state = SignInSecrets.random(), nonce = SignInSecrets.random(), verifier = SignInSecrets.random()
            let attempt = SignInSecrets.attemptID(state: state)
            let url = try await provider.authorizationURL(redirectURI: callback, state: state, nonce: nonce,
                                                          challenge: SignInSecrets.challenge(verifier: verifier))
            let ttl = Int(signIn.attemptTTL.seconds)
            _ = try await provision.startSignIn(attemptID: attempt, provider: id, ttlSeconds: UInt32(ttl), requestID: context.requestID)
            let tx = LoginTransaction(provider: id, state: state, nonce: nonce, verifier: verifier,
                                      returnTo: Self.safeReturn(q["return_to"].map(String.init)),
                                      expires: Int64(Date().timeIntervalSince1970) + Int64(ttl))
            var response = Response(status: .found, headers: [.location: url, .cacheControl: "no-store"])
            response.setCookie(SignInCookies.attempt(signIn.attemptCookieName(attempt), sealer.seal(tx, purpose: .login), maxAge: ttl,
                                                     secure: signIn.secureCookies))
            context.logger.info("sign-in started", metadata: ["provider": "\(id)"])
            return response
        } catch {
            return try signInRefused(error, request: request, context: context, cookies: [])
        }
    }

    /// `GET /api/auth/callback?code=&state=` (or `?error=&state=`): the provider's answer. Checks the
    /// attempt (this browser's cookie, its state, its age, single use), exchanges the code with the
    /// PKCE verifier, verifies the ID token (signature from the provider's JWKS, iss, aud, exp,
    /// nonce), lets ProvisionSvc find or bind the user and open the session, and sets the session cookie.
    func callback(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        let state = q["state"].map(String.init) ?? ""
        let attempt = SignInSecrets.attemptID(state: state)
        let cookieName = signIn.attemptCookieName(attempt)
        let clear = SignInCookies.clear(cookieName, secure: signIn.secureCookies)
        do {
            guard signIn.sessionsEnabled, let sealer = signIn.sealer, let callback = signIn.callbackURL else {
                throw MeshError.notFound("sign-in through an identity provider is not configured here")
            }
            guard !state.isEmpty, state.utf8.count <= 256, let raw = request.cookies[cookieName]?.value,
                  let tx = sealer.open(raw, as: LoginTransaction.self, purpose: .login) else { throw SignInError.noAttempt }
            guard constantTimeEqual(tx.state, state) else { throw SignInError.stateMismatch }
            guard Int64(Date().timeIntervalSince1970) < tx.expires else { throw SignInError.attemptExpired }
            guard let provider = providers[tx.provider] else { throw SignInError.unknownProvider(tx.provider) }
            // Single use, before anything else: a replayed answer stops here, on any replica.
            try await consume(attempt: attempt, provider: tx.provider, requestID: context.requestID)
            if let e = q["error"] { throw SignInError.providerRefused(String(e.prefix(64))) }
            guard let code = q["code"].map(String.init), !code.isEmpty, code.utf8.count <= 2048 else { throw SignInError.providerRefused("no code") }
            let idToken = try await provider.exchange(code: code, verifier: tx.verifier, redirectURI: callback)
            let v = try await provider.verify(idToken: idToken, nonce: tx.nonce)
            let m = provider.configuration.mapping
            var req = Mesh_V1_CreateSessionRequest()
            req.provider = tx.provider
            req.issuer = v.facts.issuer
            req.subject = v.facts.subject
            req.email = String(v.email.prefix(254))
            req.emailVerified = v.emailVerified
            req.name = String(v.name.prefix(200))
            req.tenantID = m.tenant(in: v.claims) ?? ""
            req.providerRole = m.role(in: v.claims)
            req.amr = m.amr(in: v.claims)
            req.acr = String(v.acr.prefix(256))
            req.ttlSeconds = UInt32(signIn.session.maximum.seconds)
            let created = try await provision.createSession(req, requestID: context.requestID)
            let now = Int64(Date().timeIntervalSince1970)
            let max = created.expiresAtMs / 1000
            let idle = Int64(signIn.session.firstIdleExpiry(now: Date(timeIntervalSince1970: Double(now)),
                                                            absoluteExpires: Date(timeIntervalSince1970: Double(max))).timeIntervalSince1970)
            let session = SessionCookie(sid: created.sessionID, uid: created.user.id, tid: created.user.tenantID, role: created.user.role.key,
                                        amr: req.amr, provider: tx.provider, iat: now, idle: idle, max: max)
            var response = Response(status: .seeOther, headers: [.location: tx.returnTo, .cacheControl: "no-store"])
            response.setCookie(clear)
            response.setCookie(SignInCookies.session(sealer.seal(session, purpose: .session), configuration: signIn, cookie: session))
            context.logger.info("signed in", metadata: ["provider": "\(tx.provider)", "user.id": "\(created.user.id)", "tenant.id": "\(created.user.tenantID)"])
            return response
        } catch {
            return try signInRefused(error, request: request, context: context, cookies: [clear])
        }
    }

    /// Consumes a sign-in attempt at ProvisionSvc; one it refuses was finished before (or never started).
    func consume(attempt: [UInt8], provider: String, requestID: String) async throws {
        let refusal: MeshError?
        do {
            try await provision.finishSignIn(attemptID: attempt, provider: provider, requestID: requestID)
            refusal = nil
        } catch {
            refusal = error
        }
        guard let refusal else { return }
        if refusal.code == .unauthenticated { throw SignInError.replayed }
        throw refusal
    }

    /// `GET /api/auth/session`: the caller (session, API token or bearer JWT) as ProvisionSvc knows them.
    func sessionInfo(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let who = try await provision.identify(caller: caller)
        let credential = !caller.sessionID.isEmpty ? "session" : !caller.apiTokenID.isEmpty ? "api_token" : "bearer"
        return JSONBody.response(SessionInfoJSON(identity: who, tenantID: caller.tenantID, credential: credential,
                                                 idleExpires: credential == "session" ? context.session?.idle : nil),
                                 headers: [.cacheControl: "no-store"])
    }

    /// `POST /api/auth/logout`: ends the session (it is refused from then on, on every replica) and
    /// clears the cookie. Without a session there is nothing to end; the answer is the same.
    func logout(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        if context.session != nil {
            let caller = try await user(request, context)
            try await provision.endSession(caller: caller)
        }
        var response = Response(status: .noContent, headers: [.cacheControl: "no-store"])
        if signIn.sessionsEnabled { response.setCookie(SignInCookies.clear(signIn.sessionCookieName, secure: signIn.secureCookies)) }
        return response
    }
}

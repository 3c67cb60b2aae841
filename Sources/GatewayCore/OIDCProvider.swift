import AsyncHTTPClient
import Foundation
import Logging
import MeshAuth
import MeshDomain
import NIOCore
import NIOHTTP1

/// One OpenID Connect provider as the gateway talks to it: its discovery document and signing keys
/// (cached: a cache, not state; any replica rebuilds it from the provider), the authorization URL,
/// the code exchange and the ID token's verification.
///
/// Keys are read again when a token names a key id the cache does not hold (the provider rotated
/// its keys), at most once per ``JWKSRefreshPolicy/interval``, so made-up key ids cannot make the
/// gateway hammer the provider.
public actor OIDCProvider {
    public let configuration: OIDCProviderConfiguration
    let http: HTTPClient
    let timeout: Duration
    let refresh: JWKSRefreshPolicy
    let logger: Logger

    /// What discovery says.
    public struct Discovery: Sendable, Equatable {
        public var issuer: String
        public var authorizationEndpoint: String
        public var tokenEndpoint: String
        public var jwksURI: String
        public var algorithms: [String]
        public var authMethods: [String]
    }

    var discovery: Discovery?
    var discoveredAt: Date?
    var keys: ProviderKeys?
    var lastForcedRefresh: Date?
    /// JWKS documents read (for tests and metrics).
    public private(set) var jwksReads = 0

    /// Discovery is read again after this long.
    static let discoveryTTL: TimeInterval = 3600
    /// The largest answer read from a provider.
    static let maxBody = 1 << 20

    public init(configuration: OIDCProviderConfiguration, http: HTTPClient = .shared, timeout: Duration, refresh: JWKSRefreshPolicy, logger: Logger) {
        self.configuration = configuration
        self.http = http
        self.timeout = timeout
        self.refresh = refresh
        self.logger = logger
    }

    var nioTimeout: TimeAmount { .nanoseconds(Int64(timeout.seconds * 1e9)) }

    /// GET a JSON object.
    func getJSON(_ url: String, what: String) async throws(SignInError) -> [String: Any] {
        var req = HTTPClientRequest(url: url)
        req.headers.add(name: "Accept", value: "application/json")
        return try await send(req, what: what).object
    }

    /// Sends a request; the status and the body as a JSON object.
    func send(_ req: HTTPClientRequest, what: String) async throws(SignInError) -> (status: Int, object: [String: Any]) {
        let body: ByteBuffer
        let status: Int
        do {
            let resp = try await http.execute(req, timeout: nioTimeout)
            status = Int(resp.status.code)
            body = try await resp.body.collect(upTo: Self.maxBody)
        } catch {
            logger.warning("identity provider unreachable", metadata: ["provider": "\(configuration.id)", "url": "\(req.url)", "error": "\(error)"])
            throw .providerUnavailable("\(what) could not be read")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] else {
            logger.warning("identity provider answered no JSON", metadata: ["provider": "\(configuration.id)", "url": "\(req.url)", "http.status": "\(status)"])
            throw .providerUnavailable("\(what) is not JSON (HTTP \(status))")
        }
        return (status, object)
    }

    /// The discovery document, read when missing or older than an hour. Its issuer must be the
    /// configured one, exactly (OpenID Connect Discovery 4.3).
    public func discover() async throws(SignInError) -> Discovery {
        if let d = discovery, let at = discoveredAt, Date().timeIntervalSince(at) < Self.discoveryTTL { return d }
        let base = configuration.issuer.hasSuffix("/") ? String(configuration.issuer.dropLast()) : configuration.issuer
        let o = try await getJSON(base + "/.well-known/openid-configuration", what: "the discovery document")
        guard let issuer = o["issuer"] as? String, issuer == configuration.issuer else {
            throw .providerUnavailable("its discovery document names another issuer")
        }
        guard let auth = o["authorization_endpoint"] as? String, let token = o["token_endpoint"] as? String, let jwks = o["jwks_uri"] as? String else {
            throw .providerUnavailable("its discovery document lacks an endpoint")
        }
        let d = Discovery(issuer: issuer, authorizationEndpoint: auth, tokenEndpoint: token, jwksURI: jwks,
                          algorithms: o["id_token_signing_alg_values_supported"] as? [String] ?? [],
                          authMethods: o["token_endpoint_auth_methods_supported"] as? [String] ?? [])
        discovery = d
        discoveredAt = Date()
        return d
    }

    /// The signing keys, read when missing, or again (rate-limited) when `kid` is not among them.
    public func signingKeys(for kid: String?) async throws(SignInError) -> ProviderKeys {
        let d = try await discover()
        if let k = keys {
            guard let kid, !k.kids.contains(kid) else { return k }
            guard refresh.mayRefresh(lastForced: lastForcedRefresh, now: Date()) else { return k }
            lastForcedRefresh = Date()
            logger.info("reading the identity provider's keys again for an unknown key id", metadata: ["provider": "\(configuration.id)", "kid": "\(kid)"])
        }
        let data: Data
        do {
            let o = try await getJSON(d.jwksURI, what: "the key set (JWKS)")
            data = try JSONSerialization.data(withJSONObject: o)
        } catch let e as SignInError {
            throw e
        } catch {
            throw .providerUnavailable("the key set (JWKS) could not be read")
        }
        jwksReads += 1
        let fresh = try await ProviderKeys(jwksJSON: data)
        keys = fresh
        return fresh
    }

    /// The authorization request URL (code flow, PKCE S256, state, nonce).
    public func authorizationURL(redirectURI: String, state: String, nonce: String, challenge: String) async throws(SignInError) -> String {
        let d = try await discover()
        var c = URLComponents(string: d.authorizationEndpoint)
        var items = c?.queryItems ?? []
        items += [
            URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: configuration.clientID),
            URLQueryItem(name: "redirect_uri", value: redirectURI), URLQueryItem(name: "scope", value: configuration.scopes.joined(separator: " ")),
            URLQueryItem(name: "state", value: state), URLQueryItem(name: "nonce", value: nonce),
            URLQueryItem(name: "code_challenge", value: challenge), URLQueryItem(name: "code_challenge_method", value: "S256"),
        ]
        c?.queryItems = items
        // '+' is a space in form encoding; keep it literal in the query.
        let query = c?.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        c?.percentEncodedQuery = query
        guard let url = c?.string else { throw .providerUnavailable("its authorization endpoint is not a URL") }
        return url
    }

    /// Exchanges the code (with the PKCE verifier) for the ID token. The client authenticates with
    /// HTTP Basic unless the provider announces only `client_secret_post`.
    public func exchange(code: String, verifier: String, redirectURI: String) async throws(SignInError) -> String {
        let d = try await discover()
        var form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirectURI), ("code_verifier", verifier)]
        var req = HTTPClientRequest(url: d.tokenEndpoint)
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        req.headers.add(name: "Accept", value: "application/json")
        if let secret = configuration.clientSecret {
            if d.authMethods.contains("client_secret_post") && !d.authMethods.contains("client_secret_basic") {
                form += [("client_id", configuration.clientID), ("client_secret", secret)]
            } else {
                let basic = Data("\(Self.formEncode(configuration.clientID)):\(Self.formEncode(secret))".utf8).base64EncodedString()
                req.headers.add(name: "Authorization", value: "Basic \(basic)")
            }
        } else {
            form.append(("client_id", configuration.clientID))
        }
        req.body = .bytes(ByteBuffer(string: form.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&")))
        let (status, o) = try await send(req, what: "the token endpoint")
        guard status == 200 else { throw .codeRefused(o["error"] as? String ?? "HTTP \(status)") }
        guard let idToken = o["id_token"] as? String, !idToken.isEmpty else { throw .codeRefused("no id_token in the answer") }
        return idToken
    }

    /// Verifies an ID token: its algorithm and signature with the provider's keys (read again once
    /// for an unknown key id), then the claim rules for this sign-in's nonce.
    public func verify(idToken: String, nonce: String, now: Date = Date()) async throws(SignInError) -> VerifiedIDToken {
        let d = try await discover()
        let (_, kid) = try IDTokenVerifier.header(idToken)
        let keys = try await signingKeys(for: kid)
        let verified = try await IDTokenVerifier.verify(idToken, keys: keys, announcedAlgorithms: d.algorithms)
        try IDTokenRules.check(verified.facts, issuer: d.issuer, clientID: configuration.clientID, nonce: nonce, now: now)
        return verified
    }

    /// `application/x-www-form-urlencoded` of one value.
    static func formEncode(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s
    }

    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}

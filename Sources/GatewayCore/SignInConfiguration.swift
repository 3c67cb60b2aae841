import Foundation
import MeshAuth
import MeshDomain

/// One OpenID Connect provider people sign in with (docs/security.md, "Sign-in").
public struct OIDCProviderConfiguration: Sendable, Equatable {
    /// A short id used in URLs (`/api/auth/login?provider=<id>`) and records: letters, digits, `-`, `_`.
    public var id: String
    /// What the sign-in button says.
    public var name: String
    /// The issuer URL; discovery is read from `<issuer>/.well-known/openid-configuration`.
    public var issuer: String
    public var clientID: String
    /// nil for a public client (PKCE only).
    public var clientSecret: String?
    public var scopes: [String]
    /// Tenant, admin and SAML rules for the provider's claims.
    public var mapping: ProviderClaimMapping

    public init(id: String, name: String, issuer: String, clientID: String, clientSecret: String?, scopes: [String] = ["openid", "email", "profile"],
                mapping: ProviderClaimMapping = ProviderClaimMapping()) {
        self.id = id
        self.name = name
        self.issuer = issuer
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.scopes = scopes
        self.mapping = mapping
    }

    /// The keys a provider entry may have.
    static let keys: Set<String> = ["id", "name", "issuer", "client_id", "client_secret_file", "scopes", "tenant_claim", "tenant",
                                    "admin_claim", "saml_claim"]

    /// Parses the providers document: a JSON array of objects with ``keys``. The client secret is read
    /// from the file `client_secret_file` names (trailing whitespace dropped), never from the document.
    public static func parse(_ json: String, readFile: (String) throws -> String) throws(MeshError) -> [OIDCProviderConfiguration] {
        let field = "MESH_OIDC_PROVIDERS"
        guard let list = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [[String: Any]] else {
            throw .invalidArgument(field: field, message: "\(field) must be a JSON array of provider objects")
        }
        var out: [OIDCProviderConfiguration] = []
        for (i, o) in list.enumerated() {
            let at = "\(field)[\(i)]"
            if let unknown = o.keys.sorted().first(where: { !keys.contains($0) }) {
                throw .invalidArgument(field: at, message: "\(at): unknown key \"\(unknown)\"")
            }
            func text(_ k: String, required: Bool = false) throws(MeshError) -> String? {
                guard let v = o[k] else {
                    if required { throw .invalidArgument(field: at, message: "\(at): \(k) is required") }
                    return nil
                }
                guard let s = v as? String, !s.isEmpty else { throw .invalidArgument(field: at, message: "\(at): \(k) must be a non-empty string") }
                return s
            }
            let id = try text("id", required: true)!
            guard id.utf8.count <= 32, id.utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }) else {
                throw .invalidArgument(field: at, message: "\(at): id must be 1 to 32 letters, digits, - or _")
            }
            guard !out.contains(where: { $0.id == id }) else { throw .invalidArgument(field: at, message: "\(at): id \"\(id)\" is used twice") }
            let issuer = try text("issuer", required: true)!
            guard let u = URL(string: issuer), u.scheme == "https" || u.scheme == "http", u.host != nil, u.query == nil, u.fragment == nil else {
                throw .invalidArgument(field: at, message: "\(at): issuer must be an http(s) URL without query or fragment")
            }
            var secret: String?
            if let path = try text("client_secret_file") {
                do {
                    secret = try readFile(path).trimmingCharacters(in: .whitespacesAndNewlines)
                } catch {
                    throw .invalidArgument(field: at, message: "\(at): client_secret_file \(path) cannot be read")
                }
                guard secret?.isEmpty == false else { throw .invalidArgument(field: at, message: "\(at): client_secret_file \(path) is empty") }
            }
            var scopes = ["openid", "email", "profile"]
            if let v = o["scopes"] {
                guard let a = v as? [String], a.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
                    throw .invalidArgument(field: at, message: "\(at): scopes must be an array of scope names")
                }
                scopes = a.contains("openid") ? a : ["openid"] + a
            }
            var tenant: String?
            if let t = try text("tenant") {
                guard let uuid = UUID(uuidString: t) else { throw .invalidArgument(field: at, message: "\(at): tenant must be a tenant id (UUID)") }
                tenant = uuid.uuidString.lowercased()
            }
            let admin = try text("admin_claim").map { s throws(MeshError) in try ClaimMatch(parsing: s, field: "\(at).admin_claim") }
            let saml = try text("saml_claim").map { s throws(MeshError) in try ClaimMatch(parsing: s, field: "\(at).saml_claim") }
            out.append(OIDCProviderConfiguration(
                id: id, name: try text("name") ?? id, issuer: issuer, clientID: try text("client_id", required: true)!, clientSecret: secret,
                scopes: scopes, mapping: ProviderClaimMapping(tenantClaim: try text("tenant_claim"), tenant: tenant, admin: admin,
                                                              saml: saml ?? ClaimMatch(claim: "amr", value: "saml"))))
        }
        return out
    }
}

/// How the gateway signs people in and keeps their sessions. Without providers (or without a
/// public URL and a session secret) only bearer tokens are accepted, as before.
public struct SignInConfiguration: Sendable {
    public var providers: [OIDCProviderConfiguration]
    /// The URL people reach the gateway at, e.g. `https://mesh.example.com`: the callback is
    /// `<public URL>/api/auth/callback`, and state-changing requests from the page must come from its origin.
    public var publicURL: URL?
    /// Seals the session and sign-in cookies.
    public var sealer: CookieSealer?
    public var session: SessionPolicy
    /// How long a sign-in may take (redirect to callback).
    public var attemptTTL: Duration
    public var jwksRefresh: JWKSRefreshPolicy
    /// Origins accepted besides the public URL's on state-changing requests that carry the session cookie.
    public var extraOrigins: [String]
    /// Deadline for every request to a provider.
    public var providerTimeout: Duration

    public init(providers: [OIDCProviderConfiguration] = [], publicURL: URL? = nil, sealer: CookieSealer? = nil,
                session: SessionPolicy = .standard, attemptTTL: Duration = .seconds(600), jwksRefresh: JWKSRefreshPolicy = JWKSRefreshPolicy(),
                extraOrigins: [String] = [], providerTimeout: Duration = .seconds(10)) {
        self.providers = providers
        self.publicURL = publicURL
        self.sealer = sealer
        self.session = session
        self.attemptTTL = attemptTTL
        self.jwksRefresh = jwksRefresh
        self.extraOrigins = extraOrigins
        self.providerTimeout = providerTimeout
    }

    /// Sessions work: there is a sealer and a public URL.
    public var sessionsEnabled: Bool { sealer != nil && publicURL != nil }

    /// The public URL's origin (`scheme://host[:port]`).
    public var origin: String? {
        guard let u = publicURL, let scheme = u.scheme, let host = u.host else { return nil }
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h)" + (u.port.map { ":\($0)" } ?? "")
    }

    /// Origins a cookie-carrying state-changing request may come from.
    public var allowedOrigins: Set<String> { Set(extraOrigins + (origin.map { [$0] } ?? [])) }

    /// The redirect URI registered at every provider.
    public var callbackURL: String? {
        guard let u = publicURL else { return nil }
        let base = u.absoluteString.hasSuffix("/") ? String(u.absoluteString.dropLast()) : u.absoluteString
        return base + "/api/auth/callback"
    }

    /// Cookies get `Secure` (and the `__Host-` name prefix) unless the public URL is plain HTTP on a
    /// non-loopback host, where a browser would drop them.
    public var secureCookies: Bool {
        guard let u = publicURL else { return true }
        if u.scheme == "https" { return true }
        let host = u.host ?? ""
        return host == "localhost" || host.hasPrefix("127.") || host == "::1" || host == "[::1]"
    }

    /// The session cookie's name.
    public var sessionCookieName: String { secureCookies ? "__Host-qm_session" : "qm_session" }

    /// The name of a sign-in attempt's cookie: one per attempt, so two sign-ins in two tabs do not
    /// overwrite each other.
    public func attemptCookieName(_ attemptID: [UInt8]) -> String {
        let hex = attemptID.prefix(6).map { String(format: "%02x", $0) }.joined()
        return (secureCookies ? "__Host-qm_signin_" : "qm_signin_") + hex
    }
}

extension UInt8 {
    var isASCIIAlphanumeric: Bool { (48...57).contains(self) || (65...90).contains(self) || (97...122).contains(self) }
}

import Crypto
import Foundation
import JWTKit
import MeshDomain
import MeshProto

// The cryptography of signing people in: an identity provider's keys (JWKS) and the verification
// of its ID tokens, the sealed cookies that carry a sign-in attempt and a session, PKCE, and the
// hashes of personal API tokens. The rules these serve are MeshDomain's (IDTokenRules,
// SessionPolicy, APITokenFormat).

/// An identity provider's signing keys (its JWKS), ready to verify ID tokens.
public struct ProviderKeys: Sendable {
    let keys: JWTKeyCollection
    /// The key ids the set holds.
    public let kids: Set<String>

    /// The keys of a JWKS document. Keys for encryption, symmetric keys (`oct`) and keys without a
    /// `kid` are left out: an ID token is verified only with a public signing key the provider
    /// names. A document that is not a JWKS is `providerUnavailable`.
    public init(jwksJSON data: Data) async throws(SignInError) {
        guard let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let list = doc["keys"] as? [[String: Any]] else {
            throw .providerUnavailable("its JWKS is not a key set")
        }
        let collection = JWTKeyCollection()
        var kids: Set<String> = []
        for entry in list {
            guard let kty = entry["kty"] as? String, ["RSA", "EC", "OKP"].contains(kty), let kid = entry["kid"] as? String, !kid.isEmpty,
                  (entry["use"] as? String ?? "sig") == "sig",
                  let one = try? JSONSerialization.data(withJSONObject: entry), let jwk = try? JSONDecoder().decode(JWK.self, from: one) else {
                continue
            }
            do {
                try await collection.add(jwk: jwk)
                kids.insert(kid)
            } catch {
                continue
            }
        }
        keys = collection
        self.kids = kids
    }
}

/// What a verified ID token says.
public struct VerifiedIDToken: Sendable, Equatable {
    public var facts: IDTokenFacts
    /// Every top-level claim, as the mapping rules read them.
    public var claims: [String: ClaimValue]
    public var email: String
    public var emailVerified: Bool
    public var name: String
    public var acr: String
}

/// Verifies an ID token's signature with the provider's keys and reads its claims.
public enum IDTokenVerifier {
    /// The token's `alg` and `kid` (unverified); `unsigned` when it is not three base64url parts with a JSON header.
    public static func header(_ token: String) throws(SignInError) -> (alg: String?, kid: String?) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[2].isEmpty, let bytes = JWTKeyMaterial.base64Bytes(String(parts[0])),
              let header = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw .unsigned
        }
        return (header["alg"] as? String, header["kid"] as? String)
    }

    /// Checks the algorithm, finds the key, verifies the signature and reads the claims. The claim
    /// rules (issuer, audience, expiry, nonce) are ``IDTokenRules``, applied by the caller.
    public static func verify(_ token: String, keys: ProviderKeys, announcedAlgorithms: [String]) async throws(SignInError) -> VerifiedIDToken {
        let (alg, kid) = try header(token)
        try IDTokenRules.checkAlgorithm(alg, announced: announcedAlgorithms)
        if let kid {
            guard keys.kids.contains(kid) else { throw .unknownKey }
        } else if keys.kids.count != 1 {
            // Without a kid the token could be checked against any key; only a one-key set is unambiguous.
            throw .unknownKey
        }
        do {
            _ = try await keys.keys.verify(token, as: SignatureOnly.self)
        } catch let e as JWTError where e.errorType == .unknownKID {
            throw .unknownKey
        } catch {
            throw .badSignature
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard let bytes = JWTKeyMaterial.base64Bytes(String(parts[1])),
              let object = try? JSONDecoder().decode([String: JSONClaim].self, from: Data(bytes)) else {
            throw .badSignature
        }
        return try read(object)
    }

    /// The facts and claims of a decoded payload.
    static func read(_ o: [String: JSONClaim]) throws(SignInError) -> VerifiedIDToken {
        var claims: [String: ClaimValue] = [:]
        for (k, v) in o { claims[k] = v.value }
        func string(_ k: String) -> String? { if case .string(let s) = o[k]?.value { s } else { nil } }
        func number(_ k: String) -> Double? { if case .number(let n) = o[k]?.value { n } else { nil } }
        let audience: [String] = switch o["aud"]?.value {
        case .string(let s): [s]
        case .strings(let a): a
        default: []
        }
        guard let exp = number("exp") else { throw .expired }
        let facts = IDTokenFacts(issuer: string("iss") ?? "", audience: audience, authorizedParty: string("azp"), subject: string("sub") ?? "",
                                 expires: Date(timeIntervalSince1970: exp), issuedAt: number("iat").map { Date(timeIntervalSince1970: $0) },
                                 nonce: string("nonce"))
        let verified = o["email_verified"]?.value == .bool(true) || string("email_verified") == "true"
        return VerifiedIDToken(facts: facts, claims: claims, email: string("email") ?? "", emailVerified: verified,
                               name: string("name") ?? string("preferred_username") ?? "", acr: string("acr") ?? "")
    }

    /// One claim of a payload: JSON decoded without losing the difference between `true` and `1`.
    struct JSONClaim: Decodable {
        var value: ClaimValue

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) {
                value = .bool(b)
            } else if let n = try? c.decode(Double.self) {
                value = .number(n)
            } else if let s = try? c.decode(String.self) {
                value = .string(s)
            } else if let a = try? c.decode([String].self) {
                value = .strings(a)
            } else {
                value = .other
            }
        }
    }

    /// The signature is all jwt-kit checks; the claims are ``IDTokenRules``'.
    struct SignatureOnly: JWTPayload {
        func verify(using algorithm: some JWTAlgorithm) async throws {}
        init(from decoder: any Decoder) throws {}
        func encode(to encoder: any Encoder) throws {}
    }
}

/// PKCE (RFC 7636) with S256, and the other random values of a sign-in attempt.
public enum SignInSecrets {
    /// 32 random bytes, base64url without padding (43 characters).
    public static func random() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        return base64URL(bytes)
    }

    /// The S256 challenge of a verifier: base64url(SHA-256(verifier)).
    public static func challenge(verifier: String) -> String {
        base64URL(Array(SHA256.hash(data: Data(verifier.utf8))))
    }

    /// The attempt id ProvisionSvc keeps for single use: SHA-256 of the state.
    public static func attemptID(state: String) -> [UInt8] { Array(SHA256.hash(data: Data(state.utf8))) }

    /// The SHA-256 of an API token: all that is stored of it.
    public static func tokenHash(_ token: String) -> [UInt8] { Array(SHA256.hash(data: Data(token.utf8))) }

    public static func base64URL(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// A browser session as its cookie carries it (sealed: encrypted and authenticated). The gateway
/// trusts it only as far as ProvisionSvc confirms the session on every request.
public struct SessionCookie: Codable, Sendable, Equatable {
    /// Session, user and tenant ids.
    public var sid: String
    public var uid: String
    public var tid: String
    /// The role at sign-in (a hint; the stored role decides).
    public var role: String
    public var amr: [String]
    public var provider: String
    /// Unix seconds: when it was opened, when it ends unless renewed, when it ends at the latest.
    public var iat: Int64
    public var idle: Int64
    public var max: Int64

    public init(sid: String, uid: String, tid: String, role: String, amr: [String], provider: String, iat: Int64, idle: Int64, max: Int64) {
        self.sid = sid
        self.uid = uid
        self.tid = tid
        self.role = role
        self.amr = amr
        self.provider = provider
        self.iat = iat
        self.idle = idle
        self.max = max
    }
}

/// A sign-in attempt as its cookie carries it between the redirect and the callback: the state,
/// the nonce and the PKCE verifier (a secret, hence sealed), where to go afterwards, and its end.
public struct LoginTransaction: Codable, Sendable, Equatable {
    public var provider: String
    public var state: String
    public var nonce: String
    public var verifier: String
    public var returnTo: String
    /// Unix seconds.
    public var expires: Int64

    public init(provider: String, state: String, nonce: String, verifier: String, returnTo: String, expires: Int64) {
        self.provider = provider
        self.state = state
        self.nonce = nonce
        self.verifier = verifier
        self.returnTo = returnTo
        self.expires = expires
    }
}

/// Seals and opens the gateway's cookies with ChaCha20-Poly1305, one key per purpose (derived with
/// HKDF from the deployment's session secret), so a cookie of one kind never opens as another and
/// every replica with the same secret reads every other replica's cookies.
public struct CookieSealer: Sendable {
    let sessionKey: SymmetricKey
    let loginKey: SymmetricKey

    /// What a cookie is for.
    public enum Purpose: Sendable { case session, login }

    /// Keys from a secret of at least 32 bytes.
    public init(secret: [UInt8]) throws(MeshError) {
        guard secret.count >= 32 else {
            throw .invalidArgument(field: "MESH_SESSION_SECRET", message: "the session secret must be at least 32 bytes")
        }
        let ikm = SymmetricKey(data: secret)
        let salt = Data("quazzar-mesh cookies".utf8)
        sessionKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, salt: salt, info: Data("session v1".utf8), outputByteCount: 32)
        loginKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, salt: salt, info: Data("sign-in attempt v1".utf8), outputByteCount: 32)
    }

    func key(_ p: Purpose) -> SymmetricKey { p == .session ? sessionKey : loginKey }

    /// The value, JSON-encoded, sealed, base64url.
    public func seal(_ value: some Encodable, purpose: Purpose) -> String {
        let json = (try? JSONEncoder().encode(value)) ?? Data()
        guard let box = try? ChaChaPoly.seal(json, using: key(purpose)) else { return "" }
        return SignInSecrets.base64URL(box.combined)
    }

    /// The value, or nil for anything not sealed with this secret for this purpose.
    public func open<T: Decodable>(_ text: String, as type: T.Type, purpose: Purpose) -> T? {
        guard text.utf8.count <= 4096, let bytes = JWTKeyMaterial.base64Bytes(text),
              let box = try? ChaChaPoly.SealedBox(combined: bytes),
              let json = try? ChaChaPoly.open(box, using: key(purpose)) else { return nil }
        return try? JSONDecoder().decode(T.self, from: json)
    }
}

import Crypto
import Foundation
import JWTKit
import MeshDomain
import MeshNet
import MeshProto
import Synchronization

/// The claims of every token the Gateway accepts.
///
/// A user token has `sub` = the user id (UUID), `tenant`, `role` (owner or admin), `exp`, and
/// optionally `amr` (authentication methods, e.g. `["saml"]`; the identity provider that did the
/// login sets it). A node token (the CC-agent token) has `sub` = `node:<node id>`, `tenant` and `exp`.
public struct MeshClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var tenant: String
    public var role: String?
    public var exp: ExpirationClaim
    public var amr: [String]?
    public var iat: IssuedAtClaim?

    /// Claims for a token expiring at `expires`.
    public init(sub: String, tenant: String, role: String? = nil, expires: Date, amr: [String]? = nil, issuedAt: Date? = Date()) {
        self.sub = SubjectClaim(value: sub)
        self.tenant = tenant
        self.role = role
        self.exp = ExpirationClaim(value: expires)
        self.amr = amr
        self.iat = issuedAt.map { IssuedAtClaim(value: $0) }
    }

    /// Checks the expiry; the rest is checked by ``TokenVerifier`` when it builds an identity.
    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// Who a request is made by, from a verified token.
public enum Identity: Sendable, Equatable {
    case user(tenantID: String, userID: String, role: Mesh_V1_Role, amr: [String])
    case node(tenantID: String, nodeID: String)

    /// The tenant the token is for.
    public var tenantID: String {
        switch self {
        case .user(let t, _, _, _), .node(let t, _): t
        }
    }

    /// The identity in the form services expect.
    public func caller(requestID: String) -> Mesh_V1_Caller {
        var c = Mesh_V1_Caller()
        c.requestID = requestID
        switch self {
        case .user(let tenant, let user, let role, let amr):
            c.tenantID = tenant
            c.userID = user
            c.role = role
            c.amr = amr
        case .node(let tenant, let node):
            c.tenantID = tenant
            c.nodeID = node
        }
        return c
    }
}

/// The keys tokens are signed with: an HMAC secret (HS256) and/or an Ed25519 key (EdDSA).
public struct JWTKeyMaterial: Sendable {
    /// The HS256 secret; at least ``minimumSecretBytes`` bytes.
    public var hmacSecret: [UInt8]?
    /// The Ed25519 public key that verifies EdDSA tokens.
    public var eddsaPublicKey: Curve25519.Signing.PublicKey?
    /// The Ed25519 private key that signs EdDSA tokens (meshctl only).
    public var eddsaPrivateKey: Curve25519.Signing.PrivateKey?

    /// HS256 secrets shorter than this are refused: they are guessable, and jwt-kit traps on them in debug builds.
    public static let minimumSecretBytes = 32

    /// Keys as given; a secret shorter than ``minimumSecretBytes`` is refused.
    public init(hmacSecret: [UInt8]? = nil, eddsaPublicKey: Curve25519.Signing.PublicKey? = nil,
                eddsaPrivateKey: Curve25519.Signing.PrivateKey? = nil) throws(MeshError) {
        if let s = hmacSecret, s.count < Self.minimumSecretBytes {
            throw .invalidArgument(field: "MESH_JWT_SECRET", message: "the JWT secret must be at least \(Self.minimumSecretBytes) bytes")
        }
        self.hmacSecret = hmacSecret
        self.eddsaPrivateKey = eddsaPrivateKey
        self.eddsaPublicKey = eddsaPublicKey ?? eddsaPrivateKey?.publicKey
    }

    /// Reads MESH_JWT_SECRET, MESH_JWT_EDDSA_PUBLIC_KEY and (for signing) MESH_JWT_EDDSA_PRIVATE_KEY
    /// through `secret` (ServiceKit's `Env.secret`, which also reads `NAME_FILE`).
    public static func fromEnvironment(secret: (String) throws -> String?) throws -> JWTKeyMaterial {
        let hmac = try secret("MESH_JWT_SECRET").map { Array($0.utf8) }
        let pub = try secret("MESH_JWT_EDDSA_PUBLIC_KEY").map { try parsePublicKey($0) }
        let priv = try secret("MESH_JWT_EDDSA_PRIVATE_KEY").map { try parsePrivateKey($0) }
        return try JWTKeyMaterial(hmacSecret: hmac, eddsaPublicKey: pub, eddsaPrivateKey: priv)
    }

    /// An Ed25519 public key as PEM, or as base64/base64url of its 32 raw bytes.
    public static func parsePublicKey(_ text: String) throws(MeshError) -> Curve25519.Signing.PublicKey {
        if text.contains("BEGIN PUBLIC KEY"), let k = try? Curve25519.Signing.PublicKey(pemRepresentation: text) { return k }
        if let raw = base64Bytes(text), let k = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) { return k }
        throw .invalidArgument(field: "MESH_JWT_EDDSA_PUBLIC_KEY", message: "not an Ed25519 public key (PEM, or base64 of 32 bytes)")
    }

    /// An Ed25519 private key as PEM, or as base64/base64url of its 32-byte seed.
    public static func parsePrivateKey(_ text: String) throws(MeshError) -> Curve25519.Signing.PrivateKey {
        if text.contains("PRIVATE KEY"), let k = try? Curve25519.Signing.PrivateKey(pemRepresentation: text) { return k }
        if let raw = base64Bytes(text), let k = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) { return k }
        throw .invalidArgument(field: "MESH_JWT_EDDSA_PRIVATE_KEY", message: "not an Ed25519 private key (PEM, or base64 of its 32-byte seed)")
    }

    static func base64Bytes(_ text: String) -> [UInt8]? {
        var s = text.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { [UInt8]($0) }
    }
}

/// Verifies bearer tokens and turns them into an ``Identity``.
///
/// The algorithm in the token's header picks the key: `HS256` the HMAC secret, `EdDSA` the Ed25519
/// key. Anything else (`none` included) is refused before any key is tried, so a token can never
/// choose a weaker algorithm than the one its key was configured for.
public struct TokenVerifier: Sendable {
    let hmac: JWTKeyCollection?
    let eddsa: JWTKeyCollection?
    /// Tokens already verified, by their exact text. A token never changes, so its signature and
    /// claims need checking once; only its expiry is checked again on every use.
    let verified = VerifiedTokens(capacity: 4096)

    /// A verifier for the keys that are present.
    public init(keys: JWTKeyMaterial) async {
        if let secret = keys.hmacSecret {
            hmac = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        } else {
            hmac = nil
        }
        if let pub = keys.eddsaPublicKey {
            eddsa = await JWTKeyCollection().add(eddsa: EdDSA.PublicKey(backing: pub))
        } else {
            eddsa = nil
        }
    }

    /// The identity of a verified token; `unauthenticated` for anything missing, malformed,
    /// expired, wrongly signed or with an unaccepted algorithm.
    public func verify(_ token: String) async throws(MeshError) -> Identity {
        let now = Date()
        if let (identity, expires) = verified.lookup(token) {
            guard expires > now else { throw .unauthenticated("token expired") }
            return identity
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = JWTKeyMaterial.base64Bytes(String(parts[0])),
              let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
              let alg = header["alg"] as? String else {
            throw .unauthenticated("malformed bearer token")
        }
        let keys: JWTKeyCollection? = switch alg {
        case "HS256": hmac
        case "EdDSA": eddsa
        default: nil
        }
        guard let keys else { throw .unauthenticated("unsupported token algorithm") }
        let claims: MeshClaims
        do {
            claims = try await keys.verify(token, as: MeshClaims.self)
        } catch let e as JWTError where e.errorType == .claimVerificationFailure {
            throw .unauthenticated("token expired")
        } catch {
            throw .unauthenticated("invalid bearer token")
        }
        let identity = try Self.identity(claims)
        verified.insert(token, identity, expires: claims.exp.value)
        return identity
    }

    /// Checks the claims' shape: UUIDs for tenant, user and node, and a known role.
    static func identity(_ c: MeshClaims) throws(MeshError) -> Identity {
        guard let tenant = UUID(text: c.tenant) else { throw .unauthenticated("token has no valid tenant") }
        let sub = c.sub.value
        if sub.hasPrefix("node:") {
            guard let node = UUID(text: String(sub.dropFirst(5))) else { throw .unauthenticated("token has no valid subject") }
            return .node(tenantID: tenant.lowercasedText, nodeID: node.lowercasedText)
        }
        guard let user = UUID(text: sub) else { throw .unauthenticated("token has no valid subject") }
        guard let role = c.role.flatMap({ Mesh_V1_Role(key: $0) }) else { throw .unauthenticated("token has no valid role") }
        let amr = (c.amr ?? []).filter { !$0.isEmpty && $0.count <= 64 }.prefix(16).map { $0.lowercased() }
        return .user(tenantID: tenant.lowercasedText, userID: user.lowercasedText, role: role, amr: Array(amr))
    }
}

/// A bounded map of verified tokens to their identity and expiry. When full, the entries already
/// expired go first, and if none has, all of them (the next requests verify afresh).
final class VerifiedTokens: Sendable {
    private let entries: Mutex<[String: (identity: Identity, expires: Date)]>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        entries = Mutex([:])
    }

    func lookup(_ token: String) -> (Identity, Date)? {
        entries.withLock { $0[token] }.map { ($0.identity, $0.expires) }
    }

    func insert(_ token: String, _ identity: Identity, expires: Date) {
        entries.withLock { e in
            if e.count >= capacity {
                let now = Date()
                e = e.filter { $0.value.expires > now }
                if e.count >= capacity { e.removeAll(keepingCapacity: true) }
            }
            e[token] = (identity, expires)
        }
    }

    var count: Int { entries.withLock { $0.count } }
}

/// Signs tokens with the same keys the Gateway verifies with (used by `meshctl token` and tests).
public struct TokenMinter: Sendable {
    let keys: JWTKeyCollection
    /// The algorithm tokens are signed with.
    public let algorithm: String

    /// Signs with HS256 when a secret is present, otherwise with EdDSA.
    public init(keys material: JWTKeyMaterial, preferEdDSA: Bool = false) async throws(MeshError) {
        if let secret = material.hmacSecret, !(preferEdDSA && material.eddsaPrivateKey != nil) {
            keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            algorithm = "HS256"
        } else if let priv = material.eddsaPrivateKey {
            keys = await JWTKeyCollection().add(eddsa: EdDSA.PrivateKey(backing: priv))
            algorithm = "EdDSA"
        } else {
            throw .failedPrecondition("no signing key: set MESH_JWT_SECRET[_FILE] or MESH_JWT_EDDSA_PRIVATE_KEY[_FILE]")
        }
    }

    /// A token for a user.
    public func user(tenantID: String, userID: String, role: Mesh_V1_Role, ttl: Duration = .seconds(3600),
                     amr: [String]? = nil, now: Date = Date()) async throws -> String {
        // Whole seconds: NumericDate may have fractions, but many verifiers expect integers.
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        return try await keys.sign(MeshClaims(sub: userID.lowercased(), tenant: tenantID.lowercased(), role: role.key,
                                       expires: now.addingTimeInterval(ttl.timeInterval), amr: amr, issuedAt: now))
    }

    /// A CC-agent token for a node.
    public func node(tenantID: String, nodeID: String, ttl: Duration = .seconds(3600), now: Date = Date()) async throws -> String {
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        return try await keys.sign(MeshClaims(sub: "node:\(nodeID.lowercased())", tenant: tenantID.lowercased(),
                                       expires: now.addingTimeInterval(ttl.timeInterval), issuedAt: now))
    }

    /// Any claims (tests use this for expired tokens and odd shapes).
    public func sign(_ claims: MeshClaims) async throws -> String {
        try await keys.sign(claims)
    }
}

extension Duration {
    /// Seconds as a `TimeInterval`.
    var timeInterval: TimeInterval { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

import Foundation
import MeshProto

// The rules of signing people in through an OpenID Connect provider: what an ID token must say,
// what the provider's claims mean (tenant, admin, SAML), and when the provider's keys may be read
// again. The gateway applies them to what it verified; nothing here does I/O or cryptography.

/// Why a sign-in was refused. Each case has a stable `reason` (for clients and tests) and a
/// message that is safe to show; no case opens a session.
public enum SignInError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The provider id names no configured provider.
    case unknownProvider(String)
    /// The callback came without the browser's sign-in cookie (another browser, or it expired).
    case noAttempt
    /// The sign-in cookie is older than its time to live.
    case attemptExpired
    /// The callback's `state` is not the one this browser's sign-in started with.
    case stateMismatch
    /// The attempt was already finished once (a replayed callback), or no gateway started it.
    case replayed
    /// The provider answered the authorization request with an error (e.g. `access_denied`).
    case providerRefused(String)
    /// The provider could not be reached or answered something unusable.
    case providerUnavailable(String)
    /// The token endpoint refused the code (e.g. a wrong PKCE verifier, a used code).
    case codeRefused(String)
    /// The ID token is not a signed JWT (`alg: none`, no signature, not three parts).
    case unsigned
    /// The ID token uses an algorithm that is not accepted (HMAC, or one the provider does not announce).
    case algorithmNotAllowed(String)
    /// The ID token names a key (`kid`) the provider's JWKS does not hold, even after reading it again.
    case unknownKey
    /// The signature does not verify with the provider's key.
    case badSignature
    /// `iss` is not the provider's issuer.
    case wrongIssuer
    /// `aud` (or `azp`) does not name this client.
    case wrongAudience
    /// `exp` has passed.
    case expired
    /// `iat` lies in the future.
    case issuedInFuture
    /// `nonce` is not the one this sign-in sent.
    case wrongNonce
    /// The token has no usable `sub`.
    case missingSubject
    /// The identity has no account, no valid invitation, and the provider names no tenant.
    case notInvited
    /// The identity was invited, but the invitation lapsed.
    case invitationExpired
    /// The tenant the provider names does not exist.
    case unknownTenant

    /// A stable snake_case name of the refusal.
    public var reason: String {
        switch self {
        case .unknownProvider: "unknown_provider"
        case .noAttempt: "no_sign_in_in_progress"
        case .attemptExpired: "sign_in_expired"
        case .stateMismatch: "state_mismatch"
        case .replayed: "state_replayed"
        case .providerRefused: "provider_refused"
        case .providerUnavailable: "provider_unavailable"
        case .codeRefused: "code_refused"
        case .unsigned: "id_token_unsigned"
        case .algorithmNotAllowed: "id_token_algorithm"
        case .unknownKey: "id_token_unknown_key"
        case .badSignature: "id_token_signature"
        case .wrongIssuer: "id_token_issuer"
        case .wrongAudience: "id_token_audience"
        case .expired: "id_token_expired"
        case .issuedInFuture: "id_token_issued_in_future"
        case .wrongNonce: "id_token_nonce"
        case .missingSubject: "id_token_subject"
        case .notInvited: "not_invited"
        case .invitationExpired: "invitation_expired"
        case .unknownTenant: "unknown_tenant"
        }
    }

    /// What the person is told.
    public var message: String {
        switch self {
        case .unknownProvider(let p): "no sign-in provider \"\(p)\" is configured"
        case .noAttempt: "no sign-in is in progress in this browser: start again"
        case .attemptExpired: "the sign-in took too long: start again"
        case .stateMismatch: "the sign-in answer does not belong to this browser's sign-in (state mismatch): start again"
        case .replayed: "this sign-in was already completed (its state was used before): start again"
        case .providerRefused(let e): "the identity provider refused the sign-in (\(e))"
        case .providerUnavailable(let m): "the identity provider could not be reached: \(m)"
        case .codeRefused(let e): "the identity provider did not accept the authorization code (\(e))"
        case .unsigned: "the ID token is not signed"
        case .algorithmNotAllowed(let a): "the ID token is signed with an algorithm that is not accepted (\(a))"
        case .unknownKey: "the ID token is signed with a key the identity provider does not publish"
        case .badSignature: "the ID token's signature does not verify"
        case .wrongIssuer: "the ID token was issued by another issuer"
        case .wrongAudience: "the ID token is for another client (aud)"
        case .expired: "the ID token has expired"
        case .issuedInFuture: "the ID token is dated in the future"
        case .wrongNonce: "the ID token's nonce does not match this sign-in"
        case .missingSubject: "the ID token names no subject"
        case .notInvited: "there is no account for this identity: ask an admin of your tenant for an invitation"
        case .invitationExpired: "your invitation has expired: ask an admin for a new one"
        case .unknownTenant: "the tenant your identity provider names does not exist"
        }
    }

    public var description: String { "\(reason): \(message)" }

    /// The sign-in refusals ProvisionSvc decides travel on the bus as `unauthenticated` or
    /// `permission_denied` with the message; this recovers the case from the message.
    public static func fromBus(_ e: MeshError) -> SignInError? {
        let all: [SignInError] = [.replayed, .notInvited, .invitationExpired, .unknownTenant]
        return all.first { $0.meshError == e }
    }

    /// The domain error carrying this refusal over the bus.
    public var meshError: MeshError {
        switch self {
        case .notInvited, .invitationExpired, .unknownTenant: .permissionDenied(message)
        case .providerUnavailable: .unavailable(message)
        default: .unauthenticated(message)
        }
    }
}

/// The claims of an ID token that decide whether it is accepted (OpenID Connect Core 3.1.3.7).
public struct IDTokenFacts: Sendable, Equatable {
    public var issuer: String
    public var audience: [String]
    public var authorizedParty: String?
    public var subject: String
    public var expires: Date
    public var issuedAt: Date?
    public var nonce: String?

    public init(issuer: String, audience: [String], authorizedParty: String? = nil, subject: String, expires: Date,
                issuedAt: Date? = nil, nonce: String? = nil) {
        self.issuer = issuer
        self.audience = audience
        self.authorizedParty = authorizedParty
        self.subject = subject
        self.expires = expires
        self.issuedAt = issuedAt
        self.nonce = nonce
    }
}

/// The checks of an ID token's claims once its signature verified.
public enum IDTokenRules {
    /// Clock skew tolerated between the provider and us.
    public static let leeway: TimeInterval = 60

    /// Throws the first refusal: issuer, audience (and `azp` when there are several audiences or
    /// one is given), expiry, issue time, nonce, subject.
    public static func check(_ t: IDTokenFacts, issuer: String, clientID: String, nonce: String, now: Date) throws(SignInError) {
        guard t.issuer == issuer else { throw .wrongIssuer }
        guard t.audience.contains(clientID) else { throw .wrongAudience }
        if let azp = t.authorizedParty, azp != clientID { throw .wrongAudience }
        if t.audience.count > 1 && t.authorizedParty == nil { throw .wrongAudience }
        guard t.expires.timeIntervalSince(now) > -leeway else { throw .expired }
        if let iat = t.issuedAt, iat.timeIntervalSince(now) > leeway { throw .issuedInFuture }
        guard let n = t.nonce, constantTimeEqual(n, nonce) else { throw .wrongNonce }
        guard !t.subject.isEmpty, t.subject.utf8.count <= 255 else { throw .missingSubject }
    }

    /// The signing algorithms accepted for ID tokens: asymmetric only. A shared-secret (HS*)
    /// token could be made by anyone who knows the client secret; `none` by anyone.
    public static let asymmetricAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    /// Throws unless `alg` is asymmetric and (when the provider announces a list) announced.
    public static func checkAlgorithm(_ alg: String?, announced: [String]) throws(SignInError) {
        guard let alg, !alg.isEmpty, alg.lowercased() != "none" else { throw .unsigned }
        guard asymmetricAlgorithms.contains(alg), announced.isEmpty || announced.contains(alg) else { throw .algorithmNotAllowed(alg) }
    }
}

/// Compares two strings in time that depends only on their lengths.
public func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var diff: UInt8 = 0
    for i in x.indices { diff |= x[i] ^ y[i] }
    return diff == 0
}

/// A claim value of an ID token, as far as the mapping rules read it.
public enum ClaimValue: Sendable, Equatable {
    case string(String)
    case strings([String])
    case bool(Bool)
    case number(Double)
    /// Objects and anything else: never matches.
    case other

    /// The value as a list of strings (a string is a list of one; `true` reads as "true").
    public var texts: [String] {
        switch self {
        case .string(let s): [s]
        case .strings(let a): a
        case .bool(let b): [b ? "true" : "false"]
        case .number(let n): [n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n)]
        case .other: []
        }
    }
}

/// `claim=value`: holds when the claim is that string, or a list containing it (e.g.
/// `groups=mesh-admins`, `amr=saml`, `acr=urn:example:saml`). Without `=value`, the claim must be
/// `true` (e.g. `mesh_admin`).
public struct ClaimMatch: Sendable, Equatable, CustomStringConvertible {
    public var claim: String
    public var value: String

    public init(claim: String, value: String) {
        self.claim = claim
        self.value = value
    }

    /// Parses `claim=value` or `claim`; `invalidArgument` naming `field` otherwise.
    public init(parsing text: String, field: String) throws(MeshError) {
        let t = text.trimmingCharacters(in: .whitespaces)
        let parts = t.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let name = parts.first, !name.isEmpty, name.utf8.count <= 128, !name.contains(" ") else {
            throw .invalidArgument(field: field, message: "\(field) must be claim=value or claim")
        }
        claim = name
        value = parts.count == 2 ? parts[1] : "true"
        guard !value.isEmpty else { throw .invalidArgument(field: field, message: "\(field) must be claim=value or claim") }
    }

    public func matches(_ claims: [String: ClaimValue]) -> Bool {
        claims[claim]?.texts.contains(value) ?? false
    }

    public var description: String { "\(claim)=\(value)" }
}

/// What one provider's claims mean for us: the tenant (a claim naming it, or a fixed tenant), the
/// admin role (a claim or group), and a SAML-authenticated session (by default `amr` containing
/// `saml`, as a SAML-brokering provider can be set up to say).
public struct ProviderClaimMapping: Sendable, Equatable {
    /// The claim whose value is the tenant id (UUID).
    public var tenantClaim: String?
    /// The tenant every user of this provider belongs to.
    public var tenant: String?
    /// Makes an admin; when set, the provider decides the role at every sign-in.
    public var admin: ClaimMatch?
    /// Marks a SAML-authenticated session.
    public var saml: ClaimMatch

    public init(tenantClaim: String? = nil, tenant: String? = nil, admin: ClaimMatch? = nil, saml: ClaimMatch = ClaimMatch(claim: "amr", value: "saml")) {
        self.tenantClaim = tenantClaim
        self.tenant = tenant
        self.admin = admin
        self.saml = saml
    }

    /// The tenant id the claims name (lowercased), or nil: the fixed tenant wins, then the claim.
    public func tenant(in claims: [String: ClaimValue]) -> String? {
        if let tenant { return tenant.lowercased() }
        guard let name = tenantClaim, let v = claims[name]?.texts.first, let id = UUID(uuidString: v) else { return nil }
        return id.uuidString.lowercased()
    }

    /// The role the provider gives, when it decides roles.
    public func role(in claims: [String: ClaimValue]) -> Mesh_V1_Role {
        guard let admin else { return .unspecified }
        return admin.matches(claims) ? .admin : .owner
    }

    /// How the person authenticated: the `amr` values (lowercase, at most 16), plus `saml` when
    /// the SAML rule holds.
    public func amr(in claims: [String: ClaimValue]) -> [String] {
        var out = (claims["amr"]?.texts ?? []).map { $0.lowercased() }.filter { !$0.isEmpty && $0.utf8.count <= 64 }
        if saml.matches(claims) && !out.contains("saml") { out.append("saml") }
        return Array(out.prefix(16))
    }
}

/// When the provider's keys (JWKS) may be read again for a key id it does not hold: once per
/// `interval`, so that tokens with made-up key ids cannot make the gateway hammer the provider.
public struct JWKSRefreshPolicy: Sendable, Equatable {
    public var interval: Duration

    public init(interval: Duration = .seconds(30)) { self.interval = interval }

    public func mayRefresh(lastForced: Date?, now: Date) -> Bool {
        guard let last = lastForced else { return true }
        return now.timeIntervalSince(last) >= Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
    }
}

import Foundation

/// Signs node user JWTs with the mesh account's signing key (ProvisionSvc holds it). The node made
/// its own key pair and sent only the public key, so what this returns is not secret.
public struct NodeCredentialIssuer: Sendable {
    /// The account signing key (`SA...` seed).
    let signingKey: NKeyPair
    /// The mesh account's public key (`A...`), the `issuer_account` of every node JWT.
    public let account: String
    /// Lifetime of a node JWT; nil for none.
    public let lifetime: Duration?

    /// - Parameters:
    ///   - signingSeed: the account signing key's seed.
    ///   - accountJWT: the mesh account's JWT; its subject is the account, and it must list the signing key.
    public init(signingSeed: String, accountJWT: String, lifetime: Duration? = nil) throws {
        signingKey = try NKeyPair(seed: signingSeed, expecting: .account)
        let claims = try NatsJWT.decode(accountJWT)
        guard let sub = claims["sub"]?.stringValue, NKeyCodec.kind(ofPublicKey: sub) == .account else {
            throw NKeyError.invalidJWT("the account JWT's subject is not an account key")
        }
        let keys: [String]
        if case .array(let list)? = claims["nats"]?["signing_keys"] {
            keys = list.compactMap { $0.stringValue ?? $0["key"]?.stringValue }
        } else {
            keys = []
        }
        guard keys.contains(signingKey.publicKey) || sub == signingKey.publicKey else {
            throw NKeyError.invalidJWT("the account JWT does not list the configured signing key \(signingKey.publicKey)")
        }
        account = sub
        self.lifetime = lifetime
    }

    /// A user JWT for `userKey` (`U...`), with the node's permissions.
    public func issue(node: String, tenant: String, userKey: String, now: Date = Date()) throws -> (jwt: String, expires: Date?) {
        guard NKeyCodec.kind(ofPublicKey: userKey) == .user else { throw NKeyError.wrongKind(expected: .user) }
        let iat = Int64(now.timeIntervalSince1970)
        let exp = lifetime.map { iat + $0.components.seconds }
        let claims = NatsClaims.user(subject: userKey, name: "node:\(node)", permissions: BusPolicy.node(tenant: tenant, node: node),
                                     issuerAccount: signingKey.publicKey == account ? nil : account, expires: exp)
        let jwt = try NatsJWT.sign(claims, issuer: signingKey, issuedAt: iat)
        return (jwt, exp.map { Date(timeIntervalSince1970: TimeInterval($0)) })
    }
}

/// Re-signs the mesh account's JWT with a new revocation list (with the operator's signing key), so
/// nats-server disconnects revoked users and refuses them from then on.
public struct AccountRevocationSigner: Sendable {
    let operatorSigningKey: NKeyPair
    /// The account's claims as issued (limits, signing keys, anything an operator added).
    let baseClaims: JSONValue
    /// The account's public key.
    public let account: String

    public init(operatorSigningSeed: String, accountJWT: String) throws {
        operatorSigningKey = try NKeyPair(seed: operatorSigningSeed, expecting: .operator)
        baseClaims = try NatsJWT.decode(accountJWT)
        guard let sub = baseClaims["sub"]?.stringValue, NKeyCodec.kind(ofPublicKey: sub) == .account else {
            throw NKeyError.invalidJWT("the account JWT's subject is not an account key")
        }
        account = sub
    }

    /// The account JWT with exactly `revocations` (user key → revoked at, Unix seconds).
    public func sign(revocations: [String: Int64], issuedAt: Int64? = nil) throws -> String {
        try NatsJWT.sign(NatsClaims.withRevocations(baseClaims, revocations), issuer: operatorSigningKey, issuedAt: issuedAt)
    }

    /// The subject that pushes an account JWT to servers with a full resolver (system account only).
    public var claimsUpdateSubject: String { "$SYS.REQ.ACCOUNT.\(account).CLAIMS.UPDATE" }
}

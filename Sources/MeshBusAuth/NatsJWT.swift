import Crypto
import Foundation

/// A JSON value that round-trips unknown members, so a JWT's claims can be re-signed without losing
/// anything an operator added.
public enum JSONValue: Sendable, Equatable, Codable {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case null

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .object(let o): try c.encode(o)
        case .array(let a): try c.encode(a)
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .bool(let b): try c.encode(b)
        case .null: try c.encodeNil()
        }
    }

    /// The member `key` of an object.
    public subscript(key: String) -> JSONValue? {
        get { if case .object(let o) = self { o[key] } else { nil } }
        set {
            guard case .object(var o) = self else { return }
            o[key] = newValue
            self = .object(o)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var intValue: Int64? {
        switch self {
        case .int(let i): i
        case .double(let d): Int64(exactly: d)
        default: nil
        }
    }

    /// A JSON array of strings.
    public static func strings(_ list: [String]) -> JSONValue { .array(list.map { .string($0) }) }
}

/// NATS JWTs (the `ed25519-nkey` algorithm of nats-io/jwt v2): base64url header and claims, signed
/// with the issuer's nkey. Operator, account and user claims all share this envelope.
public enum NatsJWT {
    /// The header every NATS JWT carries.
    static let header = #"{"typ":"JWT","alg":"ed25519-nkey"}"#

    /// Signs `claims` (an object holding at least `sub`), setting `iss`, `iat` (now unless given) and `jti`.
    public static func sign(_ claims: JSONValue, issuer: NKeyPair, issuedAt: Int64? = nil) throws -> String {
        guard case .object = claims, claims["sub"]?.stringValue != nil else { throw NKeyError.invalidJWT("claims need a subject") }
        var c = claims
        c["iss"] = .string(issuer.publicKey)
        c["iat"] = .int(issuedAt ?? Int64(Date().timeIntervalSince1970))
        c["jti"] = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A unique id over the claims themselves, as nats-io/jwt derives it (base32 of a hash).
        c["jti"] = .string(Base32.encode(Array(SHA256.hash(data: try encoder.encode(c)))))
        let payload = try encoder.encode(c)
        let signingInput = base64url(Array(header.utf8)) + "." + base64url(Array(payload))
        let signature = issuer.sign(Array(signingInput.utf8))
        return signingInput + "." + base64url(signature)
    }

    /// Decodes a JWT and verifies its signature against its own `iss`. The caller decides whether
    /// that issuer is trusted.
    public static func decode(_ jwt: String) throws(NKeyError) -> JSONValue {
        let parts = jwt.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let h = unbase64url(String(parts[0])), let p = unbase64url(String(parts[1])),
              let sig = unbase64url(String(parts[2])) else { throw .invalidJWT("not three base64url parts") }
        guard let header = try? JSONDecoder().decode(JSONValue.self, from: Data(h)),
              header["alg"]?.stringValue?.lowercased() == "ed25519-nkey" else { throw .invalidJWT("algorithm is not ed25519-nkey") }
        guard let claims = try? JSONDecoder().decode(JSONValue.self, from: Data(p)), case .object = claims else {
            throw .invalidJWT("claims are not a JSON object")
        }
        guard let iss = claims["iss"]?.stringValue else { throw .invalidJWT("no issuer") }
        guard NKeyCodec.verify(signature: sig, of: Array("\(parts[0]).\(parts[1])".utf8), publicKey: iss) else {
            throw .invalidSignature
        }
        return claims
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ s: String) -> [UInt8]? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t).map(Array.init)
    }
}

/// Publish and subscribe permissions of a NATS user (the `pub`, `sub` and `resp` members of a user JWT).
public struct BusPermissions: Sendable, Equatable {
    public var publishAllow: [String]
    public var publishDeny: [String]
    public var subscribeAllow: [String]
    public var subscribeDeny: [String]
    /// When set, the user may publish this many replies to the reply subject of each message it received.
    public var responses: Int?
    /// How long a response permission lasts.
    public var responseTTL: Duration

    public init(publishAllow: [String] = [], publishDeny: [String] = [], subscribeAllow: [String] = [],
                subscribeDeny: [String] = [], responses: Int? = nil, responseTTL: Duration = .seconds(60)) {
        self.publishAllow = publishAllow
        self.publishDeny = publishDeny
        self.subscribeAllow = subscribeAllow
        self.subscribeDeny = subscribeDeny
        self.responses = responses
        self.responseTTL = responseTTL
    }

    /// The claims members (`pub`, `sub`, `resp`) for these permissions.
    func members() -> [String: JSONValue] {
        func rule(_ allow: [String], _ deny: [String]) -> JSONValue {
            var o: [String: JSONValue] = [:]
            if !allow.isEmpty { o["allow"] = .strings(allow) }
            if !deny.isEmpty { o["deny"] = .strings(deny) }
            return .object(o)
        }
        var m: [String: JSONValue] = ["pub": rule(publishAllow, publishDeny), "sub": rule(subscribeAllow, subscribeDeny)]
        if let responses {
            let (s, atto) = responseTTL.components
            m["resp"] = .object(["max": .int(Int64(responses)), "ttl": .int(s * 1_000_000_000 + atto / 1_000_000_000)])
        }
        return m
    }
}

/// Builders for the three kinds of claims.
public enum NatsClaims {
    /// User claims: `subject` is the user's public key; `issuerAccount` is set when a signing key
    /// (not the account's own key) signs them.
    public static func user(subject: String, name: String, permissions: BusPermissions, issuerAccount: String? = nil,
                            expires: Int64? = nil) -> JSONValue {
        var nats = permissions.members()
        nats["subs"] = .int(-1)
        nats["data"] = .int(-1)
        nats["payload"] = .int(-1)
        nats["type"] = .string("user")
        nats["version"] = .int(2)
        if let issuerAccount { nats["issuer_account"] = .string(issuerAccount) }
        var c: [String: JSONValue] = ["sub": .string(subject), "name": .string(name), "nats": .object(nats)]
        if let expires { c["exp"] = .int(expires) }
        return .object(c)
    }

    /// Account claims without limits (JetStream off), with extra signing keys and revocations.
    public static func account(subject: String, name: String, signingKeys: [String] = [],
                               revocations: [String: Int64] = [:]) -> JSONValue {
        var nats: [String: JSONValue] = [
            "limits": .object(["subs": .int(-1), "data": .int(-1), "payload": .int(-1), "imports": .int(-1), "exports": .int(-1),
                               "wildcards": .bool(true), "conn": .int(-1), "leaf": .int(-1)]),
            "default_permissions": .object(["pub": .object([:]), "sub": .object([:])]),
            "type": .string("account"), "version": .int(2),
        ]
        if !signingKeys.isEmpty { nats["signing_keys"] = .strings(signingKeys) }
        if !revocations.isEmpty { nats["revocations"] = .object(revocations.mapValues { .int($0) }) }
        return .object(["sub": .string(subject), "name": .string(name), "nats": .object(nats)])
    }

    /// Operator claims (self-signed) naming the system account and the operator's signing keys.
    public static func `operator`(subject: String, name: String, systemAccount: String, signingKeys: [String]) -> JSONValue {
        .object(["sub": .string(subject), "name": .string(name),
                 "nats": .object(["system_account": .string(systemAccount), "signing_keys": .strings(signingKeys),
                                  "type": .string("operator"), "version": .int(2)])])
    }

    /// The same account claims with `revocations` replaced (an empty map removes the member).
    public static func withRevocations(_ account: JSONValue, _ revocations: [String: Int64]) -> JSONValue {
        var a = account
        var nats = a["nats"] ?? .object([:])
        nats["revocations"] = revocations.isEmpty ? nil : .object(revocations.mapValues { .int($0) })
        a["nats"] = nats
        return a
    }
}

/// The text of a `.creds` file: a user JWT and the seed that proves its holder, in the layout `nsc`
/// writes and nats.c reads.
public enum CredsFile {
    public static func format(jwt: String, seed: String) -> String {
        """
        -----BEGIN NATS USER JWT-----
        \(jwt)
        ------END NATS USER JWT------

        ************************* IMPORTANT *************************
        NKEY Seed printed below can be used to sign and prove identity.
        NKEYs are sensitive and should be treated as secrets.

        -----BEGIN USER NKEY SEED-----
        \(seed)
        ------END USER NKEY SEED------

        *************************************************************

        """
    }
}

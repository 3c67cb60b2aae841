import Crypto
import Foundation

/// The kinds of NATS nkey, each with its own prefix byte (the first character of the encoding).
public enum NKeyKind: UInt8, Sendable, CaseIterable {
    /// `O...`: the root of trust; signs account JWTs.
    case `operator` = 112  // 14 << 3
    /// `A...`: an account; signs user JWTs.
    case account = 0
    /// `U...`: a user (a connection's identity).
    case user = 160  // 20 << 3
    /// `N...`: a server.
    case server = 104  // 13 << 3

    /// The letter the encoded public key starts with.
    public var letter: Character {
        switch self {
        case .operator: "O"
        case .account: "A"
        case .user: "U"
        case .server: "N"
        }
    }
}

/// Errors of nkey and NATS JWT handling.
public enum NKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidEncoding
    case invalidChecksum
    case wrongKind(expected: NKeyKind)
    case invalidSignature
    case invalidJWT(String)

    public var description: String {
        switch self {
        case .invalidEncoding: "not a valid nkey encoding"
        case .invalidChecksum: "nkey checksum mismatch"
        case .wrongKind(let k): "expected a key of kind \(k) (\(k.letter)...)"
        case .invalidSignature: "signature verification failed"
        case .invalidJWT(let why): "invalid NATS JWT: \(why)"
        }
    }
}

/// An Ed25519 key pair in NATS's nkey encoding: the seed (`S` + kind letter + ...) and the public key
/// (kind letter + ...), both base32 with a CRC-16 checksum.
///
/// The seed is a secret. `description` never prints it.
public struct NKeyPair: Sendable, CustomStringConvertible {
    public let kind: NKeyKind
    /// The encoded public key, e.g. `UAB...`.
    public let publicKey: String
    /// The encoded seed, e.g. `SUA...`. Secret.
    public let seed: String
    private let signingKey: Curve25519.Signing.PrivateKey

    /// A new random key pair.
    public static func generate(_ kind: NKeyKind) -> NKeyPair {
        let key = Curve25519.Signing.PrivateKey()
        return NKeyPair(kind: kind, key: key)
    }

    /// Decodes an encoded seed (`S...`), optionally insisting on its kind.
    public init(seed: String, expecting expected: NKeyKind? = nil) throws(NKeyError) {
        let raw = try NKeyCodec.decodeChecked(seed.trimmingCharacters(in: .whitespacesAndNewlines))
        guard raw.count == 34 else { throw .invalidEncoding }
        // Two prefix bytes: 5 bits of the seed marker, then 5 bits of the kind, then 3 zero bits.
        guard raw[0] & 0xF8 == NKeyCodec.seedPrefix else { throw .invalidEncoding }
        let kindByte = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        guard let kind = NKeyKind(rawValue: kindByte) else { throw .invalidEncoding }
        if let expected, expected != kind { throw .wrongKind(expected: expected) }
        guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw[2..<34]) else { throw .invalidEncoding }
        self.init(kind: kind, key: key)
    }

    private init(kind: NKeyKind, key: Curve25519.Signing.PrivateKey) {
        self.kind = kind
        self.signingKey = key
        self.publicKey = NKeyCodec.encodePublic(kind, Array(key.publicKey.rawRepresentation))
        let prefix = [NKeyCodec.seedPrefix | (kind.rawValue >> 5), (kind.rawValue & 31) << 3]
        self.seed = NKeyCodec.encodeChecked(prefix + Array(key.rawRepresentation))
    }

    /// An Ed25519 signature of `data`.
    public func sign(_ data: some DataProtocol) -> [UInt8] {
        // Ed25519 signing only fails for invalid keys, which init rules out.
        Array((try? signingKey.signature(for: Data(data))) ?? Data())
    }

    public var description: String { "NKeyPair(\(kind), \(publicKey))" }
}

/// Encoding helpers for nkeys.
public enum NKeyCodec {
    static let seedPrefix: UInt8 = 144  // 18 << 3, encodes to 'S'

    /// Whether `key` is a well-formed public key of `kind`.
    public static func isValidPublicKey(_ key: String, kind: NKeyKind) -> Bool {
        (try? decodePublic(key, kind: kind)) != nil
    }

    /// The raw 32-byte Ed25519 public key inside an encoded public key.
    public static func decodePublic(_ key: String, kind: NKeyKind) throws(NKeyError) -> [UInt8] {
        let raw = try decodeChecked(key)
        guard raw.count == 33 else { throw .invalidEncoding }
        guard raw[0] == kind.rawValue else { throw .wrongKind(expected: kind) }
        return Array(raw[1...])
    }

    /// The kind of an encoded public key, if it is one.
    public static func kind(ofPublicKey key: String) -> NKeyKind? {
        guard let raw = try? decodeChecked(key), raw.count == 33 else { return nil }
        return NKeyKind(rawValue: raw[0])
    }

    /// Verifies an Ed25519 signature made by the holder of `publicKey` (any kind).
    public static func verify(signature: [UInt8], of data: some DataProtocol, publicKey: String) -> Bool {
        guard let raw = try? decodeChecked(publicKey), raw.count == 33,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw[1...]) else { return false }
        return key.isValidSignature(Data(signature), for: Data(data))
    }

    static func encodePublic(_ kind: NKeyKind, _ raw: [UInt8]) -> String {
        encodeChecked([kind.rawValue] + raw)
    }

    static func encodeChecked(_ bytes: [UInt8]) -> String {
        let crc = crc16(bytes)
        return Base32.encode(bytes + [UInt8(crc & 0xFF), UInt8(crc >> 8)])
    }

    static func decodeChecked(_ text: String) throws(NKeyError) -> [UInt8] {
        guard let raw = Base32.decode(text), raw.count > 2 else { throw .invalidEncoding }
        let body = Array(raw.dropLast(2))
        let crc = UInt16(raw[raw.count - 2]) | (UInt16(raw[raw.count - 1]) << 8)
        guard crc16(body) == crc else { throw .invalidChecksum }
        return body
    }

    /// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as nkeys uses.
    static func crc16(_ bytes: [UInt8]) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes {
            crc ^= UInt16(b) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }
}

/// RFC 4648 base32 (upper-case alphabet) without padding.
public enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// Encodes without `=` padding.
    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for b in bytes {
            buffer = (buffer << 8) | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes unpadded (or padded) base32; nil on any other character.
    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.utf8 where c != UInt8(ascii: "=") {
            let v: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "2")...UInt8(ascii: "7"): v = UInt32(c - UInt8(ascii: "2") + 26)
            default: return nil
            }
            buffer = (buffer << 5) | v
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return out
    }
}

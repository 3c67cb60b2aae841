import Crypto
import Foundation

/// A WireGuard (X25519) keypair from swift-crypto, as base64 text. The private key exists only in
/// memory; callers decide where it goes (a device's config, once; a node's key file, mode 0600).
public struct WireGuardKeyPair: Sendable {
    /// base64 of the 32-byte private key.
    public let privateKey: String
    /// base64 of the 32-byte public key.
    public let publicKey: String

    /// Generates a fresh keypair.
    public static func generate() -> WireGuardKeyPair {
        let k = Curve25519.KeyAgreement.PrivateKey()
        return WireGuardKeyPair(privateKey: k.rawRepresentation.base64EncodedString(),
                                publicKey: k.publicKey.rawRepresentation.base64EncodedString())
    }

    /// Rebuilds the pair from a base64 private key; nil unless it is 32 bytes of base64.
    public init?(privateKey: String) {
        guard let raw = Data(base64Encoded: privateKey), let pub = Self.publicKey(forPrivateKey: [UInt8](raw)) else { return nil }
        self.privateKey = privateKey
        publicKey = Data(pub).base64EncodedString()
    }

    private init(privateKey: String, publicKey: String) {
        self.privateKey = privateKey
        self.publicKey = publicKey
    }

    /// The public key of a 32-byte private key, as `wg pubkey` computes it (clamping included).
    public static func publicKey(forPrivateKey raw: [UInt8]) -> [UInt8]? {
        guard raw.count == 32, let k = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: raw) else { return nil }
        return [UInt8](k.publicKey.rawRepresentation)
    }
}

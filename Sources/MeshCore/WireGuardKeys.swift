import Crypto
import Foundation

/// A WireGuard (X25519) keypair from swift-crypto. The private key exists only in memory; callers
/// decide where it goes (a device's config, once; a node's key file, mode 0600).
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

    /// Rebuilds the pair from a base64 private key.
    public init(privateKey: String) throws(MeshError) {
        guard let raw = Data(base64Encoded: privateKey), raw.count == 32,
              let k = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: raw) else {
            throw .invalidArgument(field: "private_key", message: "private key must be 32 bytes of base64")
        }
        self.privateKey = privateKey
        publicKey = k.publicKey.rawRepresentation.base64EncodedString()
    }

    private init(privateKey: String, publicKey: String) {
        self.privateKey = privateKey
        self.publicKey = publicKey
    }

    /// Validates a base64 WireGuard public key (exactly 32 bytes, canonical base64).
    public static func validatePublicKey(_ key: String, field: String = "public_key") throws(MeshError) {
        guard key.utf8.count == 44, key.hasSuffix("="), let raw = Data(base64Encoded: key), raw.count == 32,
              raw.base64EncodedString() == key else {
            throw .invalidArgument(field: field, message: "\(field) must be a WireGuard key: 32 bytes of base64")
        }
    }
}

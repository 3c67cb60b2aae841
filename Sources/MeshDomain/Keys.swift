import Foundation

/// The rules for WireGuard keys as the control plane handles them: base64 text of 32 bytes.
/// Keys are made where they are used (MeshAuth makes a device's keypair; a node makes its own).
public enum WireGuardKeyText {
    /// Validates a base64 WireGuard public key (exactly 32 bytes, canonical base64).
    public static func validatePublicKey(_ key: String, field: String = "public_key") throws(MeshError) {
        guard isKey(key) else {
            throw .invalidArgument(field: field, message: "\(field) must be a WireGuard key: 32 bytes of base64")
        }
    }

    /// Whether `key` is canonical base64 of exactly 32 bytes.
    public static func isKey(_ key: String) -> Bool {
        guard key.utf8.count == 44, key.hasSuffix("="), let raw = Data(base64Encoded: key), raw.count == 32 else { return false }
        return raw.base64EncodedString() == key
    }
}

import CMeshProtoC

/// Why the protobuf-c side refused a request. Each case carries protobuf-c's reason as text.
public enum ProtoCError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No protoc-c descriptor has that full name (C and Swift generated code disagree, or a typo).
    case unknownMessage(String)
    /// `protobuf_c_message_unpack` rejected the bytes.
    case decodeFailed(String)
    /// The bytes decoded, but carried fields C's schema does not have: C did not read everything.
    case unknownFields(String)
    /// The message uses something the harness cannot render yet (map fields).
    case unsupported(String)
    /// `protobuf_c_message_pack` wrote a different size than it promised.
    case encodeFailed(String)
    /// malloc failed on the C side.
    case outOfMemory

    /// protobuf-c's reason, prefixed with the kind of failure.
    public var description: String {
        switch self {
        case .unknownMessage(let reason): "unknown message: \(reason)"
        case .decodeFailed(let reason): "decode failed: \(reason)"
        case .unknownFields(let reason): "unknown fields: \(reason)"
        case .unsupported(let reason): "unsupported: \(reason)"
        case .encodeFailed(let reason): "encode failed: \(reason)"
        case .outOfMemory: "out of memory"
        }
    }

    init(status: mesh_interop_status, reason: String) {
        switch status {
        case MESH_INTEROP_UNKNOWN_MESSAGE: self = .unknownMessage(reason)
        case MESH_INTEROP_DECODE_FAILED: self = .decodeFailed(reason)
        case MESH_INTEROP_UNKNOWN_FIELDS: self = .unknownFields(reason)
        case MESH_INTEROP_UNSUPPORTED: self = .unsupported(reason)
        case MESH_INTEROP_ENCODE_FAILED: self = .encodeFailed(reason)
        default: self = .outOfMemory
        }
    }
}

/// A protobuf-c peer for the mesh.v1 contracts: decodes and encodes any message type through
/// protobuf-c's generic descriptor API, so tests can check what a C program makes of Swift's bytes.
///
/// This is the only Swift code that talks to the protoc-c output (module `CMeshProtoC`). Every
/// function is safe to call from concurrent tasks: the C side keeps no state between calls.
public enum ProtoC {
    /// Full names (`"mesh.v1.Lease"`) of every message type protoc-c generated, in generation order.
    public static let messageNames: [String] = (0..<mesh_interop_message_count()).map { index in
        // Never nil below the count; the table is static.
        String(cString: mesh_interop_message_name(index)!)
    }

    /// Decodes `bytes` as message `fullName` with protobuf-c and describes every field it read.
    ///
    /// The description is proto3-JSON-like text (field names as in the .proto file, zero values
    /// omitted, 64-bit integers as strings, enums by name, bytes as base64), so it can be compared
    /// with swift-protobuf's JSON using `preserveProtoFieldNames` after both are parsed.
    ///
    /// - Throws: `ProtoCError.unknownFields` when any message in the tree carried fields C does not
    ///   know, since then C did not decode everything the sender meant.
    public static func describe(fullName: String, bytes: [UInt8]) throws(ProtoCError) -> String {
        var text: UnsafeMutablePointer<CChar>?
        let status = bytes.withUnsafeBufferPointer { buffer in
            mesh_interop_describe(fullName, buffer.baseAddress, buffer.count, &text)
        }
        defer { mesh_interop_free(text) }
        let string = text.map { String(cString: $0) } ?? ""
        guard status == MESH_INTEROP_OK else { throw ProtoCError(status: status, reason: string) }
        return string
    }

    /// Builds message `fullName` in C with every field set to a deterministic non-zero value
    /// (two elements per repeated field, nested messages filled recursively) and packs it with protobuf-c.
    public static func sample(fullName: String) throws(ProtoCError) -> [UInt8] {
        var bytes: UnsafeMutablePointer<UInt8>?
        var length = 0
        var reason: UnsafeMutablePointer<CChar>?
        let status = mesh_interop_sample(fullName, &bytes, &length, &reason)
        defer {
            mesh_interop_free(bytes)
            mesh_interop_free(reason)
        }
        guard status == MESH_INTEROP_OK, let bytes else {
            throw ProtoCError(status: status, reason: reason.map { String(cString: $0) } ?? "")
        }
        return Array(UnsafeBufferPointer(start: bytes, count: length))
    }
}

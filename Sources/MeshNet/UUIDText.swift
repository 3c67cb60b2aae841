import Foundation

/// The canonical text form of a UUID (`8-4-4-4-12` hex digits), read and written without
/// Foundation's parser and formatter.
///
/// Ids travel as text everywhere: in PostgreSQL results, protobuf fields, bus subjects, JSON and
/// tokens. Foundation reads them with `sscanf` and writes them with `snprintf` plus a lowercasing
/// copy; on the device list (three ids per device, both ways) that was the largest single cost in
/// ProvisionSvc and a visible one in the Gateway. These do the same job on the bytes.
extension UUID {
    /// Parses the canonical form, in either case (`123e4567-e89b-12d3-a456-426614174000`).
    /// Accepts exactly what `UUID(uuidString:)` accepts; anything else is nil.
    public init?(text: some StringProtocol) {
        var parsed: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let ok = withUnsafeMutableBytes(of: &parsed) { out -> Bool in
            var utf8 = text.utf8
            if let done = utf8.withContiguousStorageIfAvailable({ Self.parse($0, into: out) }) { return done }
            utf8 = text.utf8
            return Self.parse(Array(utf8), into: out)
        }
        guard ok else { return nil }
        self.init(uuid: parsed)
    }

    /// Parses the canonical form from its UTF-8 bytes (a database value as it lies in the result).
    public init?(utf8: UnsafeBufferPointer<UInt8>) {
        var parsed: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        guard withUnsafeMutableBytes(of: &parsed, { Self.parse(utf8, into: $0) }) else { return nil }
        self.init(uuid: parsed)
    }

    /// The canonical form in lowercase, the form used on the bus, in subjects, in JSON and in DNS-safe places.
    public var lowercasedText: String {
        withUnsafeBytes(of: uuid) { raw in
            String(unsafeUninitializedCapacity: 36) { out in
                var o = 0
                for (i, b) in raw.enumerated() {
                    if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = UInt8(ascii: "-"); o += 1 }
                    out[o] = UUIDHex.digits[Int(b >> 4)]
                    out[o + 1] = UUIDHex.digits[Int(b & 0x0f)]
                    o += 2
                }
                return o
            }
        }
    }

    private static func parse(_ u: some RandomAccessCollection<UInt8>, into out: UnsafeMutableRawBufferPointer) -> Bool {
        guard u.count == 36 else { return false }
        var i = u.startIndex
        var o = 0
        var position = 0
        while position < 36 {
            if position == 8 || position == 13 || position == 18 || position == 23 {
                guard u[i] == UInt8(ascii: "-") else { return false }
                i = u.index(after: i)
                position += 1
                continue
            }
            guard let hi = UUIDHex.value(u[i]) else { return false }
            i = u.index(after: i)
            guard let lo = UUIDHex.value(u[i]) else { return false }
            i = u.index(after: i)
            out[o] = hi << 4 | lo
            o += 1
            position += 2
        }
        return true
    }
}

private enum UUIDHex {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    @inline(__always)
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c &- 48
        case 97...102: c &- 87
        case 65...70: c &- 55
        default: nil
        }
    }
}

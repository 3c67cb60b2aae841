/// A domain name held in uncompressed wire form: length-prefixed labels ending with the zero-length root label.
///
/// Equality and hashing ignore ASCII case (RFC 4343), so a `DNSName` from a query can be used directly as a
/// dictionary key against names stored in any case; the original bytes are kept so answers can echo the
/// question's spelling.
public struct DNSName: Sendable, CustomStringConvertible {
    /// The wire bytes in their original case, always ending with the root label (a single zero byte).
    public let wire: [UInt8]

    /// The longest name allowed on the wire, counting length bytes and the root label (RFC 1035 §2.3.4).
    public static let maxWireLength = 255
    /// The longest label allowed (RFC 1035 §2.3.4); the two high bits of a length byte mark pointers.
    public static let maxLabelLength = 63

    /// The root name, `.`.
    public static let root = DNSName(validatedWire: [0])

    /// Wraps bytes that the caller has already checked; used by the parser and by the name builders here.
    init(validatedWire: [UInt8]) {
        wire = validatedWire
    }

    /// Checks and wraps wire bytes; returns nil unless they are a well-formed uncompressed name.
    public init?(wire: [UInt8]) {
        guard wire.count <= Self.maxWireLength, Self.isWellFormed(wire) else { return nil }
        self.wire = wire
    }

    /// Parses presentation format (`host.example.` or `host.example`; both mean the same absolute name here).
    ///
    /// Accepts `\.`, `\\` and `\DDD` escapes so any label can be written; rejects empty labels, labels over
    /// 63 bytes and names over 255 bytes.
    public init(_ text: String) throws(DNSNameError) {
        if text == "." || text.isEmpty {
            self = .root
            return
        }
        var bytes = Array(text.utf8)
        // A single trailing dot marks an absolute name; an escaped one (`\.`) is part of the last label.
        if bytes.last == UInt8(ascii: ".") {
            var backslashes = 0
            while backslashes < bytes.count - 1, bytes[bytes.count - 2 - backslashes] == UInt8(ascii: "\\") {
                backslashes += 1
            }
            if backslashes % 2 == 0 { bytes.removeLast() }
        }
        var out: [UInt8] = [0]
        var labelStart = 0
        func closeLabel() throws(DNSNameError) {
            let length = out.count - labelStart - 1
            guard length > 0 else { throw .emptyLabel }
            guard length <= Self.maxLabelLength else { throw .labelTooLong }
            out[labelStart] = UInt8(length)
            labelStart = out.count
            out.append(0)
        }
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: ".") {
                try closeLabel()
                i += 1
                continue
            }
            if b == UInt8(ascii: "\\") {
                guard i + 1 < bytes.count else { throw .badEscape }
                let d = bytes[i + 1]
                if d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") {
                    guard i + 3 < bytes.count else { throw .badEscape }
                    var value = 0
                    for k in 1...3 {
                        let c = bytes[i + k]
                        guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { throw .badEscape }
                        value = value * 10 + Int(c - UInt8(ascii: "0"))
                    }
                    guard value <= 255 else { throw .badEscape }
                    out.append(UInt8(value))
                    i += 4
                } else {
                    out.append(d)
                    i += 2
                }
                continue
            }
            out.append(b)
            i += 1
        }
        try closeLabel()
        guard out.count <= Self.maxWireLength else { throw .nameTooLong }
        wire = out
    }

    /// True when `wire` is a sequence of 1...63-byte labels ending in exactly one root label.
    static func isWellFormed(_ wire: [UInt8]) -> Bool {
        var i = 0
        while i < wire.count {
            let length = Int(wire[i])
            if length == 0 { return i == wire.count - 1 }
            guard length <= maxLabelLength else { return false }
            i += 1 + length
        }
        return false
    }

    /// The number of labels, not counting the root.
    public var labelCount: Int {
        var count = 0, i = 0
        while wire[i] != 0 {
            count += 1
            i += 1 + Int(wire[i])
        }
        return count
    }

    /// True for the root name.
    public var isRoot: Bool { wire.count == 1 }

    /// The labels as byte strings, most specific first (allocates; not for the per-query path).
    public var labels: [[UInt8]] {
        var out: [[UInt8]] = []
        var i = 0
        while wire[i] != 0 {
            let length = Int(wire[i])
            out.append(Array(wire[(i + 1)..<(i + 1 + length)]))
            i += 1 + length
        }
        return out
    }

    /// The name with ASCII letters folded to lower case.
    public var lowercased: DNSName {
        DNSName(validatedWire: wire.map(Self.fold))
    }

    /// The name without its first label (the root's parent is the root).
    public var parent: DNSName {
        if isRoot { return self }
        return DNSName(validatedWire: Array(wire[(1 + Int(wire[0]))...]))
    }

    /// True when `self` equals `other` or lies below it, ignoring case.
    public func isSubdomain(of other: DNSName) -> Bool {
        let offset = wire.count - other.wire.count
        guard offset >= 0 else { return false }
        // Only a label boundary counts: `xexample.` is not below `example.`.
        var i = 0
        while i < offset { i += 1 + Int(wire[i]) }
        guard i == offset else { return false }
        for k in 0..<other.wire.count where Self.fold(wire[offset + k]) != Self.fold(other.wire[k]) { return false }
        return true
    }

    /// `self` followed by `suffix` (`host` + `example.` = `host.example.`); nil if the result is over 255 bytes.
    public func appending(_ suffix: DNSName) -> DNSName? {
        let joined = Array(wire.dropLast()) + suffix.wire
        guard joined.count <= Self.maxWireLength else { return nil }
        return DNSName(validatedWire: joined)
    }

    /// Presentation format with a trailing dot; bytes other than letters, digits, `-`, `_` and `*` are escaped.
    public var description: String {
        if isRoot { return "." }
        var out = ""
        var i = 0
        while wire[i] != 0 {
            let length = Int(wire[i])
            for b in wire[(i + 1)..<(i + 1 + length)] {
                switch b {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                     UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "*"):
                    out.unicodeScalars.append(Unicode.Scalar(b))
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    out.append("\\")
                    out.unicodeScalars.append(Unicode.Scalar(b))
                default:
                    let digits = String(b)
                    out += "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }
            }
            out.append(".")
            i += 1 + length
        }
        return out
    }

    /// The name without a trailing dot, as written in hosts files and shown to people.
    public var withoutTrailingDot: String {
        let text = description
        return text == "." ? text : String(text.dropLast())
    }

    /// ASCII lower-casing of one byte; DNS case-insensitivity covers ASCII letters only (RFC 4343).
    @inline(__always)
    static func fold(_ b: UInt8) -> UInt8 {
        b &- UInt8(ascii: "A") < 26 ? b | 0x20 : b
    }
}

extension DNSName: Hashable {
    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        guard lhs.wire.count == rhs.wire.count else { return false }
        for i in 0..<lhs.wire.count where fold(lhs.wire[i]) != fold(rhs.wire[i]) { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        // Folding eight bytes at a time into one word keeps hashing cheap on the per-query path.
        var word: UInt64 = 0
        var shift: UInt64 = 0
        for b in wire {
            word |= UInt64(Self.fold(b)) << shift
            shift += 8
            if shift == 64 {
                hasher.combine(word)
                word = 0
                shift = 0
            }
        }
        hasher.combine(word)
        hasher.combine(wire.count)
    }
}

/// Why a textual domain name was rejected.
public enum DNSNameError: Error, Sendable, Equatable {
    /// Two dots in a row, or a leading dot.
    case emptyLabel
    /// A label longer than 63 bytes.
    case labelTooLong
    /// The name is longer than 255 bytes on the wire.
    case nameTooLong
    /// A backslash escape that is incomplete or out of range.
    case badEscape
}

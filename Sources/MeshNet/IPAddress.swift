/// An IPv4 address held as a host-order 32-bit integer.
public struct IPv4Address: Hashable, Sendable, Comparable, LosslessStringConvertible, Codable {
    /// The address in host byte order (`100.64.0.1` is `0x6440_0001`).
    public var value: UInt32

    /// Creates an address from its host-order integer value.
    public init(_ value: UInt32) { self.value = value }

    /// Creates an address from its four octets, most significant first.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad notation. Leading zeros are rejected, as they are ambiguous (octal in some parsers).
    public init?(_ text: String) {
        var text = text
        guard let v = text.withUTF8({ IPTextParser.ipv4($0[...]) }) else { return nil }
        value = v
    }

    /// The four octets, most significant first (network byte order).
    public var octets: [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (l: Self, r: Self) -> Bool { l.value < r.value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = IPv4Address(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an IPv4 address: \(text)"))
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An IPv6 address held as two host-order 64-bit halves.
public struct IPv6Address: Hashable, Sendable, Comparable, LosslessStringConvertible, Codable {
    /// The most significant 64 bits.
    public var high: UInt64
    /// The least significant 64 bits.
    public var low: UInt64

    /// Creates an address from its two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an address from 16 bytes in network order.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        high = h
        low = l
    }

    /// Parses RFC 4291 text, including `::` compression and an embedded dotted-quad tail.
    public init?(_ text: String) {
        var text = text
        guard let (h, l) = text.withUTF8({ IPTextParser.ipv6($0[...]) }) else { return nil }
        high = h
        low = l
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return out
    }

    /// The eight 16-bit groups, most significant first.
    public var groups: [UInt16] {
        (0..<8).map { i in
            i < 4 ? UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64(i)))
                : UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64(i - 4)))
        }
    }

    /// RFC 5952 canonical text: lowercase, no leading zeros, the longest run of two or more zero groups as `::`.
    public var description: String {
        let g = groups
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i
                while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        func hex(_ r: ArraySlice<UInt16>) -> String { r.map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(g[...]) }
        return hex(g[0..<bestStart]) + "::" + hex(g[(bestStart + bestLen)...])
    }

    /// Adds `offset` to the address, wrapping within 128 bits.
    public func adding(_ offset: UInt64) -> IPv6Address {
        let (l, overflow) = low.addingReportingOverflow(offset)
        return IPv6Address(high: overflow ? high &+ 1 : high, low: l)
    }

    public static func < (l: Self, r: Self) -> Bool { (l.high, l.low) < (r.high, r.low) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = IPv6Address(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an IPv6 address: \(text)"))
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An IPv4 or IPv6 address.
public enum IPAddress: Hashable, Sendable, Comparable, LosslessStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses either family; an IPv6 zone (`%eth0`) is not accepted.
    public init?(_ text: String) {
        var text = text
        guard let a = text.withUTF8({ IPTextParser.address($0[...]) }) else { return nil }
        self = a
    }

    /// 32 or 128.
    public var bitWidth: UInt8 {
        switch self {
        case .v4: 32
        case .v6: 128
        }
    }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): a.octets
        case .v6(let a): a.bytes
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }

    public static func < (l: Self, r: Self) -> Bool {
        switch (l, r) {
        case (.v4(let a), .v4(let b)): a < b
        case (.v6(let a), .v6(let b)): a < b
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }
}

/// The address parsers, over UTF-8 bytes: a node parses every peer's addresses on each full sync
/// (tens of thousands at a time), and splitting `String`s into `Character`s cost about 10 µs a peer.
enum IPTextParser {
    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    static func hexValue(_ c: UInt8) -> UInt16? {
        switch c {
        case 0x30...0x39: UInt16(c - 0x30)
        case 0x41...0x46: UInt16(c - 0x41 + 10)
        case 0x61...0x66: UInt16(c - 0x61 + 10)
        default: nil
        }
    }

    /// A decimal number of 1...`maxDigits` digits (leading zeros allowed), or nil.
    static func decimal(_ b: Slice<UnsafeBufferPointer<UInt8>>, maxDigits: Int) -> Int? {
        guard !b.isEmpty, b.count <= maxDigits else { return nil }
        var n = 0
        for c in b {
            guard isDigit(c) else { return nil }
            n = n * 10 + Int(c - 0x30)
        }
        return n
    }

    /// Dotted quad: four parts of 1-3 digits, each at most 255, no leading zero.
    static func ipv4(_ b: Slice<UnsafeBufferPointer<UInt8>>) -> UInt32? {
        var value: UInt32 = 0, parts = 0
        var i = b.startIndex
        while true {
            let start = i
            while i < b.endIndex, b[i] != UInt8(ascii: ".") { i += 1 }
            let part = b[start..<i]
            guard let n = decimal(part, maxDigits: 3), n <= 255, !(part.count > 1 && b[start] == UInt8(ascii: "0")) else { return nil }
            value = value << 8 | UInt32(n)
            parts += 1
            if i == b.endIndex { break }
            guard parts < 4 else { return nil }
            i += 1  // the dot
        }
        return parts == 4 ? value : nil
    }

    /// RFC 4291 text: up to eight groups of 1-4 hex digits, at most one `::`, and an optional
    /// dotted-quad tail in place of the last two groups.
    static func ipv6(_ b: Slice<UnsafeBufferPointer<UInt8>>) -> (UInt64, UInt64)? {
        guard !b.isEmpty, b.count <= 45 else { return nil }
        var groups = SIMD8<UInt16>()
        var n = 0, gap = -1
        var i = b.startIndex
        let colon = UInt8(ascii: ":")
        if b[i] == colon {
            guard b.count >= 2, b[i + 1] == colon else { return nil }
            gap = 0
            i += 2
        }
        while i < b.endIndex {
            let start = i
            var g: UInt16 = 0
            while i < b.endIndex, let v = hexValue(b[i]) {
                g = g &<< 4 | v
                i += 1
            }
            if i < b.endIndex, b[i] == UInt8(ascii: ".") {
                // A dotted-quad tail: the rest of the text.
                guard n <= 6, let v4 = ipv4(b[start..<b.endIndex]) else { return nil }
                groups[n] = UInt16(v4 >> 16)
                groups[n + 1] = UInt16(v4 & 0xffff)
                n += 2
                i = b.endIndex
                break
            }
            guard i - start >= 1, i - start <= 4, n < 8 else { return nil }
            groups[n] = g
            n += 1
            if i == b.endIndex { break }
            guard b[i] == colon else { return nil }
            i += 1
            if i < b.endIndex, b[i] == colon {
                guard gap < 0 else { return nil }
                gap = n
                i += 1
            } else if i == b.endIndex {
                return nil  // a single trailing colon
            }
        }
        if gap >= 0 {
            guard n <= 7 else { return nil }
            // Move the groups after the gap to the end.
            let tail = n - gap
            var out = SIMD8<UInt16>()
            for k in 0..<gap { out[k] = groups[k] }
            for k in 0..<tail { out[8 - tail + k] = groups[gap + k] }
            groups = out
        } else {
            guard n == 8 else { return nil }
        }
        var h: UInt64 = 0, l: UInt64 = 0
        for k in 0..<4 { h = h << 16 | UInt64(groups[k]) }
        for k in 4..<8 { l = l << 16 | UInt64(groups[k]) }
        return (h, l)
    }

    /// Either family.
    static func address(_ b: Slice<UnsafeBufferPointer<UInt8>>) -> IPAddress? {
        if let v = ipv4(b) { return .v4(IPv4Address(v)) }
        if let (h, l) = ipv6(b) { return .v6(IPv6Address(high: h, low: l)) }
        return nil
    }
}

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
        guard let v = text.withUTF8({ AddressBytes.ipv4($0[...]) }) else { return nil }
        self = v
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
        guard let v = text.withUTF8({ AddressBytes.ipv6($0[...]) }) else { return nil }
        self = v
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
        guard let a = text.withUTF8({ AddressBytes.address($0[...]) }) else { return nil }
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

/// The address parsers, over UTF-8 bytes. Every text parser of this module uses them, and so do
/// readers of raw replies (a 10,000-peer UAPI reply holds some 30,000 addresses; a node's full sync
/// parses tens of thousands of peers' addresses, where splitting `String`s into `Character`s cost
/// about 10 µs a peer). They accept dotted quads without leading zeros and RFC 4291 IPv6 with `::` and
/// a dotted tail, and nothing more.
public enum AddressBytes {
    public typealias Bytes = Slice<UnsafeBufferPointer<UInt8>>

    /// `address/length`; nil without a slash.
    public static func prefix(_ b: Bytes) -> IPPrefix? {
        guard let slash = b.lastIndex(of: UInt8(ascii: "/")) else { return nil }
        guard let length = decimal(b[(slash + 1)...], max: 128), let address = address(b[..<slash]) else { return nil }
        return IPPrefix(address, length: UInt8(length))
    }

    public static func address(_ b: Bytes) -> IPAddress? {
        if b.contains(UInt8(ascii: ":")) { return ipv6(b).map { .v6($0) } }
        return ipv4(b).map { .v4($0) }
    }

    public static func ipv4(_ b: Bytes) -> IPv4Address? {
        var value: UInt32 = 0, octets = 0, part: UInt32 = 0, digits = 0, leadingZero = false
        for c in b {
            if c == UInt8(ascii: ".") {
                guard digits > 0, octets < 3 else { return nil }
                value = value << 8 | part
                octets += 1
                part = 0
                digits = 0
                leadingZero = false
                continue
            }
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9"), digits < 3, !leadingZero else { return nil }
            if digits == 0 && c == UInt8(ascii: "0") { leadingZero = true }
            part = part * 10 + UInt32(c - UInt8(ascii: "0"))
            digits += 1
            guard part <= 255 else { return nil }
        }
        guard digits > 0, octets == 3 else { return nil }
        return IPv4Address(value << 8 | part)
    }

    /// Groups accumulate into two 128-bit values (before and after `::`), so no array is allocated.
    public static func ipv6(_ b: Bytes) -> IPv6Address? {
        guard b.count >= 2, b.count <= 45 else { return nil }
        var head: UInt128 = 0, tail: UInt128 = 0
        var headCount = 0, tailCount = 0
        var sawGap = false
        func push(_ g: UInt128) {
            if sawGap {
                tail = tail << 16 | g
                tailCount += 1
            } else {
                head = head << 16 | g
                headCount += 1
            }
        }
        var i = b.startIndex
        let end = b.endIndex
        if b[i] == UInt8(ascii: ":") {
            guard b[i + 1] == UInt8(ascii: ":") else { return nil }
            sawGap = true
            i += 2
        }
        while i < end {
            // One group, or a dotted IPv4 tail.
            var j = i, group: UInt32 = 0, digits = 0, dotted = false
            while j < end && b[j] != UInt8(ascii: ":") {
                let c = b[j]
                if c == UInt8(ascii: ".") { dotted = true }
                if !dotted {
                    guard let v = hex(c), digits < 4 else { return nil }
                    group = group << 4 | UInt32(v)
                    digits += 1
                }
                j += 1
            }
            if dotted {
                guard j == end, headCount + tailCount <= 6, let v4 = ipv4(b[i..<j]) else { return nil }
                push(UInt128(v4.value >> 16))
                push(UInt128(v4.value & 0xffff))
                break
            }
            guard digits > 0, headCount + tailCount < 8 else { return nil }
            push(UInt128(group))
            i = j
            if i < end {
                i += 1  // the ':'
                guard i < end else { return nil }  // trailing single ':'
                if b[i] == UInt8(ascii: ":") {
                    guard !sawGap else { return nil }
                    sawGap = true
                    i += 1
                }
            }
        }
        let total = headCount + tailCount
        guard sawGap ? total <= 7 : total == 8 else { return nil }
        let value = (headCount == 0 ? 0 : head << UInt128(16 * (8 - headCount))) | tail
        return IPv6Address(high: UInt64(truncatingIfNeeded: value >> 64), low: UInt64(truncatingIfNeeded: value))
    }

    @inline(__always)
    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A decimal of at most five digits no larger than `max`.
    public static func decimal(_ b: Bytes, max: Int) -> Int? {
        guard !b.isEmpty, b.count <= 5 else { return nil }
        var v = 0
        for c in b {
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        return v <= max ? v : nil
    }
}

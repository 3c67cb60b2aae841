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
        var octets: [UInt32] = []
        octets.reserveCapacity(4)
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(part.count > 1 && part.first == "0"), let n = UInt32(part), n <= 255 else { return nil }
            octets.append(n)
        }
        guard octets.count == 4 else { return nil }
        value = octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]
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
        guard !text.isEmpty, text.count <= 45 else { return nil }
        var groups: [UInt16] = []
        var tail: [UInt16] = []
        var sawDoubleColon = false
        let parts = IPv6Address.splitOnDoubleColon(text)
        guard parts.count <= 2 else { return nil }
        func parseGroups(_ s: String, allowV4Tail: Bool) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let items = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, item) in items.enumerated() {
                if allowV4Tail, i == items.count - 1, item.contains(".") {
                    guard let v4 = IPv4Address(String(item)) else { return nil }
                    out.append(UInt16(v4.value >> 16))
                    out.append(UInt16(v4.value & 0xffff))
                    continue
                }
                guard !item.isEmpty, item.count <= 4, let g = UInt16(item, radix: 16) else { return nil }
                out.append(g)
            }
            return out
        }
        if parts.count == 2 {
            sawDoubleColon = true
            guard let a = parseGroups(parts[0], allowV4Tail: false), let b = parseGroups(parts[1], allowV4Tail: true) else { return nil }
            groups = a
            tail = b
            guard groups.count + tail.count <= 7 else { return nil }
        } else {
            guard let a = parseGroups(parts[0], allowV4Tail: true), a.count == 8 else { return nil }
            groups = a
        }
        if sawDoubleColon {
            groups += Array(repeating: 0, count: 8 - groups.count - tail.count) + tail
        }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, g) in groups.enumerated() {
            if i < 4 { h = h << 16 | UInt64(g) } else { l = l << 16 | UInt64(g) }
        }
        high = h
        low = l
    }

    /// Splits on every "::" (Foundation-free `components(separatedBy:)`).
    static func splitOnDoubleColon(_ text: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var previousColon = false
        for ch in text {
            if ch == ":" && previousColon {
                current.removeLast()
                parts.append(current)
                current = ""
                previousColon = false
                continue
            }
            current.append(ch)
            previousColon = ch == ":"
        }
        parts.append(current)
        return parts
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
        if let a = IPv4Address(text) { self = .v4(a) } else if let a = IPv6Address(text) { self = .v6(a) } else { return nil }
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

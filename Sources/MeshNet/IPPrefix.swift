/// An address prefix in CIDR notation, such as `100.64.0.0/16` or `fd00::1/128`.
///
/// The address keeps the bits the caller gave (so `100.64.0.7/16` is an interface address);
/// ``network`` clears the host bits.
public struct IPPrefix: Hashable, Sendable, Comparable, LosslessStringConvertible, Codable {
    public var address: IPAddress
    public var length: UInt8

    /// Creates a prefix; returns nil if `length` exceeds the family's width.
    public init?(_ address: IPAddress, length: UInt8) {
        guard length <= address.bitWidth else { return nil }
        self.address = address
        self.length = length
    }

    /// A single-host prefix: /32 for IPv4, /128 for IPv6.
    public init(host address: IPAddress) {
        self.address = address
        length = address.bitWidth
    }

    /// Parses `address/length`; a bare address means a host prefix.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let a = IPAddress(String(parts[0])) else { return nil }
        if parts.count == 1 {
            self.init(host: a)
            return
        }
        guard !parts[1].isEmpty, parts[1].count <= 3, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = UInt8(parts[1]) else { return nil }
        self.init(a, length: n)
    }

    public var description: String { "\(address)/\(length)" }

    /// The prefix with host bits cleared.
    public var network: IPPrefix {
        switch address {
        case .v4(let a):
            return IPPrefix(.v4(IPv4Address(a.value & Self.mask32(length))), length: length)!
        case .v6(let a):
            let (mh, ml) = Self.mask128(length)
            return IPPrefix(.v6(IPv6Address(high: a.high & mh, low: a.low & ml)), length: length)!
        }
    }

    /// True when the prefix has no host bits set.
    public var isNetwork: Bool { network.address == address }

    /// True when `other` lies inside this prefix (same family).
    public func contains(_ other: IPAddress) -> Bool {
        switch (address, other) {
        case (.v4(let a), .v4(let b)):
            let m = Self.mask32(length)
            return a.value & m == b.value & m
        case (.v6(let a), .v6(let b)):
            let (mh, ml) = Self.mask128(length)
            return a.high & mh == b.high & mh && a.low & ml == b.low & ml
        default:
            return false
        }
    }

    /// True when `other` lies entirely inside this prefix.
    public func contains(_ other: IPPrefix) -> Bool {
        other.length >= length && contains(other.address)
    }

    /// True when the two prefixes share any address.
    public func overlaps(_ other: IPPrefix) -> Bool {
        contains(other.address) || other.contains(address)
    }

    public static func < (l: Self, r: Self) -> Bool { (l.address, l.length) < (r.address, r.length) }

    /// The IPv4 netmask for a prefix length.
    public static func mask32(_ length: UInt8) -> UInt32 {
        length == 0 ? 0 : UInt32.max << (32 - UInt32(min(length, 32)))
    }

    /// The IPv6 netmask for a prefix length, as two halves.
    public static func mask128(_ length: UInt8) -> (UInt64, UInt64) {
        let l = min(UInt64(length), 128)
        if l == 0 { return (0, 0) }
        if l <= 64 { return (UInt64.max << (64 - l), 0) }
        if l == 128 { return (.max, .max) }
        return (.max, UInt64.max << (128 - l))
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = IPPrefix(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a CIDR prefix: \(text)"))
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// A `host:port` pair, as in a WireGuard `Endpoint`. IPv6 hosts are bracketed: `[fd00::1]:51820`.
public struct HostPort: Hashable, Sendable, LosslessStringConvertible {
    /// A DNS name or an address literal, without brackets.
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `a.b.c.d:port` or `[v6]:port`. The port must be 1...65535 and the host a
    /// valid address or a DNS name (letters, digits, '-', '.', at most 253 characters).
    public init?(_ text: String) {
        let host: Substring, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
            guard IPv6Address(String(host)) != nil else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard IPv4Address(String(host)) != nil || HostPort.isDNSName(host) else { return nil }
        }
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let p = UInt16(portText), p > 0 else { return nil }
        self.host = String(host)
        self.port = p
    }

    /// The IP address if the host is a literal.
    public var address: IPAddress? { IPAddress(host) }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    static func isDNSName(_ s: Substring) -> Bool {
        guard !s.isEmpty, s.count <= 253 else { return false }
        for label in s.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63, label.first != "-", label.last != "-",
                  label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else { return false }
        }
        return true
    }
}

extension IPPrefix {
    /// The smallest list of prefixes that covers exactly the IPv4 addresses `first...last`.
    public static func summarize(_ first: IPv4Address, _ last: IPv4Address) -> [IPPrefix] {
        guard first <= last else { return [] }
        var out: [IPPrefix] = []
        var start = UInt64(first.value)
        let end = UInt64(last.value)
        while start <= end {
            // The largest aligned block starting at `start` that does not pass `end`.
            var size: UInt64 = start == 0 ? 1 << 32 : start & (~start &+ 1)
            while start + size - 1 > end { size >>= 1 }
            let length = 32 - UInt8(size.trailingZeroBitCount)
            out.append(IPPrefix(.v4(IPv4Address(UInt32(start))), length: length)!)
            start += size
        }
        return out
    }

    /// The smallest list of prefixes that covers exactly `first...last`, both inside one /64
    /// (the mesh's IPv6 addresses differ only in their low bits).
    public static func summarize(_ first: IPv6Address, _ last: IPv6Address) -> [IPPrefix] {
        guard first <= last, first.high == last.high else { return [] }
        var out: [IPPrefix] = []
        var start = first.low
        let end = last.low
        while true {
            var size: UInt64 = start == 0 ? 0 : start & (~start &+ 1)  // 0 means 2^64
            while size == 0 ? (end != UInt64.max) : (start &+ (size - 1) > end || start &+ (size - 1) < start) {
                size = size == 0 ? 1 << 63 : size >> 1
            }
            let bits = size == 0 ? 64 : size.trailingZeroBitCount
            out.append(IPPrefix(.v6(IPv6Address(high: first.high, low: start)), length: UInt8(128 - bits))!)
            if size == 0 { break }
            let next = start &+ size
            if next == 0 || next - 1 >= end { break }
            start = next
        }
        return out
    }
}

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
        var text = text
        guard let p = text.withUTF8({ b -> IPPrefix? in
            let all = b[...]
            guard all.contains(UInt8(ascii: "/")) else { return AddressBytes.address(all).map { IPPrefix(host: $0) } }
            return AddressBytes.prefix(all)
        }) else { return nil }
        self = p
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
        var text = text
        guard let (host, port) = text.withUTF8({ b -> (String, UInt16)? in
            let all = b[...]
            let host: Slice<UnsafeBufferPointer<UInt8>>, port: Slice<UnsafeBufferPointer<UInt8>>
            if all.first == UInt8(ascii: "[") {
                guard let close = all.firstIndex(of: UInt8(ascii: "]")) else { return nil }
                host = all[(all.startIndex + 1)..<close]
                let rest = all[(close + 1)...]
                guard rest.first == UInt8(ascii: ":"), AddressBytes.ipv6(host) != nil else { return nil }
                port = rest.dropFirst()
            } else {
                guard let colon = all.lastIndex(of: UInt8(ascii: ":")), all.firstIndex(of: UInt8(ascii: ":")) == colon else { return nil }
                host = all[..<colon]
                port = all[(colon + 1)...]
                guard AddressBytes.ipv4(host) != nil || HostPort.isDNSName(host) else { return nil }
            }
            guard let p = AddressBytes.decimal(port, max: 65535), p > 0 else { return nil }
            return (String(decoding: host, as: UTF8.self), UInt16(p))
        }) else { return nil }
        self.host = host
        self.port = port
    }

    /// The IP address if the host is a literal.
    public var address: IPAddress? { IPAddress(host) }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Letters, digits and '-' in dot-separated labels of 1-63 characters that neither start nor end
    /// with '-', at most 253 characters in all.
    static func isDNSName(_ s: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        guard !s.isEmpty, s.count <= 253 else { return false }
        var label = 0
        var previous: UInt8 = UInt8(ascii: ".")
        for c in s {
            if c == UInt8(ascii: ".") {
                guard label > 0, previous != UInt8(ascii: "-") else { return false }
                label = 0
            } else {
                let letter = (c | 0x20) >= UInt8(ascii: "a") && (c | 0x20) <= UInt8(ascii: "z")
                guard letter || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") else { return false }
                guard !(label == 0 && c == UInt8(ascii: "-")) else { return false }
                label += 1
                guard label <= 63 else { return false }
            }
            previous = c
        }
        return label > 0 && previous != UInt8(ascii: "-")
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

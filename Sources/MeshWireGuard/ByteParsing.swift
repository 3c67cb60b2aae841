import MeshNet

/// Address parsing straight from UAPI reply bytes. A 10,000-peer reply has some 30,000 addresses;
/// going through `String` and the general parsers for each made reading the device twice as slow
/// as `wg show dump`. Accepts what the text parsers accept (dotted quads without leading zeros,
/// RFC 4291 IPv6 with `::` and a dotted tail) and nothing more.
enum ByteParsing {
    typealias Bytes = Slice<UnsafeBufferPointer<UInt8>>

    /// `a.b.c.d/n` or `v6/n`.
    static func prefix(_ b: Bytes) -> IPPrefix? {
        guard let slash = b.lastIndex(of: UInt8(ascii: "/")) else { return nil }
        guard let length = decimal(b[(slash + 1)...], max: 128), let address = address(b[..<slash]) else { return nil }
        return IPPrefix(address, length: UInt8(length))
    }

    /// `a.b.c.d:port` or `[v6]:port` (an IPv6 zone, `%eth0`, is dropped: ``HostPort`` has no place for it).
    static func endpoint(_ b: Bytes) -> HostPort? {
        guard let colon = b.lastIndex(of: UInt8(ascii: ":")), let port = decimal(b[(colon + 1)...], max: 65535), port > 0 else { return nil }
        var host = b[..<colon]
        if host.first == UInt8(ascii: "[") {
            guard host.last == UInt8(ascii: "]") else { return nil }
            host = host.dropFirst().dropLast()
            if let pct = host.firstIndex(of: UInt8(ascii: "%")) { host = host[..<pct] }
            guard let v6 = ipv6(host) else { return nil }
            return HostPort(host: v6.description, port: UInt16(port))
        }
        guard let v4 = ipv4(host) else { return nil }
        return HostPort(host: v4.description, port: UInt16(port))
    }

    static func address(_ b: Bytes) -> IPAddress? {
        if b.contains(UInt8(ascii: ":")) { return ipv6(b).map { .v6($0) } }
        return ipv4(b).map { .v4($0) }
    }

    static func ipv4(_ b: Bytes) -> IPv4Address? {
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

    static func ipv6(_ b: Bytes) -> IPv6Address? {
        guard b.count >= 2, b.count <= 45 else { return nil }
        var head: [UInt16] = [], tail: [UInt16] = []
        head.reserveCapacity(8)
        var sawGap = false
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
                guard j == end, let v4 = ipv4(b[i..<j]) else { return nil }
                let pair = [UInt16(v4.value >> 16), UInt16(v4.value & 0xffff)]
                if sawGap { tail += pair } else { head += pair }
                i = j
                break
            }
            guard digits > 0 else { return nil }
            if sawGap { tail.append(UInt16(group)) } else { head.append(UInt16(group)) }
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
        let total = head.count + tail.count
        guard sawGap ? total <= 7 : total == 8 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0
        let groups = head + [UInt16](repeating: 0, count: 8 - total) + tail
        for (k, g) in groups.enumerated() {
            if k < 4 { high = high << 16 | UInt64(g) } else { low = low << 16 | UInt64(g) }
        }
        return IPv6Address(high: high, low: low)
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
    static func decimal(_ b: Bytes, max: Int) -> Int? {
        guard !b.isEmpty, b.count <= 5 else { return nil }
        var v = 0
        for c in b {
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        return v <= max ? v : nil
    }
}

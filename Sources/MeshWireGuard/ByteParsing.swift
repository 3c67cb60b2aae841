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
        // ipv4() accepts only the canonical dotted quad, so the bytes already are the description.
        guard ipv4(host) != nil else { return nil }
        return HostPort(host: String(decoding: host, as: UTF8.self), port: UInt16(port))
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

    /// Groups accumulate into two 128-bit values (before and after `::`), so no array is allocated.
    static func ipv6(_ b: Bytes) -> IPv6Address? {
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

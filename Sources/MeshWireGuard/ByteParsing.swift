import MeshNet

/// The UAPI reply's forms that are not MeshNet's text forms; addresses and prefixes are read with
/// MeshNet's byte parsers (``AddressBytes``), straight from the reply.
enum ByteParsing {
    typealias Bytes = AddressBytes.Bytes

    /// `a.b.c.d:port` or `[v6]:port` (an IPv6 zone, `%eth0`, is dropped: ``HostPort`` has no place for it).
    static func endpoint(_ b: Bytes) -> HostPort? {
        guard let colon = b.lastIndex(of: UInt8(ascii: ":")), let port = AddressBytes.decimal(b[(colon + 1)...], max: 65535), port > 0 else { return nil }
        var host = b[..<colon]
        if host.first == UInt8(ascii: "[") {
            guard host.last == UInt8(ascii: "]") else { return nil }
            host = host.dropFirst().dropLast()
            if let pct = host.firstIndex(of: UInt8(ascii: "%")) { host = host[..<pct] }
            guard let v6 = AddressBytes.ipv6(host) else { return nil }
            return HostPort(host: v6.description, port: UInt16(port))
        }
        // ipv4() accepts only the canonical dotted quad, so the bytes already are the description.
        guard AddressBytes.ipv4(host) != nil else { return nil }
        return HostPort(host: String(decoding: host, as: UTF8.self), port: UInt16(port))
    }
}

import MeshNet

/// A node as a device config needs it.
public struct ConfigNode: Sendable, Equatable {
    public var name: String
    public var dnsName: String
    public var publicKey: String
    public var endpoint: String
    public var ipv4: IPv4Address
    public var ipv6: IPv6Address
}

/// Renders a device's wg-quick config.
///
/// Routing design (docs/routing.md): the device has one `[Peer]` per node. The tenant's hub node
/// (the oldest node) carries the device ranges of the tenant, so every other device is reached
/// through it; every node, the hub included, carries its own /32 and /128, so nodes are reached
/// directly. Node addresses and device addresses come from disjoint ranges of the tenant prefix,
/// so no two `AllowedIPs` entries on the device overlap, and nodes (which list each device's /32
/// and /128 and each other node's) have no overlap either.
public struct ConfigRenderer: Sendable {
    public var domain: String
    public var mtu: Int
    public var keepalive: Int
    public var dnsResolvers: Int

    public init(domain: String, mtu: Int, keepalive: Int, dnsResolvers: Int) {
        self.domain = domain
        self.mtu = mtu
        self.keepalive = keepalive
        self.dnsResolvers = dnsResolvers
    }

    /// The AllowedIPs of each node in a device's config; `nodes[0]` is the hub.
    public func allowedIPs(nodes: [ConfigNode], deviceRanges: [IPPrefix]) -> [[IPPrefix]] {
        nodes.enumerated().map { i, n in
            var list = [IPPrefix(host: .v4(n.ipv4)), IPPrefix(host: .v6(n.ipv6))]
            if i == 0 { list += deviceRanges }
            return list
        }
    }

    /// The config text. `nodes` must be ordered hub first.
    public func render(privateKey: String, ipv4: IPv4Address, ipv6: IPv6Address, label: String, dnsName: String,
                       nodes: [ConfigNode], deviceRanges: [IPPrefix]) -> String {
        var lines: [String] = []
        lines.append("# Quazzar Mesh: \(label.replacingOccurrences(of: "\n", with: " ")) (\(dnsName))")
        lines.append("[Interface]")
        lines.append("PrivateKey = \(privateKey)")
        lines.append("Address = \(ipv4)/32, \(ipv6)/128")
        let resolvers = nodes.prefix(dnsResolvers).flatMap { ["\($0.ipv4)", "\($0.ipv6)"] }
        if !resolvers.isEmpty {
            lines.append("DNS = \((resolvers + [domain]).joined(separator: ", "))")
        }
        lines.append("MTU = \(mtu)")
        let allowed = allowedIPs(nodes: nodes, deviceRanges: deviceRanges)
        for (i, n) in nodes.enumerated() {
            lines.append("")
            lines.append("[Peer]")
            lines.append("# \(n.dnsName)\(i == 0 ? " (hub)" : "")")
            lines.append("PublicKey = \(n.publicKey)")
            lines.append("Endpoint = \(n.endpoint)")
            lines.append("AllowedIPs = \(allowed[i].map(\.description).joined(separator: ", "))")
            lines.append("PersistentKeepalive = \(keepalive)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

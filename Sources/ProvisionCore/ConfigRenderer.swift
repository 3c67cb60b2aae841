import MeshDomain
import MeshNet

/// Renders a device's wg-quick config from the peers ``PeerCatalog/deviceConfig(nodesByAge:settings:maxNodes:)``
/// chose: the hub first, with the tenant prefix, then the other listed nodes with their own /32 and
/// /128 (docs/routing.md).
public struct ConfigRenderer: Sendable {
    public init() {}

    /// The config text. The comment line carries `label` as typed (the .conf download); QR codes use
    /// ``asciiLabel(_:)`` so that scanners which guess the character set show it right.
    public func render(privateKey: String, ipv4: String, ipv6: String, label: String, dnsName: String,
                       peers: [PeerCatalog.ConfigPeer], tenant: TenantRecord) -> String {
        var lines: [String] = []
        lines.append("# Quazzar Mesh: \(label.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")) (\(dnsName))")
        lines.append("[Interface]")
        lines.append("PrivateKey = \(privateKey)")
        lines.append("Address = \(ipv4)/32, \(ipv6)/128")
        let resolvers = peers.prefix(tenant.dnsResolvers).flatMap { [$0.node.ipv4, $0.node.ipv6] }
        if !resolvers.isEmpty {
            lines.append("DNS = \((resolvers + [tenant.domain]).joined(separator: ", "))")
        }
        lines.append("MTU = \(tenant.deviceMTU)")
        for p in peers {
            lines.append("")
            lines.append("[Peer]")
            lines.append("# \(MeshName.dnsName(slug: p.node.slug, domain: tenant.domain))\(p.isHub ? " (hub)" : "")")
            lines.append("PublicKey = \(p.node.publicKey)")
            lines.append("Endpoint = \(p.node.endpoint)")
            lines.append("AllowedIPs = \(p.allowedIPs.joined(separator: ", "))")
            if tenant.deviceKeepalive > 0 { lines.append("PersistentKeepalive = \(tenant.deviceKeepalive)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The config as the QR code carries it: the same text with the comment line in ASCII (the
    /// WireGuard apps ignore comments; a QR code without an ECI marker has no character set, and
    /// readers that guess one garble UTF-8).
    public func qrText(of config: String, label: String) -> String {
        guard !label.unicodeScalars.allSatisfy(\.isASCII) else { return config }
        var lines = config.split(separator: "\n", omittingEmptySubsequences: false)
        if let first = lines.first, first.hasPrefix("# ") {
            let ascii = Self.asciiLabel(label)
            lines[0] = Substring(first.replacingOccurrences(of: label.replacingOccurrences(of: "\n", with: " ")
                .replacingOccurrences(of: "\r", with: " "), with: ascii))
        }
        return lines.joined(separator: "\n")
    }

    /// An ASCII form of a label: transliterated to Latin without accents; anything left outside
    /// printable ASCII becomes '?'.
    public static func asciiLabel(_ label: String) -> String {
        let latin = label.applyingTransform(.toLatin, reverse: false) ?? label
        let folded = latin.applyingTransform(.stripDiacritics, reverse: false) ?? latin
        return String(String.UnicodeScalarView(folded.unicodeScalars.map { s in
            (s.value >= 0x20 && s.value < 0x7f) ? s : "?"
        }))
    }
}

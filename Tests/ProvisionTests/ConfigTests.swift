import Foundation
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import MeshTestSupport
import Testing

/// The rendered config against real tools: wireguard-tools parses it, a real wireguard-go interface
/// brought up from it handshakes with a node configured from the same data, the QR decodes to it,
/// and no private key is ever stored or logged.
@Suite(.timeLimit(.minutes(10)), .enabled(if: TestEnvironment.runs(root: true, infra: true, tools: ["wireguard-go", "wg", "wg-quick", "ip"]), "needs root, wireguard-go, nats-server and PostgreSQL"), .serialized)
struct ConfigTests {
    init() throws { try TestEnvironment.require(root: true, infra: true, tools: ["wireguard-go", "wg", "wg-quick", "ip"]) }

    @Test func configBringsUpARealInterfaceThatHandshakesAndTheQRMatches() async throws {
        let c = try await ControlPlane.start("config")
        let out = TestEnvironment.outputDir("provision-config")
        let nodeNS = try NetNamespace(prefix: "node"), devNS = try NetNamespace(prefix: "dev")
        defer { nodeNS.destroy(); devNS.destroy() }
        try NetNamespace.link(nodeNS, "10.77.0.1/24", devNS, "10.77.0.2/24")

        let t = try await c.tenant(.pro)
        let admin = try await c.user(t, .admin)
        let (node, nodeKeys) = try await c.node(t, admin: admin, name: "Edge One", endpoint: "10.77.0.1:51820")
        #expect(node.hub)
        #expect(node.dnsName == "edge-one.quazzar.mesh")
        let created = try await c.client.createDevice(caller: admin, label: "Test Laptop", type: .laptop)
        let device = created.device
        let config = created.config
        #expect(config.contains("PrivateKey = "))
        #expect(config.contains("Endpoint = 10.77.0.1:51820"))
        #expect(config.contains("PersistentKeepalive = 25"))
        #expect(config.contains("DNS = \(node.ipv4), \(node.ipv6), quazzar.mesh"))

        // wireguard-tools accepts it.
        let devIf = uniqueInterfaceName("wd"), nodeIf = uniqueInterfaceName("wn")
        let confPath = out.appendingPathComponent("\(devIf).conf")
        // 0600, as wg-quick expects for a file holding a private key.
        #expect(FileManager.default.createFile(atPath: confPath.path, contents: Data(config.utf8), attributes: [.posixPermissions: 0o600]))
        let stripped = try await run("/usr/bin/env", ["wg-quick", "strip", confPath.path])
        #expect(stripped.status == 0, "wg-quick strip: \(stripped.output)")
        let strippedPath = out.appendingPathComponent("\(devIf).stripped")
        try stripped.stdout.write(to: strippedPath, atomically: true, encoding: .utf8)

        // The node side, configured from the same data (its key, the device's public key and /32, /128).
        let nodeKeyPath = out.appendingPathComponent("node.key")
        #expect(FileManager.default.createFile(atPath: nodeKeyPath.path, contents: Data(nodeKeys.privateKey.utf8), attributes: [.posixPermissions: 0o600]))
        try nodeNS.startWireGuardGo(nodeIf)
        try await nodeNS.exec(["wg", "set", nodeIf, "private-key", nodeKeyPath.path, "listen-port", "51820",
                         "peer", device.publicKey, "allowed-ips", "\(device.ipv4)/32,\(device.ipv6)/128"])
        try await nodeNS.exec(["ip", "addr", "add", "\(node.ipv4)/16", "dev", nodeIf])
        try await nodeNS.exec(["ip", "-6", "addr", "add", "\(node.ipv6)/48", "dev", nodeIf])
        try await nodeNS.exec(["ip", "link", "set", nodeIf, "up"])

        // The device side: wg setconf with the stripped config, plus what wg-quick would add.
        try devNS.startWireGuardGo(devIf)
        try await devNS.exec(["wg", "setconf", devIf, strippedPath.path])
        try await devNS.exec(["ip", "addr", "add", "\(device.ipv4)/32", "dev", devIf])
        try await devNS.exec(["ip", "-6", "addr", "add", "\(device.ipv6)/128", "dev", devIf])
        try await devNS.exec(["ip", "link", "set", devIf, "mtu", "1280", "up"])
        try addRoutesForAllowedIPs(devNS, devIf)
        let ping = try await devNS.tryExec(["ping", "-c", "3", "-i", "0.2", "-W", "2", node.ipv4])
        #expect(ping.status == 0, "ping over the tunnel: \(ping.output)")
        let ping6 = try await devNS.tryExec(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", node.ipv6])
        #expect(ping6.status == 0, "ping6 over the tunnel: \(ping6.output)")
        let hs = try await nodeNS.exec(["wg", "show", nodeIf, "latest-handshakes"])
        #expect(hs.contains(device.publicKey) && !hs.contains("\t0\n"), "node saw a handshake: \(hs)")

        // The QR code decodes to exactly the config.
        let svgPath = out.appendingPathComponent("qr.svg"), pngPath = out.appendingPathComponent("qr.png")
        try created.qrSvg.write(to: svgPath, atomically: true, encoding: .utf8)
        await #expect(try run("/usr/bin/env", ["rsvg-convert", "-o", pngPath.path, svgPath.path]).status == 0)
        let decoded = try await run("/usr/bin/env", ["zbarimg", "--raw", "-q", "-Sbinary", pngPath.path])
        #expect(decoded.status == 0)
        #expect(decoded.stdout == config, "QR payload differs from the config")
        try await c.stop()
    }

    /// A QR code has no character set unless it carries an ECI marker, and readers that guess one
    /// (zbar, some phone scanners) garble UTF-8: the QR payload is ASCII, with an ASCII form of the
    /// label in its comment line, while the .conf keeps the label as typed.
    @Test func aNonASCIILabelGivesAnASCIIQRCode() async throws {
        let c = try await ControlPlane.start("qr-ascii")
        let t = try await c.readyTenant(.pro)
        let admin = try await c.user(t, .admin)
        let out = TestEnvironment.outputDir("provision-config")
        for label in ["Zoë's Ноутбук", "東京 phone", "Café ☕"] {
            let created = try await c.client.createDevice(caller: admin, label: label, type: .laptop)
            let config = created.config
            #expect(config.hasPrefix("# Quazzar Mesh: \(label) ("), "the .conf names the device as typed")
            let svg = out.appendingPathComponent("qr-ascii.svg"), png = out.appendingPathComponent("qr-ascii.png")
            try created.qrSvg.write(to: svg, atomically: true, encoding: .utf8)
            await #expect(try run("/usr/bin/env", ["rsvg-convert", "-o", png.path, svg.path]).status == 0)
            let decoded = try await run("/usr/bin/env", ["zbarimg", "--raw", "-q", "-Sbinary", png.path])
            #expect(decoded.status == 0)
            let bytes = Array(decoded.stdout.utf8)
            #expect(bytes.allSatisfy { $0 < 0x80 }, "\(label): the QR payload is ASCII")
            let qrLines = decoded.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            let confLines = config.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(Array(qrLines.dropFirst()) == Array(confLines.dropFirst()), "\(label): the rest of the QR code is the .conf")
            #expect(qrLines.first?.hasPrefix("# Quazzar Mesh: ") == true && qrLines.first != confLines.first, "\(label): \(qrLines.first ?? "")")
            print("QR comment for \(label): \(qrLines.first ?? "")")
        }
        try await c.stop()
    }

    @Test func noPrivateKeyIsStoredOrLogged() async throws {
        let c = try await ControlPlane.start("secrets", environment: ["MESH_LOG_LEVEL": "trace", "MESH_RATE_LIMIT": "0"])
        let t = try await c.tenant(.team)
        let admin = try await c.user(t, .admin)
        _ = try await c.node(t, admin: admin, name: "n1", endpoint: "192.0.2.1:51820")
        var keys: [String] = []
        for i in 0..<5 {
            let r = try await c.client.createDevice(caller: admin, label: "dev \(i)", type: .other)
            let line = r.config.split(separator: "\n").first { $0.hasPrefix("PrivateKey = ") }!
            keys.append(String(line.dropFirst("PrivateKey = ".count)))
        }
        // Every column of every table, as text.
        let dump = try await run("/usr/bin/env", ["pg_dump", "--data-only", c.db.url])
        #expect(dump.status == 0, "pg_dump: \(dump.output.prefix(300))")
        #expect(dump.stdout.contains("device.create"), "the dump has the data")
        let logs = c.logs()
        #expect(logs.contains("device created"), "the logs were captured")
        for k in keys {
            #expect(!dump.stdout.contains(k), "a private key is stored in the database")
            #expect(!logs.contains(k), "a private key is in a log")
            // Also its hex and raw-base64 (without padding) forms.
            let hex = Data(base64Encoded: k)!.map { String(format: "%02x", $0) }.joined()
            #expect(!dump.stdout.contains(hex) && !logs.contains(hex))
            #expect(!dump.stdout.contains(String(k.dropLast())))
        }
        try await c.stop()
    }
}

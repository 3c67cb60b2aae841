import Foundation
import Logging
import MeshNet
import MeshTestSupport
@testable import MeshWireGuard

/// Runs a command to completion without blocking a cooperative thread: output goes to a temporary
/// file and termination is awaited through the process's handler.
@discardableResult
func sh(_ args: [String], check: Bool = true) async throws -> (status: Int32, output: String) {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("mwg-\(UUID().uuidString).out")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: out) }
    let handle = try FileHandle(forWritingTo: out)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    p.standardOutput = handle
    p.standardError = handle
    let status: Int32 = try await withCheckedThrowingContinuation { c in
        p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
        do { try p.run() } catch { c.resume(throwing: error) }
    }
    try handle.close()
    let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    if check && status != 0 {
        throw ShellError(command: args.joined(separator: " "), status: status, output: text)
    }
    return (status, text)
}

struct ShellError: Error, CustomStringConvertible {
    var command: String
    var status: Int32
    var output: String
    var description: String { "`\(command)` exited \(status): \(output)" }
}

let testLogger: Logger = {
    var l = Logger(label: "mesh.wireguard.tests")
    l.logLevel = .warning
    return l
}()

var isRoot: Bool { getuid() == 0 }

/// The userspace suites need root, wireguard-go, wg and ip. Run by hand without them they are
/// skipped; under `make test` (MESH_REQUIRE_INFRA=1) they run, and ``requireUserspace()`` fails them.
let userspaceRuns = TestEnvironment.runs(root: true, tools: ["wireguard-go", "wg", "ip"])

/// Fails with what is missing for the userspace suites.
func requireUserspace() throws { try TestEnvironment.require(root: true, tools: ["wireguard-go", "wg", "ip"]) }

/// How long a test waits for a wireguard-go daemon's UAPI socket: a bound on a regression, generous
/// because the suites share two cores with everything else running.
let daemonStartDeadline: Duration = .seconds(60)

/// Whether a test needing `tools` runs (always under `make test`, where a missing tool fails it).
func toolsRun(_ tools: String...) -> Bool { TestEnvironment.runs(tools: tools) }

/// Fails with the tools that are missing.
func requireTools(_ tools: String...) throws { try TestEnvironment.require(tools: tools) }

func hasExecutable(_ name: String) -> Bool {
    (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").contains {
        FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
    }
}

/// Interface and namespace names unique on the host, carrying the run's prefix (``TestNames``): UAPI
/// sockets live in one global directory, so two test runs must never pick the same interface name,
/// and a run's clean-up removes only what carries its prefix.
enum Names {
    /// A link name (WireGuard interface, veth end) starting with the run's prefix and `kind`.
    static func next(_ kind: String) -> String { TestNames.link(kind) }
    /// A network namespace name starting with the run's prefix.
    static func namespace() -> String { TestNames.namespace("wg") }
}

/// A random private key (clamped) and its public key.
func makeKeyPair() -> (privateKey: WireGuardKey, publicKey: WireGuardKey) {
    var rng = SystemRandomNumberGenerator()
    var bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
    bytes[0] &= 248
    bytes[31] = (bytes[31] & 127) | 64
    let priv = WireGuardKey(bytes: bytes)!
    return (priv, priv.publicKeyOfPrivate)
}

func randomKey() -> WireGuardKey {
    var rng = SystemRandomNumberGenerator()
    return WireGuardKey(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })!
}

/// The `n`th synthetic peer of a large set: unique key, one /32 in 100.64.0.0/10 and one /128, an
/// endpoint in 198.18.0.0/15 (nothing answers there), and a 25 s persistent keepalive on every third
/// peer. Those send handshake initiations
/// (148 bytes, retried every 5 s) as soon as the interface is up, so their transmit counters grow
/// between two readings: compare readings of such a set with ``WGDump/withoutCounters`` and
/// ``WGDump/peersGoingBack(in:)``, never whole.
func syntheticPeer(_ n: Int, key: WireGuardKey) -> WireGuardPeerConfig {
    let v4 = IPv4Address(UInt32(0x6440_0000) + UInt32(n + 2))
    let v6 = IPv6Address(high: 0xfd00_0000_0000_0000, low: UInt64(n + 2))
    return WireGuardPeerConfig(publicKey: key, endpoint: HostPort(host: "198.18.\(n / 250 % 250).\(n % 250 + 1)", port: UInt16(20000 + n % 40000)),
                               persistentKeepaliveInterval: UInt16(n % 3 == 0 ? 25 : 0),
                               replaceAllowedIPs: true,
                               allowedIPs: [IPPrefix(host: .v4(v4)), IPPrefix(host: .v6(v6))])
}

// MARK: `wg` output, parsed independently of the library

/// One `wg show <if> dump` reading.
struct WGDump: Equatable, CustomStringConvertible {
    struct Peer: Equatable {
        var publicKey: String
        var presharedKey: String  // "(none)" when unset
        var endpoint: String  // "(none)" when unset
        var allowedIPs: [String]  // sorted
        var latestHandshake: Int64
        var rx: UInt64
        var tx: UInt64
        var keepalive: String  // "off" or seconds
    }
    var privateKey: String
    var publicKey: String
    var listenPort: String
    var fwmark: String
    var peers: [Peer]  // sorted by public key bytes

    var description: String { "WGDump(\(peers.count) peers, port \(listenPort), fwmark \(fwmark))" }

    init(parsing text: String) throws {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        guard let first = lines.first, first.count == 4 else { throw ShellError(command: "parse wg dump", status: 0, output: text) }
        privateKey = first[0]
        publicKey = first[1]
        listenPort = first[2]
        fwmark = first[3]
        peers = try lines.dropFirst().map { f in
            guard f.count == 8 else { throw ShellError(command: "parse wg dump peer", status: 0, output: f.joined(separator: "\t")) }
            return Peer(publicKey: f[0], presharedKey: f[1], endpoint: f[2],
                        allowedIPs: f[3] == "(none)" ? [] : f[3].split(separator: ",").map(String.init).sorted(),
                        latestHandshake: Int64(f[4]) ?? -1, rx: UInt64(f[5]) ?? 0, tx: UInt64(f[6]) ?? 0, keepalive: f[7])
        }.sorted { WireGuardKey(base64: $0.publicKey)! < WireGuardKey(base64: $1.publicKey)! }
    }

    /// The same fields rendered from a library reading, in `wg`'s text conventions.
    init(from d: WireGuardDevice) {
        let n = d.normalized()
        privateKey = n.privateKey?.base64 ?? "(none)"
        publicKey = n.publicKey?.base64 ?? "(none)"
        listenPort = String(n.listenPort)
        fwmark = n.firewallMark == 0 ? "off" : "0x" + String(n.firewallMark, radix: 16)
        peers = n.peers.map { p in
            Peer(publicKey: p.publicKey.base64, presharedKey: p.presharedKey?.base64 ?? "(none)",
                 endpoint: p.endpoint?.description ?? "(none)",
                 allowedIPs: p.allowedIPs.map { $0.network.description }.sorted(),
                 latestHandshake: p.lastHandshake.seconds, rx: p.receiveBytes, tx: p.transmitBytes,
                 keepalive: p.persistentKeepaliveInterval == 0 ? "off" : String(p.persistentKeepaliveInterval))
        }
    }

    /// The peers whose counters or handshake in `later` (a reading taken after this one) are below
    /// this one's, or that `later` lacks: counters only grow.
    func peersGoingBack(in later: WGDump) -> [Peer] {
        let byKey = Dictionary(uniqueKeysWithValues: later.peers.map { ($0.publicKey, $0) })
        return peers.filter { p in
            guard let l = byKey[p.publicKey] else { return true }
            return l.rx < p.rx || l.tx < p.tx || l.latestHandshake < p.latestHandshake
        }
    }

    /// Without the counters that move on their own between two readings.
    var withoutCounters: WGDump {
        var c = self
        c.peers = c.peers.map { p in
            var p = p
            p.latestHandshake = 0
            p.rx = 0
            p.tx = 0
            return p
        }
        return c
    }
}

func normalizeShowconf(_ text: String) -> String {
    var sections: [[String]] = []
    for raw in text.split(separator: "\n") {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty { continue }
        if line.hasPrefix("[") { sections.append([line]); continue }
        var kv = line
        if let eq = line.firstIndex(of: "=") {
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if key == "AllowedIPs" {
                value = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.sorted().joined(separator: ",")
            }
            kv = "\(key) = \(value)"
        }
        if sections.isEmpty { sections.append([]) }
        sections[sections.count - 1].append(kv)
    }
    let head = sections.first.map { [$0] } ?? []
    let peers = sections.dropFirst().map { $0.sorted() }.sorted { $0.joined() < $1.joined() }
    return (head + peers).map { $0.joined(separator: "\n") }.joined(separator: "\n\n")
}

/// `wg showconf`'s text rendered from a library reading, normalized the same way.
func showconf(from d: WireGuardDevice) -> String {
    var out = "[Interface]\n"
    if d.listenPort != 0 { out += "ListenPort = \(d.listenPort)\n" }
    if d.firewallMark != 0 { out += "FwMark = 0x\(String(d.firewallMark, radix: 16))\n" }
    if let k = d.privateKey { out += "PrivateKey = \(k.base64)\n" }
    for p in d.peers {
        out += "\n[Peer]\nPublicKey = \(p.publicKey.base64)\n"
        if let k = p.presharedKey { out += "PresharedKey = \(k.base64)\n" }
        if !p.allowedIPs.isEmpty { out += "AllowedIPs = \(p.allowedIPs.map { $0.network.description }.joined(separator: ", "))\n" }
        if let e = p.endpoint { out += "Endpoint = \(e)\n" }
        if p.persistentKeepaliveInterval != 0 { out += "PersistentKeepalive = \(p.persistentKeepaliveInterval)\n" }
    }
    return normalizeShowconf(out)
}

extension WireGuardDevice {
    /// Without the peers' handshake time and counters, which move on their own between two readings.
    var withoutCounters: WireGuardDevice {
        var d = self
        d.peers = d.peers.map { p in
            var p = p
            p.lastHandshake = .never
            p.receiveBytes = 0
            p.transmitBytes = 0
            return p
        }
        return d
    }
}

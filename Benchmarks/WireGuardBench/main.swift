// WireGuardBench: the library's UAPI backend against wireguard-tools (`wg`) on one wireguard-go
// daemon, in one run on one machine. Needs root, wireguard-go and wg. Prints figures; asserts nothing.
//
//   WireGuardBench [--sizes 100,1000,10000] [--iterations N] [--one-peer N] [--memory-cycles N] [--base N]
//                  [--replace-cycles N] [--long-cycles N]
//
// See docs/benchmarks.md (WireGuard section) and scripts/bench-wireguard.sh.

import Foundation
import Logging
import MeshNet
import MeshWireGuard

// MARK: Arguments

var sizes = [100, 1_000, 10_000]
var fullIterations: [Int: Int] = [100: 20, 1_000: 10, 10_000: 8]
var onePeerIterations = 200
var memoryCycles = 100
var replaceCycles = 5
var longCycles = 0
var base = 10_000
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--sizes": sizes = (args.popFirst() ?? "").split(separator: ",").compactMap { Int($0) }
    case "--iterations":
        let n = Int(args.popFirst() ?? "") ?? 5
        for s in sizes { fullIterations[s] = n }
    case "--one-peer": onePeerIterations = Int(args.popFirst() ?? "") ?? 200
    case "--memory-cycles": memoryCycles = Int(args.popFirst() ?? "") ?? 100
    case "--replace-cycles": replaceCycles = Int(args.popFirst() ?? "") ?? 5
    case "--long-cycles": longCycles = Int(args.popFirst() ?? "") ?? 0
    case "--base": base = Int(args.popFirst() ?? "") ?? 10_000
    default:
        print("usage: WireGuardBench [--sizes 100,1000,10000] [--iterations N] [--one-peer N] [--memory-cycles N] [--replace-cycles N] [--long-cycles N] [--base N]")
        exit(2)
    }
}

// MARK: Helpers

var logger = Logger(label: "mesh.wireguard.bench")
logger.logLevel = .warning

func randomKey() -> WireGuardKey {
    var g = SystemRandomNumberGenerator()
    return WireGuardKey(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) })!
}

func peer(_ n: Int, _ key: WireGuardKey) -> WireGuardPeerConfig {
    WireGuardPeerConfig(publicKey: key,
                        endpoint: HostPort(host: "198.18.\(n / 250 % 250).\(n % 250 + 1)", port: UInt16(20_000 + n % 40_000)),
                        persistentKeepaliveInterval: 25, replaceAllowedIPs: true,
                        allowedIPs: [IPPrefix(host: .v4(IPv4Address(UInt32(0x6440_0000) + UInt32(n + 2)))),
                                     IPPrefix(host: .v6(IPv6Address(high: 0xfd00_0000_0000_0000, low: UInt64(n + 2))))])
}

/// The same configuration as a `wg setconf` file.
func wgConf(privateKey: WireGuardKey, port: UInt16, peers: [WireGuardPeerConfig]) -> String {
    var s = "[Interface]\nPrivateKey = \(privateKey.base64)\nListenPort = \(port)\n"
    for p in peers {
        s += "\n[Peer]\nPublicKey = \(p.publicKey.base64)\nAllowedIPs = \(p.allowedIPs.map(\.description).joined(separator: ", "))\n"
        if let e = p.endpoint { s += "Endpoint = \(e)\n" }
        if let k = p.persistentKeepaliveInterval { s += "PersistentKeepalive = \(k)\n" }
    }
    return s
}

func writeFile(_ path: String, _ text: String) {
    let f = fopen(path, "w")!
    fputs(text, f)
    fclose(f)
}

/// Runs a command and waits for it; stdout and stderr go to /dev/null. Returns the exit status.
@discardableResult
func run(_ argv: [String]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let c = argv.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, c, environ)
    posix_spawn_file_actions_destroy(&actions)
    c.forEach { free($0) }
    guard rc == 0 else { return -1 }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return status
}

let clock = ContinuousClock()

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func measure(_ body: () async throws -> Void) async rethrows -> Double {
    let start = clock.now
    try await body()
    return seconds(clock.now - start)
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    let i = min(s.count - 1, max(0, Int((p / 100 * Double(s.count)).rounded(.up)) - 1))
    return s[i]
}

func fmt(_ seconds: Double) -> String {
    if seconds >= 1 { return String(format: "%.3f s", seconds) }
    if seconds >= 0.001 { return String(format: "%.2f ms", seconds * 1e3) }
    return String(format: "%.1f µs", seconds * 1e6)
}

func format(_ f: String, _ x: Double) -> String { String(format: f, x) }

func rssKiB(_ pid: Int32) -> Int {
    guard let f = fopen("/proc/\(pid)/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmRSS:") { return Int(s.split(separator: " ").dropFirst().first ?? "") ?? -1 }
    }
    return -1
}

guard getuid() == 0 else {
    print("WireGuardBench: needs root (it starts wireguard-go)")
    exit(1)
}

// MARK: Daemon

let iface = "wgb\(getpid() % 100_000)"
let daemon: WireGuardGoDaemon
do {
    daemon = try await WireGuardGoDaemon.start(interface: iface)
} catch {
    print("WireGuardBench: cannot start wireguard-go: \(error)")
    exit(1)
}
let uapi = UAPIBackend(logger: logger)
let privateKey = randomKey()
let port: UInt16 = 40_000 + UInt16(getpid() % 20_000)
let confPath = "/tmp/\(iface).conf"
print("WireGuardBench: wireguard-go pid \(daemon.pid), interface \(iface)")
print("")

func reset() async throws {
    try await uapi.configure(device: iface, WireGuardConfig(replacePeers: true))
}

var failed = false
do {
    // MARK: Full apply
    print("Full apply (replace all peers from an empty device), library vs `wg setconf`, same config:")
    print("  peers    iterations  ours p50     ours p99     wg setconf p50  wg p99       ratio p50")
    for n in sizes {
        let keys = (0..<n).map { _ in randomKey() }
        let peers = keys.enumerated().map { peer($0.offset, $0.element) }
        let config = WireGuardConfig(privateKey: privateKey, listenPort: port, replacePeers: true, peers: peers)
        writeFile(confPath, wgConf(privateKey: privateKey, port: port, peers: peers))
        var ours: [Double] = [], theirs: [Double] = []
        let iterations = fullIterations[n] ?? 5
        for i in 0..<iterations {
            // Alternate who goes first: the daemon's heap grows over the run (every full replace
            // leaves garbage for Go's collector), so a fixed order would favour whoever goes first.
            for turn in (i % 2 == 0 ? [0, 1] : [1, 0]) {
                try await reset()
                if turn == 0 {
                    ours.append(try await measure { try await uapi.configure(device: iface, config) })
                } else {
                    var status: Int32 = 0
                    theirs.append(await measure { status = run(["wg", "setconf", iface, confPath]) })
                    if status != 0 { throw WireGuardError.daemon("wg setconf exited \(status)") }
                }
            }
        }
        let check = try await uapi.device(named: iface)
        if check.peers.count != n { throw WireGuardError.daemon("expected \(n) peers after apply, found \(check.peers.count)") }
        let o50 = percentile(ours, 50), t50 = percentile(theirs, 50)
        print("  " + [String(n).padding(9), String(iterations).padding(12), fmt(o50).padding(13), fmt(percentile(ours, 99)).padding(13),
                      fmt(t50).padding(16), fmt(percentile(theirs, 99)).padding(13), format("%.3f", o50 / t50)].joined())
    }
    print("")

    // MARK: One peer on top of `base` (10,000 unless --base)
    let baseKeys = (0..<base).map { _ in randomKey() }
    let baseConfig = WireGuardConfig(privateKey: privateKey, listenPort: port, replacePeers: true,
                                     peers: baseKeys.enumerated().map { peer($0.offset, $0.element) })
    try await uapi.configure(device: iface, baseConfig)
    print("One-peer add and remove on top of \(base) peers (\(onePeerIterations) of each):")
    var ourAdd: [Double] = [], ourRemove: [Double] = [], wgAdd: [Double] = [], wgRemove: [Double] = []
    var rawAdd: [Double] = [], rawRemove: [Double] = []
    for i in 0..<onePeerIterations {
        let k = randomKey()
        let p = peer(base + i, k)
        ourAdd.append(try await measure { try await uapi.configure(device: iface, WireGuardConfig(peers: [p])) })
        ourRemove.append(try await measure { try await uapi.configure(device: iface, WireGuardConfig(peers: [.removing(k)])) })

        let k2 = randomKey()
        let allowed = p.allowedIPs.map(\.description).joined(separator: ",")
        wgAdd.append(await measure {
            run(["wg", "set", iface, "peer", k2.base64, "allowed-ips", allowed, "endpoint", p.endpoint!.description,
                 "persistent-keepalive", "25"])
        })
        wgRemove.append(await measure { run(["wg", "set", iface, "peer", k2.base64, "remove"]) })

        // The protocol floor: pre-encoded bytes straight through the socket, no model, no parsing.
        let k3 = randomKey()
        let addBytes = Array("set=1\npublic_key=\(k3.hex)\nendpoint=\(p.endpoint!)\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=\(p.allowedIPs[0])\nallowed_ip=\(p.allowedIPs[1])\n\n".utf8)
        let removeBytes = Array("set=1\npublic_key=\(k3.hex)\nremove=true\n\n".utf8)
        rawAdd.append(try await measure { _ = try await uapi.rawExchange(device: iface, request: addBytes) })
        rawRemove.append(try await measure { _ = try await uapi.rawExchange(device: iface, request: removeBytes) })
    }
    func row(_ name: String, _ xs: [Double]) {
        print("  " + name.padding(22) + "p50 " + fmt(percentile(xs, 50)).padding(11) + "p99 " + fmt(percentile(xs, 99)).padding(11)
              + "mean " + fmt(xs.reduce(0, +) / Double(xs.count)))
    }
    row("ours add", ourAdd)
    row("ours remove", ourRemove)
    row("wg set add", wgAdd)
    row("wg set remove", wgRemove)
    row("raw UAPI add", rawAdd)
    row("raw UAPI remove", rawRemove)
    print("  ratio ours/wg set (p50): add " + format("%.3f", percentile(ourAdd, 50) / percentile(wgAdd, 50))
          + ", remove " + format("%.3f", percentile(ourRemove, 50) / percentile(wgRemove, 50)))
    print("")

    // MARK: Dump
    let dumpIterations = 21
    var ourDump: [Double] = [], wgDump: [Double] = [], rawGet: [Double] = []
    for i in 0..<dumpIterations {
        // Rotate the order: every get leaves megabytes of garbage in the daemon, and whoever runs
        // when its collector kicks in pays for it.
        for turn in (0..<3).map({ ($0 + i) % 3 }) {
            switch turn {
            case 0:
                rawGet.append(try await measure { _ = try await uapi.rawExchange(device: iface, request: Array("get=1\n\n".utf8)) })
            case 1:
                var count = 0
                ourDump.append(try await measure { count = try await uapi.device(named: iface).peers.count })
                if count != base { throw WireGuardError.daemon("dump returned \(count) peers, expected \(base)") }
            default:
                wgDump.append(await measure { run(["wg", "show", iface, "dump"]) })
            }
        }
    }
    print("Dump of \(base) peers (\(dumpIterations) each):")
    row("ours device(named:)", ourDump)
    row("wg show dump", wgDump)
    row("raw UAPI get (no parse)", rawGet)
    print("  ratio ours/wg (p50): " + format("%.3f", percentile(ourDump, 50) / percentile(wgDump, 50)))
    print("")

    // MARK: Memory
    // Each pattern gets a fresh daemon loaded with the same 10,000 peers: the daemon above has been
    // through dozens of full replaces, and patterns must not inherit each other's garbage.
    var memConfig = baseConfig
    memConfig.listenPort = port + 1
    func memoryRun(_ label: String, cycles: Int, _ body: (String, Int) async throws -> Void) async throws {
        let name = "wgm\(getpid() % 100_000)"
        let d = try await WireGuardGoDaemon.start(interface: name)
        do {
            try await uapi.configure(device: name, memConfig)
            try await Task.sleep(for: .seconds(1))
            let loaded = rssKiB(d.pid)
            var samples: [Int] = []
            for i in 0..<cycles {
                try await body(name, i)
                if (i + 1) % max(1, cycles / 5) == 0 { samples.append(rssKiB(d.pid)) }
            }
            let after = rssKiB(d.pid)
            print("  " + label.padding(44) + "RSS \(loaded) -> \(after) KiB (\(after - loaded >= 0 ? "+" : "")\(after - loaded) KiB, "
                  + format("%+.2f", Double(after - loaded) / Double(loaded) * 100) + "%); samples \(samples.map(String.init).joined(separator: ", "))")
        } catch {
            await d.stop()
            throw error
        }
        await d.stop()
    }
    print("Daemon memory (VmRSS of wireguard-go), each line a fresh daemon holding \(base) peers:")
    try await memoryRun("ours: \(memoryCycles) one-peer add+remove cycles", cycles: memoryCycles) { name, i in
        let k = randomKey()
        try await uapi.configure(device: name, WireGuardConfig(peers: [peer(base + i, k)]))
        try await uapi.configure(device: name, WireGuardConfig(peers: [.removing(k)]))
    }
    try await memoryRun("wg set: \(memoryCycles) one-peer add+remove cycles", cycles: memoryCycles) { name, i in
        let k = randomKey()
        let p = peer(base + i, k)
        run(["wg", "set", name, "peer", k.base64, "allowed-ips", p.allowedIPs.map(\.description).joined(separator: ","),
             "endpoint", p.endpoint!.description, "persistent-keepalive", "25"])
        run(["wg", "set", name, "peer", k.base64, "remove"])
    }
    try await memoryRun("ours: \(memoryCycles) one-peer updates (endpoint+IPs)", cycles: memoryCycles) { name, i in
        try await uapi.configure(device: name, WireGuardConfig(peers: [
            WireGuardPeerConfig(publicKey: baseKeys[0], endpoint: HostPort(host: "198.18.250.\(i % 250 + 1)", port: 51820),
                                replaceAllowedIPs: true, allowedIPs: baseConfig.peers[0].allowedIPs),
        ]))
    }
    if longCycles > 0 {
        try await memoryRun("ours: \(longCycles) one-peer add+remove cycles", cycles: longCycles) { name, i in
            let k = randomKey()
            try await uapi.configure(device: name, WireGuardConfig(peers: [peer(base + i, k)]))
            try await uapi.configure(device: name, WireGuardConfig(peers: [.removing(k)]))
        }
        try await memoryRun("wg set: \(longCycles) one-peer add+remove cycles", cycles: longCycles) { name, i in
            let k = randomKey()
            let p = peer(base + i, k)
            run(["wg", "set", name, "peer", k.base64, "allowed-ips", p.allowedIPs.map(\.description).joined(separator: ","),
                 "endpoint", p.endpoint!.description, "persistent-keepalive", "25"])
            run(["wg", "set", name, "peer", k.base64, "remove"])
        }
    }
    if replaceCycles > 0 {
        try await memoryRun("contrast: \(replaceCycles) full replaces of all peers", cycles: replaceCycles) { name, _ in
            try await uapi.configure(device: name, memConfig)
        }
    }
} catch {
    print("WireGuardBench: FAILED: \(error)")
    failed = true
}

unlink(confPath)
await daemon.stop()
exit(failed ? 1 : 0)

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}

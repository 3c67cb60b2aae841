import Foundation
import MeshBus

/// A network namespace for tests (needs root). Everything started inside it is killed and the
/// namespace deleted by ``destroy()`` (or on release).
public final class NetNamespace: @unchecked Sendable {
    public let name: String
    private var destroyed = false

    /// Creates `<run prefix>-<prefix>-<random>` (``TestNames/namespace(_:)``) with loopback up.
    public init(prefix: String) throws {
        name = TestNames.namespace(prefix)
        try Self.ip(["netns", "add", name])
        try exec(["ip", "link", "set", "lo", "up"])
    }

    /// Runs a command inside the namespace; throws with its output on a non-zero exit.
    @discardableResult
    public func exec(_ args: [String], environment: [String: String] = [:]) throws -> String {
        let r = try run("/usr/bin/env", ["ip", "netns", "exec", name] + args, environment: environment)
        guard r.status == 0 else { throw TestSetupError.failed("[\(name)] \(args.joined(separator: " ")) failed (\(r.status)): \(r.output)") }
        return r.stdout
    }

    /// Runs a command inside the namespace and returns status and output.
    public func tryExec(_ args: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String, stdout: String) {
        try run("/usr/bin/env", ["ip", "netns", "exec", name] + args, environment: environment)
    }

    /// ``exec(_:environment:)`` from async code, waited for off the cooperative pool.
    @discardableResult
    public func exec(_ args: [String], environment: [String: String] = [:]) async throws -> String {
        try await offPool { try self.exec(args, environment: environment) }
    }

    /// ``tryExec(_:environment:)`` from async code, waited for off the cooperative pool.
    public func tryExec(_ args: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String, stdout: String) {
        try await offPool { try self.tryExec(args, environment: environment) }
    }

    /// Starts wireguard-go for `interface` inside the namespace (it daemonizes) and waits for its UAPI socket.
    public func startWireGuardGo(_ interface: String) throws {
        try exec(["wireguard-go", interface], environment: ["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"])
        let sock = "/var/run/wireguard/\(interface).sock"
        // A generous bound (the machine may be busy), not a speed.
        let deadline = ContinuousClock.now + .seconds(60)
        while !FileManager.default.fileExists(atPath: sock) && ContinuousClock.now < deadline { usleep(10_000) }
        guard FileManager.default.fileExists(atPath: sock) else { throw TestSetupError.failed("wireguard-go did not create \(sock) within 60 s") }
    }

    /// Kills every process in the namespace and deletes it. A wireguard-go killed this way leaves
    /// its UAPI socket behind in the host-wide `/var/run/wireguard`, so the sockets of the
    /// namespace's interfaces (names are unique host-wide) are removed too.
    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        let links = ((try? run("/usr/bin/env", ["ip", "-n", name, "-o", "link", "show"]).stdout) ?? "")
            .split(separator: "\n")
            .compactMap { line -> String? in
                // "7: wn0dgd272n: <POINTOPOINT,...>" or "9: mdp1@if1010: <...>"
                let fields = line.split(separator: ":", maxSplits: 2)
                guard fields.count >= 2 else { return nil }
                return fields[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first.map(String.init)
            }
        if let pids = try? run("/usr/bin/env", ["ip", "netns", "pids", name]).output {
            for p in pids.split(separator: "\n") { if let pid = Int32(p) { kill(pid, SIGKILL) } }
        }
        _ = try? run("/usr/bin/env", ["ip", "netns", "del", name])
        for link in links where !link.isEmpty && link != "lo" && !link.contains("/") {
            unlink("/var/run/wireguard/\(link).sock")
        }
    }

    deinit { destroy() }

    static func ip(_ args: [String]) throws {
        let r = try run("/usr/bin/env", ["ip"] + args)
        guard r.status == 0 else { throw TestSetupError.failed("ip \(args.joined(separator: " ")) failed: \(r.output)") }
    }

    /// Connects two namespaces with a veth pair and gives each end an address (CIDR).
    public static func link(_ a: NetNamespace, _ aAddress: String, _ b: NetNamespace, _ bAddress: String) throws {
        let va = TestNames.link("a"), vb = TestNames.link("b")
        try ip(["link", "add", va, "type", "veth", "peer", "name", vb])
        try ip(["link", "set", va, "netns", a.name])
        try ip(["link", "set", vb, "netns", b.name])
        try a.exec(["ip", "addr", "add", aAddress, "dev", va])
        try b.exec(["ip", "addr", "add", bAddress, "dev", vb])
        try a.exec(["ip", "link", "set", va, "up"])
        try b.exec(["ip", "link", "set", vb, "up"])
    }
}

/// A unique WireGuard interface name carrying the run's prefix (the UAPI socket path is global to
/// the host, so names must be unique across namespaces too). At most 15 characters.
public func uniqueInterfaceName(_ kind: String = "w") -> String {
    TestNames.link(kind)
}

/// A Linux bridge in the root namespace that network namespaces plug into, like a switch: the
/// control plane listens on the bridge address, nodes and devices sit behind veth ports.
public final class TestBridge: @unchecked Sendable {
    public let name: String
    public let address: String
    private var destroyed = false

    /// Creates the bridge with `address` (CIDR, e.g. "10.99.0.1/24").
    public init(address: String) throws {
        name = TestNames.link("br")
        self.address = address
        try NetNamespace.ip(["link", "add", name, "type", "bridge"])
        // Pin the bridge's MAC address. Otherwise Linux gives the bridge the lowest MAC of its ports,
        // so plugging in a new namespace can change it, and every namespace that cached the old one
        // loses its path to the bridge address (NATS) until its ARP entry expires.
        let mac = "02:" + (0..<5).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined(separator: ":")
        try NetNamespace.ip(["link", "set", name, "address", mac])
        try NetNamespace.ip(["addr", "add", address, "dev", name])
        try NetNamespace.ip(["link", "set", name, "up"])
    }

    /// The bridge's address without prefix length.
    public var host: String { String(address.split(separator: "/")[0]) }

    /// Plugs `ns` in with `nsAddress` (CIDR), and any further addresses (IPv6 ones without duplicate
    /// address detection, so they work at once).
    public func attach(_ ns: NetNamespace, _ nsAddress: String, _ more: [String] = []) throws {
        let outside = TestNames.link("o"), inside = TestNames.link("i")
        try NetNamespace.ip(["link", "add", outside, "type", "veth", "peer", "name", inside])
        try NetNamespace.ip(["link", "set", inside, "netns", ns.name])
        try NetNamespace.ip(["link", "set", outside, "master", name])
        try NetNamespace.ip(["link", "set", outside, "up"])
        try ns.exec(["ip", "addr", "add", nsAddress, "dev", inside])
        for a in more { try ns.exec(["ip", "addr", "add", a, "dev", inside] + (a.contains(":") ? ["nodad"] : [])) }
        try ns.exec(["ip", "link", "set", inside, "up"])
    }

    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        _ = try? run("/usr/bin/env", ["ip", "link", "del", name])
    }

    deinit { destroy() }
}

/// What wg-quick does after `wg setconf`: a route into the interface for every allowed IP.
public func addRoutesForAllowedIPs(_ ns: NetNamespace, _ interface: String) throws {
    // Lines are "<public key>\t<prefix> <prefix> ..."; keys are base64 and may contain '/'.
    for line in try ns.exec(["wg", "show", interface, "allowed-ips"]).split(separator: "\n") {
        let fields = line.split(separator: "\t")
        guard fields.count == 2 else { continue }
        for prefix in fields[1].split(separator: " ") where prefix.contains("/") {
            try ns.exec(["ip", prefix.contains(":") ? "-6" : "-4", "route", "replace", String(prefix), "dev", interface])
        }
    }
}

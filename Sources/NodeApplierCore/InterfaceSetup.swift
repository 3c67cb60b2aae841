import Foundation
import Logging
import MeshCore
import MeshNet
import MeshWireGuard

/// Brings up the node's WireGuard interface without wg-quick: the kernel link through rtnetlink,
/// or a wireguard-go daemon, then key, port, addresses, MTU, link up and forwarding. Everything is
/// idempotent, so a restarted node keeps its interface and its working peers.
public enum InterfaceSetup {
    /// Prepares the interface and returns the backend that drives it.
    public static func prepare(_ config: NodeConfiguration, identity: NodeIdentity, privateKey: String,
                               logger: Logger) async throws -> any WireGuardBackend {
        let links = RouteNetlink(logger: logger)
        let iface = config.interface
        let kernel = KernelBackend(logger: logger)
        let kernelAvailable = await kernel.isAvailable()
        if config.backend == .kernel && !kernelAvailable {
            throw WireGuardError.noBackend(interface: iface, kernel: "the kernel has no WireGuard (generic netlink family \"wireguard\")",
                                           userspace: "not requested (backend=kernel)")
        }
        if kernelAvailable && config.backend != .userspace {
            if (try? await links.link(named: iface)) == nil {
                try await links.createLink(named: iface, kind: "wireguard", mtu: config.mtu)
                logger.info("created kernel WireGuard link", metadata: ["interface": "\(iface)"])
            }
        } else if !UAPIBackend(logger: logger).hasSocket(for: iface) {
            try startDaemon(config, logger: logger)
        }
        let backend = try await WireGuardBackendSelection.select(interface: iface, logger: logger)
        guard let key = WireGuardKey(base64: privateKey) else { throw WireGuardError.invalidConfiguration("bad private key") }
        let current = try await backend.device(named: iface)
        if current.privateKey != key || current.listenPort != config.listenPort {
            try await backend.configure(device: iface, WireGuardConfig(privateKey: key, listenPort: config.listenPort))
        }
        guard let v4 = IPPrefix(identity.ipv4Prefix), let v6 = IPPrefix(identity.ipv6Prefix),
              let a4 = IPAddress(identity.ipv4), let a6 = IPAddress(identity.ipv6) else {
            throw WireGuardError.invalidConfiguration("bad addresses in the registration")
        }
        // The node's address with the tenant's prefix length: the kernel then routes the whole tenant
        // prefix into the interface, and WireGuard picks the peer by allowed IPs.
        try await links.addAddress(IPPrefix(a4, length: v4.length)!, link: iface)
        try await links.addAddress(IPPrefix(a6, length: v6.length)!, link: iface)
        try await links.setMTU(config.mtu, link: iface)
        try await links.setUp(true, link: iface)
        if config.forwarding { enableForwarding(iface, logger: logger) }
        logger.info("interface ready", metadata: ["interface": "\(iface)", "backend": "\(backend.kind)", "ipv4": "\(identity.ipv4)", "ipv6": "\(identity.ipv6)"])
        return backend
    }

    /// Starts wireguard-go detached (it daemonizes), so the interface outlives this process: a
    /// restarted node finds it, diffs, and keeps the peers that work.
    static func startDaemon(_ config: NodeConfiguration, logger: Logger) throws {
        var env = ProcessInfo.processInfo.environment
        env["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
        env["LOG_LEVEL"] = env["MESH_WIREGUARD_GO_LOG_LEVEL"] ?? "error"
        // posix_spawn + waitpid rather than Foundation's Process, whose wait does not return
        // reliably for a program that forks a daemon and exits.
        let status = try spawnAndWait([config.wireguardGo, config.interface], environment: env)
        guard status == 0 else {
            throw WireGuardError.daemon("\(config.wireguardGo) \(config.interface) exited with \(status)")
        }
        let sock = "\(UAPIBackend.defaultSocketDirectory)/\(config.interface).sock"
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: sock) { usleep(10_000) }
        guard FileManager.default.fileExists(atPath: sock) else { throw WireGuardError.daemon("wireguard-go did not create \(sock)") }
        logger.info("started wireguard-go", metadata: ["interface": "\(config.interface)"])
    }

    /// Runs a program (looked up in PATH) with stdio on /dev/null and returns its exit status.
    static func spawnAndWait(_ argv: [String], environment: [String: String]) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in [0, 1, 2] {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        let args = argv.map { strdup($0) } + [nil]
        let env = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            args.forEach { free($0) }
            env.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, args, env)
        guard rc == 0 else { throw WireGuardError.daemon("cannot start \(argv[0]): errno \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// The hub forwards device-to-device traffic in and out of the same interface; any node may
    /// become the hub, so every node forwards on its mesh interface.
    static func enableForwarding(_ iface: String, logger: Logger) {
        for path in ["/proc/sys/net/ipv4/conf/\(iface)/forwarding", "/proc/sys/net/ipv6/conf/\(iface)/forwarding",
                     "/proc/sys/net/ipv6/conf/all/forwarding"] {
            do {
                try "1\n".write(toFile: path, atomically: false, encoding: .utf8)
            } catch {
                logger.warning("cannot enable forwarding", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
    }
}

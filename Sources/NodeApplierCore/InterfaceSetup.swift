import Foundation
import Logging
import MeshDomain
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
        } else if config.userspaceDaemon == .external {
            try await waitForDaemon(iface, timeout: .seconds(30), logger: logger)
        } else if !(await userspaceDaemonServes(iface, logger: logger)) {
            // No daemon answers: none runs, or the socket is a dead one's (wireguard-go killed
            // leaves it behind; it was removed and a new one replaces it).
            // Detached, so the interface outlives this process: a restarted node keeps its peers.
            try await WireGuardGoDaemon.startDetached(interface: iface, executable: config.wireguardGo,
                                                      logLevel: config.wireguardGoLogLevel)
            logger.info("started wireguard-go", metadata: ["interface": "\(iface)"])
        }
        let backend = try await WireGuardBackendSelection.select(interface: iface, logger: logger)
        guard let key = WireGuardKey(base64: privateKey) else { throw WireGuardError.invalidConfiguration("bad private key") }
        // The activity reading carries the key and the port at half the cost of a full one (a
        // restarted node's interface may hold 50,000 peers).
        let current = try await backend.activity(named: iface)
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

    /// True when a userspace daemon answers on the interface's UAPI socket. A socket file that no
    /// daemon listens on (wireguard-go killed with SIGKILL, or a container restarted with its
    /// filesystem kept) is removed, so that a new daemon can be started in its place.
    public static func userspaceDaemonServes(_ iface: String, logger: Logger) async -> Bool {
        let uapi = UAPIBackend(logger: logger)
        guard uapi.hasSocket(for: iface) else { return false }
        do {
            _ = try await uapi.activity(named: iface)
            return true
        } catch .deviceNotFound {
            logger.warning("removing a stale UAPI socket (no daemon listens on it)", metadata: ["path": "\(uapi.socketPath(for: iface))"])
            unlink(uapi.socketPath(for: iface))
            return false
        } catch {
            // Anything else (permissions, a daemon that answers oddly) is for the caller to see.
            return true
        }
    }

    /// Waits until a wireguard-go run by a supervisor answers on the interface's UAPI socket.
    static func waitForDaemon(_ iface: String, timeout: Duration, logger: Logger) async throws {
        let uapi = UAPIBackend(logger: logger)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if uapi.hasSocket(for: iface), (try? await uapi.activity(named: iface)) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw WireGuardError.noBackend(interface: iface, kernel: "not used (backend=userspace)",
                                       userspace: "no wireguard-go answered on \(uapi.socketPath(for: iface)) within \(timeout) "
                                           + "(MESH_WG_USERSPACE_DAEMON=external: a supervisor runs it)")
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

import Logging

/// Picks the backend that serves an interface.
public enum WireGuardBackendSelection {
    /// Chooses the backend for `interface`:
    ///
    /// 1. the kernel, if the generic netlink family "wireguard" exists, unless the interface exists
    ///    as a non-WireGuard link (a userspace daemon's TUN device) and a UAPI socket serves it;
    /// 2. otherwise the userspace daemon, if its UAPI socket exists;
    /// 3. otherwise ``WireGuardError/noBackend(interface:kernel:userspace:)``, naming why each failed.
    ///
    /// When the kernel is chosen and the link does not exist yet, the caller creates it with
    /// ``RouteNetlink/createLink(named:kind:mtu:)``.
    public static func select(interface: String, namespacePath: String? = nil,
                              socketDirectory: String = UAPIBackend.defaultSocketDirectory,
                              logger: Logger) async throws(WireGuardError) -> any WireGuardBackend {
        let kernel = KernelBackend(namespacePath: namespacePath, logger: logger)
        let userspace = UAPIBackend(socketDirectory: socketDirectory, logger: logger)
        let hasSocket = userspace.hasSocket(for: interface)
        var kernelWhy = "generic netlink family \"wireguard\" not found (no kernel module)"
        do {
            _ = try await kernel.familyID()
            if hasSocket {
                let links = RouteNetlink(namespacePath: namespacePath, logger: logger)
                if let link = try? await links.link(named: interface), link.kind != "wireguard" {
                    logger.debug("userspace daemon serves the interface", metadata: ["interface": "\(interface)"])
                    return userspace
                }
            }
            return kernel
        } catch {
            if case .deviceNotFound = error {} else { kernelWhy = error.description }
        }
        if hasSocket { return userspace }
        throw .noBackend(interface: interface, kernel: kernelWhy,
                         userspace: "no UAPI socket at \(userspace.socketPath(for: interface))")
    }
}

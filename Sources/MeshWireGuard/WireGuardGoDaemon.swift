#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CMNL  // sys/socket.h: SOCK_STREAM and SOCK_CLOEXEC, which Glibc alone does not export in every build mode
import MeshSpawn

/// A wireguard-go process serving one interface, started in the foreground (`-f`) so this process
/// owns it and can stop it. For hosts without kernel WireGuard.
public actor WireGuardGoDaemon {
    /// The interface the daemon serves.
    public nonisolated let interface: String
    /// The daemon's process id.
    public nonisolated let pid: Int32
    /// The UAPI socket directory the daemon was expected to use.
    public nonisolated let socketDirectory: String
    private var exitStatus: Int32?

    private init(interface: String, pid: Int32, socketDirectory: String) {
        self.interface = interface
        self.pid = pid
        self.socketDirectory = socketDirectory
    }

    /// Starts wireguard-go for `interface` and waits until its UAPI socket accepts connections.
    ///
    /// - Parameters:
    ///   - executable: the wireguard-go binary (a bare name is looked up in PATH).
    ///   - commandPrefix: words put before the executable, e.g. `["ip", "netns", "exec", "blue"]` to
    ///     create the TUN device in another network namespace (`ip netns exec` keeps the pid).
    ///   - socketDirectory: where the daemon puts its socket; wireguard-go always uses
    ///     `/var/run/wireguard`, other daemons may differ.
    ///   - logPath: file for the daemon's output (appended), or nil to discard it.
    ///   - timeout: how long to wait for the socket.
    public static func start(interface: String, executable: String = "wireguard-go", commandPrefix: [String] = [],
                             socketDirectory: String = UAPIBackend.defaultSocketDirectory, logPath: String? = nil,
                             timeout: Duration = .seconds(10)) async throws(WireGuardError) -> WireGuardGoDaemon {
        guard !interface.isEmpty, interface.utf8.count < 16 else { throw .invalidConfiguration("bad interface name \(interface)") }
        let argv = commandPrefix + [executable, "-f", interface]
        // Quiets the "use the kernel module" banner; the daemon runs the same either way.
        let env = ["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=error"]
        let pid = try spawn(argv, extraEnvironment: env, logPath: logPath)
        let daemon = WireGuardGoDaemon(interface: interface, pid: pid, socketDirectory: socketDirectory)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let path = "\(socketDirectory)/\(interface).sock"
        while clock.now < deadline {
            if let status = await daemon.reap() {
                throw .daemon("\(argv.joined(separator: " ")) exited with status \(status) before creating \(path)")
            }
            if canConnect(path) { return daemon }
            try? await Task.sleep(for: .milliseconds(5))
        }
        await daemon.stop()
        throw .daemon("\(argv.joined(separator: " ")) did not create \(path) within \(timeout)")
    }

    /// Starts wireguard-go for `interface` detached: it daemonizes, so the interface outlives the
    /// caller (a restarted node agent finds it and keeps its working peers). Waits until the UAPI
    /// socket accepts connections.
    public static func startDetached(interface: String, executable: String = "wireguard-go",
                                     socketDirectory: String = UAPIBackend.defaultSocketDirectory, logLevel: String = "error",
                                     timeout: Duration = .seconds(10)) async throws(WireGuardError) {
        guard !interface.isEmpty, interface.utf8.count < 16 else { throw .invalidConfiguration("bad interface name \(interface)") }
        let argv = [executable, interface]
        let pid = try spawn(argv, extraEnvironment: ["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "LOG_LEVEL=\(logLevel)"], logPath: nil)
        // The launcher exits once the daemon has forked off.
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            throw .daemon("\(argv.joined(separator: " ")) exited with status \(status)")
        }
        let path = "\(socketDirectory)/\(interface).sock"
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if canConnect(path) { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
        throw .daemon("\(argv.joined(separator: " ")) did not create \(path) within \(timeout)")
    }

    /// True while the process has not exited.
    public func isRunning() -> Bool { reap() == nil }

    /// Sends SIGTERM, waits up to `timeout` for the process to exit, then SIGKILLs it, and removes
    /// the daemon's UAPI socket. The TUN device goes with the process; the socket does not always:
    /// wireguard-go unlinks it only when the Go listener it first created happens to be finalised
    /// before exit, so a stopped daemon can leave `<interface>.sock` behind in the host-wide directory.
    public func stop(timeout: Duration = .seconds(5)) async {
        defer { removeStaleSocket() }
        guard reap() == nil else { return }
        kill(pid, SIGTERM)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if reap() != nil { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
        kill(pid, SIGKILL)
        while reap() == nil { try? await Task.sleep(for: .milliseconds(5)) }
    }

    /// Unlinks the socket once the process has exited, unless something (a new daemon for the same
    /// interface) is listening on it.
    private func removeStaleSocket() {
        let path = "\(socketDirectory)/\(interface).sock"
        guard exitStatus != nil, !Self.canConnect(path) else { return }
        unlink(path)
    }

    /// Collects the exit status without blocking; nil while running.
    private func reap() -> Int32? {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || (r < 0 && errno == ECHILD) {
            exitStatus = status
            return status
        }
        return nil
    }

    private static func canConnect(_ path: String) -> Bool {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }

    private static func spawn(_ argv: [String], extraEnvironment: [String], logPath: String?) throws(WireGuardError) -> Int32 {
        let out = logPath ?? "/dev/null"
        do {
            // The daemon outlives us on purpose: it must not keep our sockets (the NATS connection) open.
            return try ChildProcess.spawn(argv, environment: ChildProcess.currentEnvironment() + extraEnvironment) { actions in
                posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            }
        } catch {
            throw .daemon("cannot start \(argv[0]): \(errnoName(error.errno))")
        }
    }
}

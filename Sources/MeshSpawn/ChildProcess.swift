#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one way the project starts a child process: its standard streams as the caller sets them up,
/// and none of this process's other descriptors.
///
/// Every descriptor without `FD_CLOEXEC` is otherwise handed to the child, and a child that
/// outlives its parent keeps them open. nats.c opens its sockets without the flag, so a
/// wireguard-go started by NodeApplier (and kept running on purpose when NodeApplier exits, so the
/// interface stays up) held NodeApplier's NATS connection open after a crash: nats-server kept the
/// dead agent's subscriptions, and about half of the node's control requests (a queue group of the
/// dead and the restarted agent) went unanswered until the server's ping timeout, minutes later.
public enum ChildProcess {
    /// Why a child could not be started: the `errno` `posix_spawn` gave (`ENOSYS` when the C
    /// library cannot close inherited descriptors in the child).
    public struct SpawnError: Error, Sendable {
        public let errno: Int32
        public var description: String { String(cString: strerror(errno)) }
    }

    /// Starts `argv[0]` (looked up in `PATH` when it holds no `/`) with `environment` as its whole
    /// environment. `streams` sets up descriptors 0, 1 and 2; every descriptor above them is then
    /// closed in the child (glibc's `posix_spawn_file_actions_addclosefrom_np`, 2.34 and later).
    public static func spawn(_ argv: [String], environment: [String],
                             streams: (inout posix_spawn_file_actions_t) -> Void) throws(SpawnError) -> pid_t {
        guard let addCloseFrom else { throw SpawnError(errno: ENOSYS) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        streams(&actions)
        _ = addCloseFrom(&actions, 3)
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else { throw SpawnError(errno: rc) }
        return pid
    }

    /// This process's environment, as `spawn` takes it.
    public static func currentEnvironment() -> [String] {
        var out: [String] = []
        var e = environ
        while let entry = e.pointee {
            out.append(String(cString: entry))
            e += 1
        }
        return out
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// Looked up at run time: the declaration is hidden behind `_GNU_SOURCE`, which Swift's C
    /// library module is built without.
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()
}

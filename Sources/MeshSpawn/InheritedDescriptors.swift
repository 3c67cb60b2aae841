#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a child process started with `posix_spawn` inherits: its standard streams and nothing else.
///
/// Every descriptor without `FD_CLOEXEC` is otherwise handed to the child, and a child that
/// outlives its parent keeps them open. nats.c opens its sockets without the flag, so a
/// wireguard-go started by NodeApplier (and kept running on purpose when NodeApplier exits, so the
/// interface stays up) held NodeApplier's NATS connection open after a crash: nats-server kept the
/// dead agent's subscriptions, and about half of the node's control requests (a queue group of the
/// dead and the restarted agent) went unanswered until the server's ping timeout, minutes later.
public enum InheritedDescriptors {
    /// Adds an action that closes every descriptor from 3 up in the child (glibc's
    /// `posix_spawn_file_actions_addclosefrom_np`, 2.34 and later). Call it after the actions that
    /// set up 0, 1 and 2: later `addopen`s would land above 2 and be closed again.
    public static func closeAll(_ actions: inout posix_spawn_file_actions_t) {
        if let addCloseFrom {
            _ = addCloseFrom(&actions, 3)
            return
        }
        // An older C library: close what is open now, one action per descriptor (a descriptor
        // opened by another thread after this loop is not covered).
        guard let dir = opendir("/proc/self/fd") else { return }
        defer { closedir(dir) }
        let own = dirfd(dir)
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = Int32(name), fd > 2, fd != own { posix_spawn_file_actions_addclose(&actions, fd) }
        }
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// Looked up at run time: the declaration is hidden behind `_GNU_SOURCE`, which Swift's C
    /// library module is built without.
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()
}

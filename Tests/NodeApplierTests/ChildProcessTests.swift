import Foundation
import MeshSpawn
import Testing

/// A child started with ``ChildProcess/spawn(_:environment:streams:)`` (how wireguard-go, `nft`
/// and `conntrack` are started) gets its standard streams and none of the parent's other
/// descriptors, even those opened without `FD_CLOEXEC` (as nats.c opens its sockets). NodeApplier's
/// wireguard-go outlives a crashed agent; holding the agent's NATS socket, it kept the dead agent's
/// subscriptions alive on the server (MeshE2ETests checks that end to end).
@Suite(.timeLimit(.minutes(1))) struct ChildProcessTests {
    static let argv = ["/bin/sh", "-c", "ls -l /proc/$$/fd"]

    func output(_ path: String) -> (inout posix_spawn_file_actions_t) -> Void {
        { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
    }

    func wait(_ pid: pid_t) {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// The descriptors a `sh` child holds, as `ls -l /proc/<sh>/fd` prints them: started with plain
    /// `posix_spawn` (the control) or with `ChildProcess.spawn`.
    func childDescriptors(plain: Bool) throws -> String {
        let out = NSTemporaryDirectory() + "mesh-fds-\(UUID().uuidString)"
        defer { unlink(out) }
        if plain {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            output(out)(&actions)
            let cArgs = Self.argv.map { strdup($0) } + [nil]
            defer { cArgs.forEach { free($0) } }
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, Self.argv[0], &actions, nil, cArgs, environ)
            guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
            wait(pid)
        } else {
            wait(try ChildProcess.spawn(Self.argv, environment: ChildProcess.currentEnvironment(), streams: output(out)))
        }
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    @Test func aChildGetsItsStandardStreamsAndNothingElse() throws {
        // A socket and a pipe without FD_CLOEXEC, like a nats.c connection.
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var ends: [Int32] = [-1, -1]
        #expect(sock >= 0 && pipe(&ends) == 0)
        defer { close(sock); close(ends[0]); close(ends[1]) }
        var st = stat()
        #expect(fstat(sock, &st) == 0)
        let socketName = "socket:[\(st.st_ino)]"

        // A plain spawn hands them down (the check can fail)...
        let leaky = try childDescriptors(plain: true)
        #expect(leaky.contains(socketName), "\(leaky)")
        // ...ChildProcess.spawn leaves the child 0, 1 and 2 only.
        let clean = try childDescriptors(plain: false)
        #expect(!clean.contains(socketName), "\(clean)")
        let numbers = clean.split(separator: "\n").compactMap { line -> Int? in
            guard let arrow = line.range(of: " -> ") else { return nil }
            return Int(line[..<arrow.lowerBound].split(separator: " ").last ?? "")
        }
        #expect(Set(numbers) == [0, 1, 2], "\(clean)")
    }

    @Test func aMissingProgramIsENOENT() {
        do {
            _ = try ChildProcess.spawn(["quazzar-no-such-program"], environment: []) { _ in }
            Issue.record("a program that does not exist was started")
        } catch {
            #expect(error.errno == ENOENT)
        }
    }
}

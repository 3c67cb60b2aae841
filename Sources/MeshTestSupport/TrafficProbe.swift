import Foundation
import MeshBus

/// TCP checks between network namespaces for the access-policy tests: an echo server on some ports,
/// one connection attempt, and a long-lived connection that sends a line every 200 ms and logs
/// whether its echo came back (`ok <n>` or `fail <n>`), so a test can watch a connection survive or
/// stop across a rule change. The probe is a small Python 3 program (Debian's python3), written to
/// the test output folder.
public enum TrafficProbe {
    static let source = #"""
    import socket, sys, threading, time

    def echo(conn):
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def serve(ports):
        listeners = []
        for port in ports:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            s.listen(64)
            listeners.append(s)
        def accept(s):
            while True:
                c, _ = s.accept()
                threading.Thread(target=echo, args=(c,), daemon=True).start()
        for s in listeners:
            threading.Thread(target=accept, args=(s,), daemon=True).start()
        print("serving", flush=True)
        while True:
            time.sleep(3600)

    def connect(host, port, timeout, source):
        try:
            c = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
            c.settimeout(timeout)
            c.sendall(b"hello\n")
            ok = c.recv(16) == b"hello\n"
            c.close()
            return ok
        except OSError:
            return False

    def session(host, port, source):
        c = socket.create_connection((host, port), timeout=3, source_address=(source, 0) if source else None)
        c.settimeout(2)
        print("connected", flush=True)
        n = 0
        while True:
            n += 1
            line = ("%d\n" % n).encode()
            try:
                c.sendall(line)
                got = b""
                while not got.endswith(b"\n"):
                    part = c.recv(64)
                    if not part:
                        print("closed %d" % n, flush=True)
                        return
                    got += part
                print(("ok %d" if got == line else "fail %d") % n, flush=True)
            except OSError:
                print("fail %d" % n, flush=True)
            time.sleep(0.2)

    cmd = sys.argv[1]
    if cmd == "serve":
        serve([int(p) for p in sys.argv[2:]])
    elif cmd == "connect":
        sys.exit(0 if connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None) else 1)
    elif cmd == "session":
        session(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    """#

    /// The probe program, written once per process.
    static let path: String = {
        let url = TestEnvironment.outputDir("probe").appendingPathComponent("traffic-probe-\(getpid()).py")
        try? Data(source.utf8).write(to: url)
        return url.path
    }()

    /// Starts an echo server in `ns` on `ports` (TCP, IPv4 and IPv6) and waits until it listens.
    public static func serve(_ ns: NetNamespace, ports: [Int], logDir: URL) async throws -> ManagedProcess {
        let p = try ManagedProcess(name: "probe-serve-\(Nuid.short())", executable: TestEnvironment.which("ip"),
                                   arguments: ["netns", "exec", ns.name, "python3", path, "serve"] + ports.map(String.init),
                                   logDir: logDir)
        let deadline = ContinuousClock.now + .seconds(10)
        while !p.log().contains("serving") {
            guard p.isRunning, ContinuousClock.now < deadline else { throw TestSetupError.failed("the echo server did not start: \(p.log())") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return p
    }

    /// One TCP connection from `ns` (from address `source`, when given): true when it connects and
    /// its line comes back within `timeout` seconds.
    public static func connects(from ns: NetNamespace, to host: String, port: Int, source: String? = nil, timeout: Double = 2) -> Bool {
        (try? ns.tryExec(["python3", path, "connect", host, String(port), String(timeout)] + (source.map { [$0] } ?? [])).status) == 0
    }

    /// ``connects(from:to:port:source:timeout:)`` from async code, waited for off the cooperative pool.
    public static func connects(from ns: NetNamespace, to host: String, port: Int, source: String? = nil, timeout: Double = 2) async -> Bool {
        (try? await offPool { connects(from: ns, to: host, port: port, source: source, timeout: timeout) }) == true
    }

    /// A long-lived connection from `ns`; read its progress with ``Session/outcomes()``.
    public static func session(from ns: NetNamespace, to host: String, port: Int, source: String? = nil, logDir: URL) async throws -> Session {
        let p = try ManagedProcess(name: "probe-session-\(Nuid.short())", executable: TestEnvironment.which("ip"),
                                   arguments: ["netns", "exec", ns.name, "python3", path, "session", host, String(port)] + (source.map { [$0] } ?? []),
                                   logDir: logDir)
        let s = Session(process: p)
        let deadline = ContinuousClock.now + .seconds(10)
        while s.outcomes().ok == 0 {
            guard p.isRunning, ContinuousClock.now < deadline else { throw TestSetupError.failed("the session did not start: \(p.log())") }
            try await Task.sleep(for: .milliseconds(50))
        }
        return s
    }

    /// A long-lived connection's log.
    public struct Session: Sendable {
        public let process: ManagedProcess

        /// How many round trips came back, and how many did not (or found the connection closed),
        /// and the outcome of the latest.
        public func outcomes() -> (ok: Int, failed: Int, lastOK: Bool?) {
            var ok = 0, failed = 0
            var last: Bool?
            for line in process.log().split(separator: "\n") {
                if line.hasPrefix("ok ") { ok += 1; last = true }
                if line.hasPrefix("fail ") || line.hasPrefix("closed ") { failed += 1; last = false }
            }
            return (ok, failed, last)
        }

        /// Waits until `condition` holds for the outcomes, or the deadline passes; returns whether it held.
        public func wait(within: Duration = .seconds(20), _ condition: ((ok: Int, failed: Int, lastOK: Bool?)) -> Bool) async -> Bool {
            let deadline = ContinuousClock.now + within
            while ContinuousClock.now < deadline {
                if condition(outcomes()) { return true }
                try? await Task.sleep(for: .milliseconds(100))
            }
            return condition(outcomes())
        }
    }
}

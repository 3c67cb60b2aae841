import Foundation
import MeshBus

/// The relay path of the phone-fallback tests: a plain TCP proxy (Tests/fallback/tcp_proxy.py) that
/// a test cuts (the process stops: its listener and every open connection close) and restores (it
/// starts again on the same address).
public final class TestRelay: @unchecked Sendable {
    public let listenHost: String
    public let listenPort: Int
    public let target: (host: String, port: Int)
    let logDir: URL
    let lock = NSLock()
    var process: ManagedProcess?

    public init(listenHost: String, listenPort: Int, target: (host: String, port: Int), logDir: URL) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.target = target
        self.logDir = logDir
    }

    public var url: String { "http://\(listenHost):\(listenPort)" }

    /// Starts (or restarts) the proxy and waits until it listens.
    public func restore(timeout: Duration = .seconds(60)) async throws {
        let script = TestEnvironment.repoRoot.appendingPathComponent("Tests/fallback/tcp_proxy.py").path
        let p = try ManagedProcess(name: "relay-\(Nuid.short())", executable: TestEnvironment.which("python3"),
                                   arguments: ["-u", script, listenHost, "\(listenPort)", target.host, "\(target.port)"], logDir: logDir)
        lock.withLock { process = p }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if p.log().contains("listening") { return }
            if !p.isRunning { throw TestSetupError.failed("relay proxy exited: \(p.log())") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSetupError.failed("relay proxy did not listen: \(p.log())")
    }

    /// Stalls the path without closing it (SIGSTOP): connections are still accepted by the kernel but
    /// nothing is relayed, so requests time out. ``resume()`` undoes it.
    public func stall() {
        lock.withLock { process }?.signal(SIGSTOP)
    }

    /// Lets a stalled proxy run again (SIGCONT).
    public func resume() {
        lock.withLock { process }?.signal(SIGCONT)
    }

    /// Cuts the path: the proxy stops, its connections close.
    public func cut() async {
        let p = lock.withLock { () -> ManagedProcess? in
            defer { process = nil }
            return process
        }
        p?.signal(SIGCONT)
        await p?.kill9()
    }
}

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Finds out whether the legacy Pritunl VPN runs at a configured address, so that the web page
/// shows its migration banner without an operator having to say so.
///
/// Every `interval` it asks `GET <url>/ping`, the unauthenticated health route of Pritunl's web
/// server: 200 (healthy) or 504 (Pritunl answering while its host is behind) means Pritunl is there;
/// any other answer, or none within `timeout`, means it is not. The latest answer is kept; each
/// replica probes on its own. Pritunl's console uses a self-signed certificate unless given one, so
/// the certificate is only verified when asked (`verifyTLS`): the probe sends nothing and learns only
/// whether Pritunl answers.
public final class PritunlProbe: Service, Sendable {
    /// What the last probe found.
    public struct Finding: Sendable, Equatable {
        public var detected: Bool
        /// The HTTP status, or why there was none.
        public var detail: String
        public var checkedAt: Date
    }

    public let url: URL
    let interval: Duration
    let timeout: Duration
    let timeoutMilliseconds: Int64
    let http: HTTPClient
    let logger: Logger
    let state = Mutex<Finding?>(nil)

    /// A probe of the Pritunl web server at `url` (scheme, host and port; e.g. `https://127.0.0.1:443`).
    public init(url: URL, interval: Duration = .seconds(60), timeout: Duration = .seconds(3), verifyTLS: Bool = false, logger: Logger) {
        self.url = url
        self.interval = interval
        self.timeout = timeout
        let ms = Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let limits = HTTPClient.Configuration.Timeout(connect: .milliseconds(ms), read: .milliseconds(ms))
        let config = verifyTLS
            ? HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: limits)
            : HTTPClient.Configuration(certificateVerification: .none, redirectConfiguration: .disallow, timeout: limits)
        self.timeoutMilliseconds = ms
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        self.logger = logger
    }

    /// The last finding; nil before the first probe finished.
    public var finding: Finding? { state.withLock { $0 } }

    /// Probes once and keeps the finding.
    @discardableResult
    public func probe() async -> Finding {
        let target = url.appendingPathComponent("ping")
        let finding: Finding
        do {
            var req = HTTPClientRequest(url: target.absoluteString)
            req.headers.add(name: "User-Agent", value: "quazzar-mesh-pritunl-probe")
            let resp = try await http.execute(req, timeout: .milliseconds(timeoutMilliseconds))
            _ = try? await resp.body.collect(upTo: 64 * 1024)
            let code = Int(resp.status.code)
            finding = Finding(detected: code == 200 || code == 504, detail: "HTTP \(code)", checkedAt: Date())
        } catch {
            finding = Finding(detected: false, detail: "no answer: \(error)", checkedAt: Date())
        }
        let previous = state.withLock { s in
            let p = s
            s = finding
            return p
        }
        if previous?.detected != finding.detected {
            logger.info("Pritunl probe", metadata: ["pritunl.url": "\(url.absoluteString)", "pritunl.detected": "\(finding.detected)",
                                                    "pritunl.answer": "\(finding.detail)"])
        }
        return finding
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.probe()
                try? await Task.sleep(for: self.interval)
            }
        }
        try await http.shutdown()
    }

    /// Stops the HTTP client when the probe was used without `run()` (tests).
    public func shutdown() async throws {
        try await http.shutdown()
    }
}

/// How a connection authenticates to nats-server.
public enum BusCredentials: Sendable, Equatable {
    /// A `.creds` file (user JWT + nkey seed), as `nsc` writes it.
    case credsFile(path: String)
    /// The same content held in memory: the user JWT and the nkey seed (`SU...`).
    case jwt(jwt: String, seed: String)
    /// A shared token.
    case token(String)
    /// User and password.
    case userPassword(user: String, password: String)

    /// Parses the text of a `.creds` file into `.jwt`.
    public static func parseCreds(_ text: String) throws -> BusCredentials {
        func block(_ name: String) -> String? {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters() }
            guard let begin = lines.firstIndex(where: { $0.hasPrefix("-----BEGIN") && $0.contains(name) }) else { return nil }
            guard let value = lines[(begin + 1)...].first(where: { !$0.isEmpty }), !value.hasPrefix("---") else { return nil }
            return value
        }
        guard let jwt = block("NATS USER JWT") else { throw BusError.invalidCredentials("no NATS USER JWT block") }
        guard let seed = block("USER NKEY SEED") else { throw BusError.invalidCredentials("no USER NKEY SEED block") }
        return .jwt(jwt: jwt, seed: seed)
    }
}

/// TLS for the client connection. Paths point at PEM files.
public struct BusTLS: Sendable, Equatable {
    /// CA bundle that signed the server certificate.
    public var caFile: String?
    /// Client certificate and key, when the server asks for one.
    public var certFile: String?
    public var keyFile: String?
    /// Host name to verify in the server certificate (defaults to the URL's host).
    public var expectedHostname: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, expectedHostname: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.expectedHostname = expectedHostname
    }
}

/// Connection settings. The defaults favour a control plane: reconnect forever with backoff,
/// buffer publishes during an outage, and send every message at once (no flusher delay).
public struct BusConfiguration: Sendable {
    /// Server URLs, e.g. `nats://127.0.0.1:4222`. Several servers form a failover list.
    public var servers: [String]
    /// The connection name shown by the server's monitoring.
    public var name: String
    /// Prefix of reply inboxes. Nodes use a prefix scoped to their id so the server can restrict
    /// which replies they may receive.
    public var inboxPrefix: String
    public var credentials: BusCredentials?
    public var tls: BusTLS?
    /// Time allowed to establish one TCP/TLS connection.
    public var connectTimeout: Duration
    /// First reconnect delay; it doubles per attempt up to `reconnectWaitMax`, with ±20% jitter.
    public var reconnectWaitMin: Duration
    public var reconnectWaitMax: Duration
    /// Bytes of publishes kept while disconnected and sent after reconnecting.
    public var reconnectBufferBytes: Int
    public var pingInterval: Duration
    public var maxPingsOut: Int
    /// Keep trying in the background when the first connect fails, instead of failing.
    public var retryOnFailedConnect: Bool
    /// Write every publish immediately. Without it nats.c waits for its flusher (about 1 ms per request).
    public var sendAsap: Bool
    /// Messages buffered per subscription before the oldest are dropped (and counted).
    public var subscriptionBufferLimit: Int

    public init(
        servers: [String],
        name: String,
        inboxPrefix: String = "_INBOX",
        credentials: BusCredentials? = nil,
        tls: BusTLS? = nil,
        connectTimeout: Duration = .seconds(2),
        reconnectWaitMin: Duration = .milliseconds(50),
        reconnectWaitMax: Duration = .seconds(2),
        reconnectBufferBytes: Int = 16 << 20,
        pingInterval: Duration = .seconds(5),
        maxPingsOut: Int = 3,
        retryOnFailedConnect: Bool = true,
        sendAsap: Bool = true,
        subscriptionBufferLimit: Int = 100_000
    ) {
        self.servers = servers
        self.name = name
        self.inboxPrefix = inboxPrefix
        self.credentials = credentials
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.reconnectWaitMin = reconnectWaitMin
        self.reconnectWaitMax = reconnectWaitMax
        self.reconnectBufferBytes = reconnectBufferBytes
        self.pingInterval = pingInterval
        self.maxPingsOut = maxPingsOut
        self.retryOnFailedConnect = retryOnFailedConnect
        self.sendAsap = sendAsap
        self.subscriptionBufferLimit = subscriptionBufferLimit
    }
}

/// Connection state changes, for code that must react to outages (e.g. resync after reconnect).
public enum BusEvent: Sendable, Equatable {
    case connected
    case disconnected
    case reconnected
    case closed
}

extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}

extension Duration {
    /// Whole milliseconds, rounded up so a tiny positive duration never becomes "no timeout".
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
    }

    var timeInterval: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

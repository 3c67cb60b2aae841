import Foundation

/// The Gateway's own settings (the bus settings come from `CommonOptions`). Every field has the
/// default documented in docs/api.md, "Configuration".
public struct GatewayConfiguration: Sendable {
    /// Where the HTTP API listens.
    public var host: String
    public var port: Int
    /// The mesh node this gateway runs beside: `GET /api/mesh/state` and `GET /api/mesh/peers`
    /// read it when no `node_id` is given. Empty when the gateway has no node of its own.
    public var nodeID: String
    /// Whether the legacy Pritunl VPN is still configured here; the web page shows its migration
    /// banner when it is (`GET /api/mesh/ui-config`).
    public var pritunlConfigured: Bool
    /// The largest request body accepted; larger ones get 413.
    public var maxBodyBytes: Int
    /// Deadline for calls to ProvisionSvc and FanoutSvc.
    public var serviceTimeout: Duration
    /// Deadline for calls to a node's NodeApplier (state, peers, refresh).
    public var nodeTimeout: Duration
    /// Deadline for the whole of `POST /api/mesh/refresh` (every node at once).
    public var refreshTimeout: Duration
    /// The live channel (`GET /api/mesh/events`): how often each open stream gets a heartbeat and
    /// checks whether a device left its online window, and how long a stream lasts before the page
    /// reconnects (the caller's credential is checked again then).
    public var liveTick: Duration
    public var liveMaxDuration: Duration
    /// HTTPS: the certificate chain and private key (PEM files). Both nil serves plain HTTP.
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    /// The documented defaults, overridable one by one.
    public init(host: String = "127.0.0.1", port: Int = 8080, nodeID: String = "", pritunlConfigured: Bool = false,
                maxBodyBytes: Int = 16 * 1024, serviceTimeout: Duration = .seconds(10), nodeTimeout: Duration = .seconds(5),
                refreshTimeout: Duration = .seconds(10), liveTick: Duration = .seconds(15), liveMaxDuration: Duration = .seconds(300),
                tlsCertificateFile: String? = nil, tlsKeyFile: String? = nil) {
        self.tlsCertificateFile = tlsCertificateFile
        self.tlsKeyFile = tlsKeyFile
        self.host = host
        self.port = port
        self.nodeID = nodeID
        self.pritunlConfigured = pritunlConfigured
        self.maxBodyBytes = maxBodyBytes
        self.serviceTimeout = serviceTimeout
        self.nodeTimeout = nodeTimeout
        self.refreshTimeout = refreshTimeout
        self.liveTick = liveTick
        self.liveMaxDuration = liveMaxDuration
    }

    /// Splits `host:port` (IPv6 as `[addr]:port`); nil when it is not of that form.
    public static func parseAddress(_ address: String) -> (host: String, port: Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}

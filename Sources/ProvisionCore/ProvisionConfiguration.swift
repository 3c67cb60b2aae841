import Foundation
import MeshCore

/// ProvisionSvc's settings.
public struct ProvisionConfiguration: Sendable {
    /// The mesh DNS zone: devices are `<slug>.<domain>`.
    public var meshDomain: String
    /// Device creations allowed per user per window (exact across replicas: the window lives in
    /// PostgreSQL). 0 disables the limit.
    public var rateLimit: Int
    public var rateWindow: Duration
    /// Users the rate limit does not apply to (benchmarks, automation).
    public var rateLimitExempt: Set<UUID>
    /// MTU written into device configs.
    public var deviceMTU: Int
    /// PersistentKeepalive in device configs (NAT traversal).
    public var persistentKeepalive: Int
    /// A handshake within this window means "online" (WireGuard rekeys every 2 minutes).
    public var onlineWindow: Duration
    /// How many nodes' addresses go into a device config's `DNS =` line.
    public var dnsResolvers: Int
    /// Deadline for calls to AllocatorSvc.
    public var allocatorTimeout: Duration

    public init(meshDomain: String = "quazzar.mesh", rateLimit: Int = 5, rateWindow: Duration = .seconds(60),
                rateLimitExempt: Set<UUID> = [], deviceMTU: Int = 1280, persistentKeepalive: Int = 25,
                onlineWindow: Duration = .seconds(180), dnsResolvers: Int = 2, allocatorTimeout: Duration = .seconds(5)) {
        self.meshDomain = meshDomain
        self.rateLimit = rateLimit
        self.rateWindow = rateWindow
        self.rateLimitExempt = rateLimitExempt
        self.deviceMTU = deviceMTU
        self.persistentKeepalive = persistentKeepalive
        self.onlineWindow = onlineWindow
        self.dnsResolvers = dnsResolvers
        self.allocatorTimeout = allocatorTimeout
    }
}

extension Duration {
    /// Whole seconds as a Double (for SQL intervals).
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

import Foundation
import MeshDomain

/// ProvisionSvc's settings. What a tenant's mesh looks like (domain, keepalives, MTU, how many nodes
/// a config lists) is per tenant, in the database; these are the service's own.
public struct ProvisionConfiguration: Sendable {
    /// Device creations (and config re-issues) allowed per user per window (exact across replicas:
    /// the window lives in PostgreSQL). A limit of 0 disables it.
    public var rateLimit: RateLimit
    /// Users the rate limit does not apply to (benchmarks, automation).
    public var rateLimitExempt: Set<UUID>
    /// A handshake within this window means "online" (WireGuard rekeys every 2 minutes).
    public var onlineWindow: Duration
    /// Deadline for calls to AllocatorSvc.
    public var allocatorTimeout: Duration
    /// How long an allocation may wait for its owner's row before the lease keeper gives the
    /// addresses back. Far longer than any transaction runs.
    public var leaseHold: Duration
    /// How often every replica looks for changes no replica handed to FanoutSvc yet, and for due
    /// lease tasks.
    public var sweepInterval: Duration

    public init(rateLimit: RateLimit = .seed, rateLimitExempt: Set<UUID> = [], onlineWindow: Duration = .seconds(180),
                allocatorTimeout: Duration = .seconds(5), leaseHold: Duration = .seconds(120), sweepInterval: Duration = .seconds(1)) {
        self.rateLimit = rateLimit
        self.rateLimitExempt = rateLimitExempt
        self.onlineWindow = onlineWindow
        self.allocatorTimeout = allocatorTimeout
        self.leaseHold = leaseHold
        self.sweepInterval = sweepInterval
    }

    /// The limit that applies to `user`, or nil when none does.
    public func rateLimit(for user: UUID) -> RateLimit? {
        rateLimit.isEnabled && !rateLimitExempt.contains(user) ? rateLimit : nil
    }

    var leaseHoldSeconds: TimeInterval { leaseHold.seconds }
}


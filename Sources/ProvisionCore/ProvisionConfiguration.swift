import Crypto
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
    /// How often every replica looks for devices whose expiry has passed (a device is suspended at
    /// most this long, plus one transaction, after its expiry; the seed's bound is 60 s).
    public var expirySweepInterval: Duration
    /// Deadline for one node's live state (the admins' node list).
    public var nodeStateTimeout: Duration
    /// How long the live node list may spend asking nodes in all.
    public var liveNodeListBudget: Duration
    /// Seals the tenant CAs' private keys at rest (AES-256-GCM) when set (env MESH_CA_SEALING_KEY).
    public var caSealingKey: SymmetricKey?
    /// Lifetimes of one-time config links (the default and the bounds a request may ask within).
    public var configLinks: ConfigLinkPolicy = .standard

    public init(rateLimit: RateLimit = .seed, rateLimitExempt: Set<UUID> = [], onlineWindow: Duration = .seconds(180),
                allocatorTimeout: Duration = .seconds(5), leaseHold: Duration = .seconds(120), sweepInterval: Duration = .seconds(1),
                expirySweepInterval: Duration = .seconds(5), nodeStateTimeout: Duration = .seconds(2), liveNodeListBudget: Duration = .seconds(5)) {
        self.expirySweepInterval = expirySweepInterval
        self.nodeStateTimeout = nodeStateTimeout
        self.liveNodeListBudget = liveNodeListBudget
        self.rateLimit = rateLimit
        self.rateLimitExempt = rateLimitExempt
        self.onlineWindow = onlineWindow
        self.allocatorTimeout = allocatorTimeout
        self.leaseHold = leaseHold
        self.sweepInterval = sweepInterval
        caSealingKey = nil
    }

    /// The limit that applies to `user`, or nil when none does.
    public func rateLimit(for user: UUID) -> RateLimit? {
        rateLimit.isEnabled && !rateLimitExempt.contains(user) ? rateLimit : nil
    }

    var leaseHoldSeconds: TimeInterval { leaseHold.seconds }
}


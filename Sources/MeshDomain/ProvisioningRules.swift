import Foundation
import MeshProto

/// What the rules of a device creation look at, read by storage in one consistent step with the
/// tenant (and the user, for the rate limit) locked.
public struct DeviceCreationState: Sendable {
    public var plan: Mesh_V1_Plan
    public var settings: Mesh_V1_TenantSettings
    /// Devices the tenant has now.
    public var devicesUsed: Int
    /// The caller's creations inside the rate-limit window, and the oldest of them.
    public var recentCreations: Int
    public var oldestRecentCreation: Date?
    /// The tenant's names that could collide with the new device's slug.
    public var takenNames: Set<String>
    /// The tenant's nodes, oldest first.
    public var nodesByAge: [Mesh_V1_Member]
    /// How many nodes a config lists.
    public var configMaxNodes: Int
    public var now: Date
    /// The tenant's default device lifetime in seconds (0: off).
    public var defaultLifetimeSeconds: Int

    public init(plan: Mesh_V1_Plan, settings: Mesh_V1_TenantSettings, devicesUsed: Int, recentCreations: Int, oldestRecentCreation: Date?,
                takenNames: Set<String>, nodesByAge: [Mesh_V1_Member], configMaxNodes: Int, now: Date, defaultLifetimeSeconds: Int = 0) {
        self.defaultLifetimeSeconds = defaultLifetimeSeconds
        self.plan = plan
        self.settings = settings
        self.devicesUsed = devicesUsed
        self.recentCreations = recentCreations
        self.oldestRecentCreation = oldestRecentCreation
        self.takenNames = takenNames
        self.nodesByAge = nodesByAge
        self.configMaxNodes = configMaxNodes
        self.now = now
    }
}

/// What the rules decided for a new device (or a re-issued config).
public struct DeviceCreationDecision: Sendable, Equatable {
    public var slug: String
    /// The config's peers, hub first.
    public var config: [PeerCatalog.ConfigPeer]
    public var hubID: String { config.first?.node.id ?? "" }
    /// When the new device expires (nil: never).
    public var expiresAt: Date? = nil
    /// A re-issued device's lifecycle after the re-issue (nil: unchanged).
    public var lifecycle: DeviceLifecycle? = nil
}

/// The rules of provisioning devices, as pure functions: every replica and every storage backend
/// applies exactly these.
public enum DeviceRules {
    /// Checks a creation and picks its slug, config and expiry: the mesh must be on, the tenant must
    /// have a node to connect to, the plan's cap must have room, the caller must be under the rate
    /// limit (nil `rateLimit`: the caller is exempt), and an expiry asked for must be valid
    /// (``DeviceLifecycle/initialExpiry(requested:defaultLifetime:callerIsAdmin:now:)``).
    public static func decideCreation(_ s: DeviceCreationState, slugBase: String, rateLimit: RateLimit?, requestedExpiry: Date? = nil,
                                      callerIsAdmin: Bool = false) throws(MeshError) -> DeviceCreationDecision {
        guard let policy = s.plan.policy else { throw .internal("tenant has an unknown plan") }
        try checkMeshOn(s.settings)
        let expiresAt = try DeviceLifecycle.initialExpiry(requested: requestedExpiry, defaultLifetime: TimeInterval(s.defaultLifetimeSeconds),
                                                          callerIsAdmin: callerIsAdmin, now: s.now)
        try policy.checkCap(used: s.devicesUsed)
        if let rateLimit { try rateLimit.check(recent: s.recentCreations, oldest: s.oldestRecentCreation, now: s.now) }
        let config = try configFor(s)
        return DeviceCreationDecision(slug: Slug.firstFree(slugBase, taken: s.takenNames), config: config, expiresAt: expiresAt)
    }

    /// A re-issued config: the same checks as a creation except the cap (the device already holds its
    /// slot) and the slug (it keeps its name). With the device's `lifecycle`, a tenant default
    /// lifetime renews it (``DeviceLifecycle/renewedByReissue(defaultLifetime:at:)``).
    public static func decideReissue(_ s: DeviceCreationState, slug: String, rateLimit: RateLimit?,
                                     lifecycle: DeviceLifecycle? = nil) throws(MeshError) -> DeviceCreationDecision {
        try checkMeshOn(s.settings)
        if let rateLimit { try rateLimit.check(recent: s.recentCreations, oldest: s.oldestRecentCreation, now: s.now) }
        var decision = DeviceCreationDecision(slug: slug, config: try configFor(s))
        decision.lifecycle = lifecycle?.renewedByReissue(defaultLifetime: TimeInterval(s.defaultLifetimeSeconds), at: s.now)
        return decision
    }

    static func checkMeshOn(_ settings: Mesh_V1_TenantSettings) throws(MeshError) {
        guard settings.meshEnabled else {
            throw .failedPrecondition("the mesh is turned off for this tenant; an admin can turn it on again")
        }
    }

    static func configFor(_ s: DeviceCreationState) throws(MeshError) -> [PeerCatalog.ConfigPeer] {
        let config = PeerCatalog.deviceConfig(nodesByAge: s.nodesByAge, settings: s.settings, maxNodes: s.configMaxNodes)
        guard !config.isEmpty else {
            throw .failedPrecondition("this tenant has no node yet: enroll a node first (meshctl node enroll), then add devices")
        }
        return config
    }

    /// The hub a tenant should have: the current one while it exists, else the oldest node.
    public static func hub(current: String, nodesByAge: [String]) -> String {
        if !current.isEmpty, nodesByAge.contains(current) { return current }
        return nodesByAge.first ?? ""
    }
}

import Foundation
import MeshDomain
import MeshNet
import MeshProto

/// A tenant as ProvisionSvc keeps it: its plan, its prefixes and its settings.
public struct TenantRecord: Sendable, Equatable {
    public var id: UUID
    public var name: String
    public var plan: Mesh_V1_Plan
    public var requireSAML: Bool
    public var ipv4Prefix: String
    public var ipv6Prefix: String
    public var domain: String
    public var nodeKeepalive: Int
    public var deviceKeepalive: Int
    public var deviceMTU: Int
    public var configMaxNodes: Int
    public var dnsResolvers: Int
    /// Empty while the tenant has no node.
    public var hubNodeID: String
    public var meshEnabled: Bool
    /// A new device's default lifetime in seconds (0: off); the tenant's admins set it.
    public var deviceLifetimeSeconds: Int = 0
    /// The mesh DNS answers a device only with the names it may reach (access policies).
    public var dnsFiltered: Bool
    /// The version of the access policy (0 before the first rule).
    public var policyVersion: UInt64
    /// The last change revision written.
    public var revision: UInt64
    public var createdAt: Date

    /// A new tenant with the default settings.
    public init(id: UUID, name: String, plan: Mesh_V1_Plan, requireSAML: Bool, ipv4Prefix: String, ipv6Prefix: String,
                createdAt: Date = Date()) {
        self.id = id
        self.name = name
        self.plan = plan
        self.requireSAML = requireSAML
        self.ipv4Prefix = ipv4Prefix
        self.ipv6Prefix = ipv6Prefix
        domain = TenantDefaults.domain
        nodeKeepalive = TenantDefaults.nodeKeepalive
        deviceKeepalive = TenantDefaults.deviceKeepalive
        deviceMTU = TenantDefaults.deviceMTU
        configMaxNodes = TenantDefaults.configMaxNodes
        dnsResolvers = TenantDefaults.dnsResolvers
        hubNodeID = ""
        meshEnabled = true
        dnsFiltered = false
        policyVersion = 0
        revision = 0
        self.createdAt = createdAt
    }

    /// What every node of the tenant is told.
    public var settings: Mesh_V1_TenantSettings {
        var s = Mesh_V1_TenantSettings()
        s.domain = domain
        s.nodeKeepalive = UInt32(nodeKeepalive)
        s.hubNodeID = hubNodeID
        s.ipv4Prefix = ipv4Prefix
        s.ipv6Prefix = ipv6Prefix
        s.meshEnabled = meshEnabled
        s.dnsFiltered = dnsFiltered
        return s
    }

    /// The protobuf form.
    public var proto: Mesh_V1_Tenant {
        var t = Mesh_V1_Tenant()
        t.id = id.lowercased
        t.name = name
        t.plan = plan
        t.requireSaml = requireSAML
        t.revision = revision
        t.ipv4Prefix = ipv4Prefix
        t.ipv6Prefix = ipv6Prefix
        t.createdAtMs = createdAt.unixMilliseconds
        t.domain = domain
        t.nodeKeepalive = UInt32(nodeKeepalive)
        t.deviceKeepalive = UInt32(deviceKeepalive)
        t.deviceMtu = UInt32(deviceMTU)
        t.configMaxNodes = UInt32(configMaxNodes)
        t.dnsResolvers = UInt32(dnsResolvers)
        t.hubNodeID = hubNodeID
        t.meshEnabled = meshEnabled
        t.deviceLifetimeSeconds = UInt32(clamping: deviceLifetimeSeconds)
        t.dnsFiltered = dnsFiltered
        t.policyVersion = policyVersion
        return t
    }

    /// The settings its admins change.
    public var adminSettings: Mesh_V1_TenantAdminSettings {
        var s = Mesh_V1_TenantAdminSettings()
        s.meshEnabled = meshEnabled
        s.deviceLifetimeSeconds = UInt32(clamping: deviceLifetimeSeconds)
        return s
    }
}

/// The verified identity of a user caller: the user exists in the tenant, with the role stored here
/// (a token's claim is only a hint), and the tenant's plan and SAML gate.
public struct CallerIdentity: Sendable, Equatable {
    public var tenant: UUID
    public var user: UUID
    public var role: Mesh_V1_Role
    public var plan: Mesh_V1_Plan
    public var requireSAML: Bool
    /// Authentication methods of the caller's session (from the gateway).
    public var amr: [String]
    public var isAdmin: Bool { role == .admin }
    /// "user:<id>" in the audit log.
    public var actor: String { "user:\(user.lowercased)" }

    public init(tenant: UUID, user: UUID, role: Mesh_V1_Role, plan: Mesh_V1_Plan, requireSAML: Bool, amr: [String] = []) {
        self.tenant = tenant
        self.user = user
        self.role = role
        self.plan = plan
        self.requireSAML = requireSAML
        self.amr = amr
    }

    /// The caller may manage a device owned by `owner`: its owner, or an admin of the tenant.
    public func mayManage(deviceOwnedBy owner: UUID) -> Bool { isAdmin || owner == user }
}

/// A device as ProvisionSvc keeps it.
public struct DeviceRecord: Sendable, Equatable {
    public var id: UUID
    public var tenant: UUID
    public var owner: UUID
    public var label: String
    public var slug: String
    public var type: Mesh_V1_DeviceType
    public var ipv4: String
    public var ipv6: String
    public var publicKey: String
    public var createdAt: Date
    public var lastHandshake: Date?
    public var rxBytes: Int64
    public var txBytes: Int64
    public var endpoint: String?
    /// What the device's config lists, and why it is outdated (nil: current).
    public var configHubID: String
    /// The ids of the nodes it lists, in the config's order.
    public var configNodeIDs: [String]
    public var configOutdated: String?
    /// Admin-assigned tags (sorted) and the owner's role, for access policies.
    public var tags: [String] = []
    public var ownerRole: Mesh_V1_Role = .unspecified
    /// Suspension and expiry.
    public var lifecycle = DeviceLifecycle()
    /// The owner's display name (read with the device for listings; empty otherwise).
    public var ownerName = ""

    /// The member every node of the tenant is told about: inactive while the device is suspended
    /// (`active` overrides that).
    public func member(active: Bool? = nil) -> Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = id.lowercased
        m.kind = .device
        m.publicKey = publicKey
        m.ipv4 = ipv4
        m.ipv6 = ipv6
        m.slug = slug
        m.active = active ?? lifecycle.isActive
        m.configHubID = configHubID
        m.configNodeIds = configNodeIDs
        m.ownerUserID = owner.lowercased
        m.deviceType = type
        m.displayName = label
        m.tags = tags
        m.ownerRole = ownerRole
        return m
    }

    /// The protobuf form; `online` says whether the last handshake lies within the online window.
    /// A listing (`DEVICE_VIEW_LISTING`) leaves out the tenant, the public key, the config hub and
    /// the listed nodes.
    public func proto(domain: String, onlineWindow: Duration, now: Date = Date(), listing: Bool = false) -> Mesh_V1_Device {
        var d = Mesh_V1_Device()
        d.id = id.lowercased
        if !listing {
            d.tenantID = tenant.lowercased
            d.publicKey = publicKey
            d.configHubID = configHubID
            d.configNodeIds = configNodeIDs
        }
        d.ownerUserID = owner.lowercased
        d.label = label
        d.slug = slug
        d.dnsName = MeshName.dnsName(slug: slug, domain: domain)
        d.type = type
        d.ipv4 = ipv4
        d.ipv6 = ipv6
        d.createdAtMs = createdAt.unixMilliseconds
        d.lastHandshakeAtMs = lastHandshake?.unixMilliseconds ?? 0
        let window = Double(onlineWindow.components.seconds)
        d.online = lastHandshake.map { now.timeIntervalSince($0) < window } ?? false
        if d.online, let h = lastHandshake { d.onlineUntilMs = h.addingTimeInterval(window).unixMilliseconds }
        d.rxBytes = UInt64(max(0, rxBytes))
        d.txBytes = UInt64(max(0, txBytes))
        d.endpoint = endpoint ?? ""
        d.configOutdated = configOutdated != nil
        d.configOutdatedReason = configOutdated ?? ""
        d.status = lifecycle.status
        d.suspendReason = lifecycle.suspendReason
        d.suspendedAtMs = lifecycle.suspendedAt?.unixMilliseconds ?? 0
        d.expiresAtMs = lifecycle.expiresAt?.unixMilliseconds ?? 0
        d.ownerName = ownerName
        d.perPeerStats = true
        d.tags = tags
        return d
    }
}

/// A node as ProvisionSvc keeps it.
public struct NodeRecord: Sendable, Equatable {
    public var id: UUID
    public var tenant: UUID
    public var name: String
    public var slug: String
    public var publicKey: String
    public var endpoint: String
    public var listenPort: Int
    public var ipv4: String
    public var ipv6: String
    public var createdAt: Date
    public var lastSeen: Date?
    /// Admin-assigned tags (sorted), for access policies.
    public var tags: [String] = []

    /// The member every node of the tenant is told about.
    public var member: Mesh_V1_Member {
        var m = Mesh_V1_Member()
        m.id = id.lowercased
        m.kind = .node
        m.publicKey = publicKey
        m.ipv4 = ipv4
        m.ipv6 = ipv6
        m.slug = slug
        m.endpoint = endpoint
        m.listenPort = UInt32(listenPort)
        m.active = true
        m.displayName = name
        m.tags = tags
        return m
    }

    /// How a device config records this node.
    public var listed: PeerCatalog.ListedNode {
        PeerCatalog.ListedNode(id: id.lowercased, name: name, endpoint: endpoint, publicKey: publicKey)
    }

    /// The protobuf form.
    public func proto(domain: String, hubID: String) -> Mesh_V1_Node {
        var n = Mesh_V1_Node()
        n.id = id.lowercased
        n.tenantID = tenant.lowercased
        n.name = name
        n.slug = slug
        n.dnsName = MeshName.dnsName(slug: slug, domain: domain)
        n.publicKey = publicKey
        n.endpoint = endpoint
        n.listenPort = UInt32(listenPort)
        n.ipv4 = ipv4
        n.ipv6 = ipv6
        n.createdAtMs = createdAt.unixMilliseconds
        n.lastSeenAtMs = lastSeen?.unixMilliseconds ?? 0
        n.hub = id.lowercased == hubID
        n.tags = tags
        return n
    }
}

/// One audit log entry to write.
public struct AuditEvent: Sendable, Equatable {
    public var tenant: UUID
    public var actor: String
    public var action: String
    public var target: String
    public var requestID: String
    public var detail: String

    public init(tenant: UUID, actor: String, action: String, target: String, requestID: String, detail: String) {
        self.tenant = tenant
        self.actor = actor
        self.action = action
        self.target = target
        self.requestID = requestID
        self.detail = detail
    }
}

/// How a user caller proved who they are, as the gateway verified it; ProvisionSvc checks it again
/// on every request.
public enum CallerCredential: Sendable, Equatable {
    /// A signed bearer JWT (meshctl token, a login link): valid until it expires.
    case bearer
    /// A browser session opened by a sign-in.
    case session(UUID)
    /// A personal API token.
    case apiToken(UUID)

    /// The credential a caller names; `unauthenticated` for an id that is not a UUID.
    public init(_ c: Mesh_V1_Caller) throws(MeshError) {
        if !c.sessionID.isEmpty {
            guard let id = UUID(text: c.sessionID) else { throw .unauthenticated("your session has ended: sign in again") }
            self = .session(id)
        } else if !c.apiTokenID.isEmpty {
            guard let id = UUID(text: c.apiTokenID) else { throw .unauthenticated("unknown API token") }
            self = .apiToken(id)
        } else {
            self = .bearer
        }
    }
}

/// What storage holds about a caller: the user (nil when the tenant has no such user), its status,
/// the credential's state and, for a session, how it was authenticated; with the storage's clock.
public struct CallerLookup: Sendable {
    public var identity: CallerIdentity?
    public var status: Mesh_V1_UserStatus
    public var credential: CredentialRules.Stored
    /// The session's amr, provider and absolute end.
    public var sessionAMR: [String]
    public var sessionProvider: String
    public var sessionExpires: Date?
    public var now: Date

    public init(identity: CallerIdentity?, status: Mesh_V1_UserStatus, credential: CredentialRules.Stored, sessionAMR: [String] = [],
                sessionProvider: String = "", sessionExpires: Date? = nil, now: Date) {
        self.identity = identity
        self.status = status
        self.credential = credential
        self.sessionAMR = sessionAMR
        self.sessionProvider = sessionProvider
        self.sessionExpires = sessionExpires
        self.now = now
    }
}

/// A personal API token as stored: its SHA-256, never the token.
public struct APITokenRecord: Sendable, Equatable {
    public var id: UUID
    public var user: UUID
    public var tenant: UUID
    public var name: String
    public var prefix: String
    public var hash: [UInt8]
    public var created: Date
    public var expires: Date
    public var lastUsed: Date?
    public var revoked: Date?

    public init(id: UUID, user: UUID, tenant: UUID, name: String, prefix: String, hash: [UInt8], created: Date, expires: Date,
                lastUsed: Date? = nil, revoked: Date? = nil) {
        self.id = id
        self.user = user
        self.tenant = tenant
        self.name = name
        self.prefix = prefix
        self.hash = hash
        self.created = created
        self.expires = expires
        self.lastUsed = lastUsed
        self.revoked = revoked
    }

    /// The listed form.
    public var proto: Mesh_V1_ApiToken {
        var t = Mesh_V1_ApiToken()
        t.id = id.lowercased
        t.userID = user.lowercased
        t.name = name
        t.prefix = prefix
        t.createdAtMs = created.unixMilliseconds
        t.expiresAtMs = expires.unixMilliseconds
        t.lastUsedAtMs = lastUsed?.unixMilliseconds ?? 0
        return t
    }
}

/// A sign-in as storage writes it: the facts, the session to open, and the audit trail.
public struct SignInDraft: Sendable {
    public var facts: SignInBinding.Facts
    public var provider: String
    public var amr: [String]
    public var acr: String
    public var sessionID: UUID
    public var ttl: Duration
    public var requestID: String

    public init(facts: SignInBinding.Facts, provider: String, amr: [String], acr: String, sessionID: UUID, ttl: Duration, requestID: String) {
        self.facts = facts
        self.provider = provider
        self.amr = amr
        self.acr = acr
        self.sessionID = sessionID
        self.ttl = ttl
        self.requestID = requestID
    }
}

/// What a user's removal did.
public struct UserRemoval: Sendable {
    public var removed: Mesh_V1_User
    /// The devices deleted (their addresses are released after the commit).
    public var deleted: [DeviceRecord]
    public var reassigned: Int
    public var revision: UInt64?
}


extension Mesh_V1_User {
    /// The user as the administration rules see it.
    public var member: UserAdminRules.Member? {
        guard let id = UUID(text: id) else { return nil }
        return UserAdminRules.Member(id: id, role: role, status: status)
    }
}

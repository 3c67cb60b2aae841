import Foundation
import Logging
import MeshDomain
import MeshNet
import MeshProto

/// A one-time config link as stored (never its token).
public struct ConfigLinkRecord: Sendable, Equatable {
    public var id: UUID
    public var tenant: UUID
    /// The user the device will belong to.
    public var user: UUID
    public var label: String
    public var type: Mesh_V1_DeviceType
    /// "user:<id>" of the maker.
    public var createdBy: String
    public var createdAt: Date
    public var expiresAt: Date
    public var usedAt: Date?
    public var device: UUID?

    public init(id: UUID, tenant: UUID, user: UUID, label: String, type: Mesh_V1_DeviceType, createdBy: String, createdAt: Date,
                expiresAt: Date, usedAt: Date? = nil, device: UUID? = nil) {
        self.id = id
        self.tenant = tenant
        self.user = user
        self.label = label
        self.type = type
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
        self.device = device
    }

    public var proto: Mesh_V1_ConfigLink {
        var l = Mesh_V1_ConfigLink()
        l.id = id.lowercased
        l.tenantID = tenant.lowercased
        l.userID = user.lowercased
        l.label = label
        l.type = type
        l.createdBy = createdBy
        l.createdAtMs = createdAt.unixMilliseconds
        l.expiresAtMs = expiresAt.unixMilliseconds
        l.usedAtMs = usedAt?.unixMilliseconds ?? 0
        l.deviceID = device?.lowercased ?? ""
        return l
    }
}

/// A user's "Pritunl access revoked" item of the walk-through.
public struct MigrationCheck: Sendable, Equatable {
    public var user: UUID
    public var pritunlRevoked: Bool
    public var checkedAt: Date
    public var checkedBy: String

    public init(user: UUID, pritunlRevoked: Bool, checkedAt: Date, checkedBy: String) {
        self.user = user
        self.pritunlRevoked = pritunlRevoked
        self.checkedAt = checkedAt
        self.checkedBy = checkedBy
    }
}

/// What opening a link found.
public enum ConfigLinkClaim: Sendable, Equatable {
    /// No link has this token.
    case unknown
    /// The link exists but was used or expired (the refusal is audited).
    case refused(ConfigLinkRecord, ConfigLinkPolicy.Refusal)
    /// The link is now marked used, by this request only.
    case claimed(ConfigLinkRecord)
}

/// The walk-through's checklist and the config links (MigrationService).
public protocol MigrationRepository: Sendable {
    /// The checklist items set in a tenant.
    func migrationChecks(tenant: UUID) async throws(MeshError) -> [MigrationCheck]
    /// The tenant's links that are neither used nor expired, at the storage's clock.
    func pendingConfigLinks(tenant: UUID) async throws(MeshError) -> [ConfigLinkRecord]
    /// Sets a user's item and audits it; `notFound` when the tenant has no such user.
    func setMigrationCheck(tenant: UUID, user: UUID, revoked: Bool, actor: String, requestID: String) async throws(MeshError) -> MigrationCheck
    /// Stores a link (expiring `ttl` after the storage's now) and audits it; `notFound` when the
    /// tenant has no such active user.
    func insertConfigLink(_ link: ConfigLinkRecord, hash: [UInt8], ttl: Duration, requestID: String) async throws(MeshError) -> ConfigLinkRecord
    /// With the link locked: `decide` sees when it was used, when it expires and the storage's now;
    /// a link it accepts is marked used. The opening or the refusal is audited.
    func claimConfigLink(hash: [UInt8], requestID: String,
                         decide: @escaping @Sendable (Date?, Date, Date) -> ConfigLinkPolicy.Refusal?) async throws(MeshError) -> ConfigLinkClaim
    /// Records the device a claimed link made, or (`device` nil) that making it failed: the link
    /// may then be opened again until it expires. Audited.
    func finishConfigLink(_ id: UUID, tenant: UUID, device: UUID?, failure: String, requestID: String) async throws(MeshError)
}

/// The walk-through from the legacy Pritunl VPN to the mesh and one-time config links.
///
/// Admins see every user of the tenant with their devices and a checklist item "Pritunl access
/// revoked" that is kept here, so the walk-through can be left and taken up again. A config link
/// names a device to make for a user; whoever opens it gets the device's config and QR code once.
/// The device's key is made when the link is opened, so a link nobody opened leaks nothing.
public struct MigrationService: Sendable {
    let migration: any MigrationRepository
    let users: UserService
    let devices: DeviceService
    let configuration: ProvisionConfiguration
    let logger: Logger

    public init(migration: any MigrationRepository, users: UserService, devices: DeviceService, configuration: ProvisionConfiguration, logger: Logger) {
        self.migration = migration
        self.users = users
        self.devices = devices
        self.configuration = configuration
        self.logger = logger
    }

    /// Every user of the caller's tenant with their devices, checklist item and pending links (admins).
    public func status(_ req: Mesh_V1_MigrationStatusRequest) async throws(MeshError) -> Mesh_V1_MigrationStatusResponse {
        let who = try await admin(req.caller)
        var resp = Mesh_V1_MigrationStatusResponse()
        resp.users = try await view(tenant: who.tenant, caller: req.caller)
        return resp
    }

    /// Sets a user's "Pritunl access revoked" item (admins); audited.
    public func setCheck(_ req: Mesh_V1_SetMigrationCheckRequest) async throws(MeshError) -> Mesh_V1_SetMigrationCheckResponse {
        let who = try await admin(req.caller)
        guard let user = UUID(text: req.userID) else { throw .notFound("no such user") }
        _ = try await migration.setMigrationCheck(tenant: who.tenant, user: user, revoked: req.pritunlRevoked, actor: who.actor,
                                                  requestID: req.caller.requestID)
        var resp = Mesh_V1_SetMigrationCheckResponse()
        guard let u = try await view(tenant: who.tenant, caller: req.caller).first(where: { $0.user.id == user.lowercased }) else {
            throw .notFound("no such user")
        }
        resp.user = u
        return resp
    }

    /// Records a link for a device of `user_id` (the caller when empty): an admin for any user of the
    /// tenant, anyone else for themselves. The tenant's provisioning gate applies to the maker's
    /// session, since the link makes a device later without one.
    public func createLink(_ req: Mesh_V1_CreateConfigLinkRequest) async throws(MeshError) -> Mesh_V1_CreateConfigLinkResponse {
        let who = try await users.identify(req.caller)
        guard let policy = who.plan.policy else { throw .internal("tenant has an unknown plan") }
        try policy.checkProvisioningSession(tenantRequiresSAML: who.requireSAML, amr: who.amr)
        let target: UUID
        if req.userID.isEmpty {
            target = who.user
        } else {
            guard let t = UUID(text: req.userID) else { throw .invalidArgument(field: "user_id", message: "user_id must be a UUID") }
            target = t
        }
        try ConfigLinkPolicy.checkCreate(callerIsAdmin: who.isAdmin, caller: who.user, target: target)
        let label = try Slug.validateLabel(req.label)
        guard req.type != .unspecified, Mesh_V1_DeviceType(key: req.type.key) != nil else {
            throw .invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
        }
        let ttl = try configuration.configLinks.ttl(requestedSeconds: req.ttlSeconds)
        guard req.tokenHash.count == 32 else { throw .invalidArgument(field: "token_hash", message: "token_hash must be a SHA-256") }
        let draft = ConfigLinkRecord(id: UUID(), tenant: who.tenant, user: target, label: label, type: req.type, createdBy: who.actor,
                                     createdAt: Date(), expiresAt: Date())
        let link = try await migration.insertConfigLink(draft, hash: Array(req.tokenHash), ttl: ttl, requestID: req.caller.requestID)
        logger.info("config link created", metadata: ["tenant.id": "\(who.tenant.lowercased)", "link.id": "\(link.id.lowercased)",
                                                      "user.id": "\(target.lowercased)", "request.id": "\(req.caller.requestID)"])
        var resp = Mesh_V1_CreateConfigLinkResponse()
        resp.link = link.proto
        return resp
    }

    /// Opens a link: unknown is `notFound`, used or expired is `gone`; otherwise the device is made
    /// now (its key with it) for the link's user, with the plan's cap and the rate limit, and its
    /// config returned this once.
    public func open(_ req: Mesh_V1_OpenConfigLinkRequest, requestID: String) async throws(MeshError) -> Mesh_V1_OpenConfigLinkResponse {
        guard req.tokenHash.count == 32 else { throw .notFound("no such config link") }
        let claim = try await migration.claimConfigLink(hash: Array(req.tokenHash), requestID: requestID) { used, expires, now in
            ConfigLinkPolicy.decideOpen(usedAt: used, expiresAt: expires, now: now)
        }
        let link: ConfigLinkRecord
        switch claim {
        case .unknown:
            throw .notFound("no such config link")
        case .refused(let l, let why):
            logger.notice("config link refused", metadata: ["link.id": "\(l.id.lowercased)", "reason": "\(why.rawValue)", "request.id": "\(requestID)"])
            throw ConfigLinkPolicy.error(why)
        case .claimed(let l):
            link = l
        }
        let created: Mesh_V1_CreateDeviceResponse
        do {
            var caller = Mesh_V1_Caller()
            caller.tenantID = link.tenant.lowercased
            caller.userID = link.user.lowercased
            let who = try await users.identify(caller)
            var phases = DevicePhases()
            created = try await devices.create(for: who, label: link.label, type: link.type, requestID: requestID, phases: &phases)
        } catch {
            // Nothing was made: the link is handed back so that it can be opened again until it expires.
            do {
                try await migration.finishConfigLink(link.id, tenant: link.tenant, device: nil, failure: error.message, requestID: requestID)
            } catch let e {
                logger.error("config link not handed back", metadata: ["link.id": "\(link.id.lowercased)", "error": "\(e)"])
            }
            throw error
        }
        // The device exists and the link stays used whatever happens next; only the record of which
        // device it made could be missing.
        let device = UUID(text: created.device.id)
        if let device {
            do {
                try await migration.finishConfigLink(link.id, tenant: link.tenant, device: device, failure: "", requestID: requestID)
            } catch {
                logger.error("config link's device not recorded", metadata: ["link.id": "\(link.id.lowercased)", "device.id": "\(device.lowercased)",
                                                                             "error": "\(error)"])
            }
        }
        var resp = Mesh_V1_OpenConfigLinkResponse()
        var opened = link
        opened.device = device
        resp.link = opened.proto
        resp.created = created
        logger.info("config link opened", metadata: ["tenant.id": "\(link.tenant.lowercased)", "link.id": "\(link.id.lowercased)",
                                                     "device.id": "\(created.device.id)", "request.id": "\(requestID)"])
        return resp
    }

    func admin(_ caller: Mesh_V1_Caller) async throws(MeshError) -> CallerIdentity {
        let who = try await users.identify(caller)
        guard who.isAdmin else { throw .permissionDenied("the Pritunl walk-through is for admins") }
        return who
    }

    /// Users, devices, checklist and pending links of a tenant, joined by user.
    func view(tenant: UUID, caller: Mesh_V1_Caller) async throws(MeshError) -> [Mesh_V1_MigrationUser] {
        var list = Mesh_V1_ListDevicesRequest()
        list.caller = caller
        list.limit = 500
        let people = try await users.list(tenant: tenant.lowercased, caller: caller)
        // Every device of the tenant, page by page.
        var all: [Mesh_V1_Device] = []
        while true {
            let page = try await devices.list(list)
            all += page.devices
            guard !page.nextCursor.isEmpty else { break }
            list.cursor = page.nextCursor
        }
        let checkList = try await migration.migrationChecks(tenant: tenant)
        let linkList = try await migration.pendingConfigLinks(tenant: tenant)
        let checks = Dictionary(checkList.map { ($0.user.lowercased, $0) }, uniquingKeysWith: { a, _ in a })
        let links = Dictionary(grouping: linkList, by: { $0.user.lowercased })
        let byOwner = Dictionary(grouping: all, by: { $0.ownerUserID })
        return people.map { u in
            var m = Mesh_V1_MigrationUser()
            m.user = u
            m.devices = byOwner[u.id] ?? []
            if let c = checks[u.id] {
                m.pritunlRevoked = c.pritunlRevoked
                m.checkedAtMs = c.checkedAt.unixMilliseconds
                m.checkedBy = c.checkedBy
            }
            m.pendingLinks = (links[u.id] ?? []).map(\.proto)
            return m
        }
    }
}

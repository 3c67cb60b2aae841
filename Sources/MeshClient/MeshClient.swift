import Foundation
import HashTreeCollections
import MeshBus
import MeshDomain
import MeshProto
import SwiftProtobuf

/// Typed clients for the control-plane services over the bus. Each call is one request/reply with
/// a deadline; every failure is a ``MeshError``.
public struct AllocatorClient: Sendable {
    public let bus: BusConnection
    public var timeout: Duration

    public init(bus: BusConnection, timeout: Duration = .seconds(5)) {
        self.bus = bus
        self.timeout = timeout
    }

    /// Assigns (or returns) a tenant's prefixes.
    public func ensureTenant(_ tenantID: String, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_TenantPrefixes {
        var r = Mesh_V1_EnsureTenantRequest()
        r.tenantID = tenantID
        let resp: Mesh_V1_EnsureTenantResponse = try await bus.call(MeshSubjects.allocatorTenant, r, requestID: requestID, timeout: timeout)
        return resp.prefixes
    }

    /// Allocates an owner's addresses (idempotent by owner).
    public func allocate(tenantID: String, ownerID: String, kind: Mesh_V1_PeerKind, requestedIPv4: String = "",
                         requestID: String? = nil) async throws(MeshError) -> Mesh_V1_AllocateResponse {
        var r = Mesh_V1_AllocateRequest()
        r.tenantID = tenantID
        r.ownerID = ownerID
        r.kind = kind
        r.requestedIpv4 = requestedIPv4
        return try await bus.call(MeshSubjects.allocatorAllocate, r, requestID: requestID, timeout: timeout)
    }

    /// Releases an owner's addresses.
    @discardableResult
    public func release(tenantID: String, ownerID: String, neverPublished: Bool = false,
                        requestID: String? = nil) async throws(MeshError) -> Mesh_V1_ReleaseResponse {
        var r = Mesh_V1_ReleaseRequest()
        r.tenantID = tenantID
        r.ownerID = ownerID
        r.neverPublished = neverPublished
        return try await bus.call(MeshSubjects.allocatorRelease, r, requestID: requestID, timeout: timeout)
    }
}

/// ProvisionSvc's operations.
public struct ProvisionClient: Sendable {
    public let bus: BusConnection
    public var timeout: Duration

    public init(bus: BusConnection, timeout: Duration = .seconds(10)) {
        self.bus = bus
        self.timeout = timeout
    }

    func call<R: SwiftProtobuf.Message>(_ subject: String, _ req: some SwiftProtobuf.Message, _ requestID: String?) async throws(MeshError) -> R {
        try await bus.call(subject, req, as: R.self, requestID: requestID, timeout: timeout)
    }

    public func createTenant(_ r: Mesh_V1_CreateTenantRequest, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_Tenant {
        let resp: Mesh_V1_CreateTenantResponse = try await call(MeshSubjects.tenantCreate, r, requestID)
        return resp.tenant
    }

    public func updateTenant(_ r: Mesh_V1_UpdateTenantRequest, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_Tenant {
        let resp: Mesh_V1_UpdateTenantResponse = try await call(MeshSubjects.tenantUpdate, r, requestID)
        return resp.tenant
    }

    public func getTenant(_ tenantID: String, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_Tenant {
        var r = Mesh_V1_GetTenantRequest()
        r.tenantID = tenantID
        let resp: Mesh_V1_GetTenantResponse = try await call(MeshSubjects.tenantGet, r, requestID)
        return resp.tenant
    }

    public func listTenants(requestID: String? = nil) async throws(MeshError) -> [Mesh_V1_Tenant] {
        let resp: Mesh_V1_ListTenantsResponse = try await call(MeshSubjects.tenantList, Mesh_V1_ListTenantsRequest(), requestID)
        return resp.tenants
    }

    public func createUser(_ r: Mesh_V1_CreateUserRequest, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_User {
        let resp: Mesh_V1_CreateUserResponse = try await call(MeshSubjects.userCreate, r, requestID)
        return resp.user
    }

    public func getUser(tenantID: String, userID: String, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_User {
        var r = Mesh_V1_GetUserRequest()
        r.tenantID = tenantID
        r.userID = userID
        let resp: Mesh_V1_GetUserResponse = try await call(MeshSubjects.userGet, r, requestID)
        return resp.user
    }

    public func listUsers(tenantID: String, requestID: String? = nil) async throws(MeshError) -> [Mesh_V1_User] {
        var r = Mesh_V1_ListUsersRequest()
        r.tenantID = tenantID
        let resp: Mesh_V1_ListUsersResponse = try await call(MeshSubjects.userList, r, requestID)
        return resp.users
    }

    /// The users of an admin's tenant (the caller's check included).
    public func listUsers(caller: Mesh_V1_Caller) async throws(MeshError) -> [Mesh_V1_User] {
        var r = Mesh_V1_ListUsersRequest()
        r.caller = caller
        let resp: Mesh_V1_ListUsersResponse = try await call(MeshSubjects.userList, r, caller.requestID.nilIfEmpty)
        return resp.users
    }

    /// The per-request check of a user caller: the user as stored (its role), the session's facts.
    public func identify(caller: Mesh_V1_Caller) async throws(MeshError) -> Mesh_V1_IdentifyResponse {
        var r = Mesh_V1_IdentifyRequest()
        r.caller = caller
        return try await call(MeshSubjects.callerIdentify, r, caller.requestID.nilIfEmpty)
    }

    public func inviteUser(_ r: Mesh_V1_InviteUserRequest) async throws(MeshError) -> Mesh_V1_User {
        let resp: Mesh_V1_InviteUserResponse = try await call(MeshSubjects.userInvite, r, r.caller.requestID.nilIfEmpty)
        return resp.user
    }

    public func setUserRole(caller: Mesh_V1_Caller, userID: String, role: Mesh_V1_Role) async throws(MeshError) -> Mesh_V1_User {
        var r = Mesh_V1_SetUserRoleRequest()
        r.caller = caller
        r.userID = userID
        r.role = role
        let resp: Mesh_V1_SetUserRoleResponse = try await call(MeshSubjects.userRole, r, caller.requestID.nilIfEmpty)
        return resp.user
    }

    public func deleteUser(caller: Mesh_V1_Caller, userID: String, devices: Mesh_V1_DeviceDisposition,
                           reassignTo: String = "") async throws(MeshError) -> Mesh_V1_DeleteUserResponse {
        var r = Mesh_V1_DeleteUserRequest()
        r.caller = caller
        r.userID = userID
        r.devices = devices
        r.reassignTo = reassignTo
        return try await call(MeshSubjects.userDelete, r, caller.requestID.nilIfEmpty)
    }

    public func startSignIn(attemptID: [UInt8], provider: String, ttlSeconds: UInt32, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_StartSignInResponse {
        var r = Mesh_V1_StartSignInRequest()
        r.attemptID = Data(attemptID)
        r.provider = provider
        r.ttlSeconds = ttlSeconds
        return try await call(MeshSubjects.signInStart, r, requestID)
    }

    public func finishSignIn(attemptID: [UInt8], provider: String, requestID: String? = nil) async throws(MeshError) {
        var r = Mesh_V1_FinishSignInRequest()
        r.attemptID = Data(attemptID)
        r.provider = provider
        let _: Mesh_V1_FinishSignInResponse = try await call(MeshSubjects.signInFinish, r, requestID)
    }

    public func createSession(_ r: Mesh_V1_CreateSessionRequest, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_CreateSessionResponse {
        try await call(MeshSubjects.sessionCreate, r, requestID)
    }

    public func endSession(caller: Mesh_V1_Caller) async throws(MeshError) {
        var r = Mesh_V1_EndSessionRequest()
        r.caller = caller
        let _: Mesh_V1_EndSessionResponse = try await call(MeshSubjects.sessionEnd, r, caller.requestID.nilIfEmpty)
    }

    public func createAPIToken(caller: Mesh_V1_Caller, name: String, hash: [UInt8], prefix: String, ttlSeconds: UInt32) async throws(MeshError) -> Mesh_V1_ApiToken {
        var r = Mesh_V1_CreateApiTokenRequest()
        r.caller = caller
        r.name = name
        r.tokenHash = Data(hash)
        r.prefix = prefix
        r.ttlSeconds = ttlSeconds
        let resp: Mesh_V1_CreateApiTokenResponse = try await call(MeshSubjects.tokenCreate, r, caller.requestID.nilIfEmpty)
        return resp.token
    }

    public func listAPITokens(caller: Mesh_V1_Caller) async throws(MeshError) -> [Mesh_V1_ApiToken] {
        var r = Mesh_V1_ListApiTokensRequest()
        r.caller = caller
        let resp: Mesh_V1_ListApiTokensResponse = try await call(MeshSubjects.tokenList, r, caller.requestID.nilIfEmpty)
        return resp.tokens
    }

    public func revokeAPIToken(caller: Mesh_V1_Caller, tokenID: String) async throws(MeshError) {
        var r = Mesh_V1_RevokeApiTokenRequest()
        r.caller = caller
        r.tokenID = tokenID
        let _: Mesh_V1_RevokeApiTokenResponse = try await call(MeshSubjects.tokenRevoke, r, caller.requestID.nilIfEmpty)
    }

    /// The caller an API token (its SHA-256) stands for.
    public func authenticateAPIToken(hash: [UInt8], requestID: String? = nil) async throws(MeshError) -> Mesh_V1_Caller {
        var r = Mesh_V1_AuthenticateTokenRequest()
        r.tokenHash = Data(hash)
        let resp: Mesh_V1_AuthenticateTokenResponse = try await call(MeshSubjects.tokenAuthenticate, r, requestID)
        return resp.caller
    }

    /// Creates a device; `expiresAtMs` 0 takes the tenant's default lifetime (if any); `pair` marks a
    /// phone's pairing, whose reply carries its fallback (docs/fallback.md).
    public func createDevice(caller: Mesh_V1_Caller, label: String, type: Mesh_V1_DeviceType,
                             expiresAtMs: Int64 = 0, pair: Bool = false) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        var r = Mesh_V1_CreateDeviceRequest()
        r.caller = caller
        r.label = label
        r.type = type
        r.expiresAtMs = expiresAtMs
        r.pair = pair
        return try await call(MeshSubjects.deviceCreate, r, caller.requestID.nilIfEmpty)
    }

    /// One device, for its owner or an admin of its tenant.
    public func getDevice(caller: Mesh_V1_Caller, deviceID: String) async throws(MeshError) -> Mesh_V1_Device {
        var r = Mesh_V1_GetDeviceRequest()
        r.caller = caller
        r.deviceID = deviceID
        let resp: Mesh_V1_GetDeviceResponse = try await call(MeshSubjects.deviceGet, r, caller.requestID.nilIfEmpty)
        return resp.device
    }

    /// Suspends a device (its owner or an admin).
    public func suspendDevice(caller: Mesh_V1_Caller, deviceID: String) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        var r = Mesh_V1_SuspendDeviceRequest()
        r.caller = caller
        r.deviceID = deviceID
        return try await call(MeshSubjects.deviceSuspend, r, caller.requestID.nilIfEmpty)
    }

    /// Resumes a suspended device.
    public func resumeDevice(caller: Mesh_V1_Caller, deviceID: String) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        var r = Mesh_V1_ResumeDeviceRequest()
        r.caller = caller
        r.deviceID = deviceID
        return try await call(MeshSubjects.deviceResume, r, caller.requestID.nilIfEmpty)
    }

    /// Sets a device's expiry (admins); 0 clears it.
    public func setDeviceExpiry(caller: Mesh_V1_Caller, deviceID: String, expiresAtMs: Int64) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        var r = Mesh_V1_SetDeviceExpiryRequest()
        r.caller = caller
        r.deviceID = deviceID
        r.expiresAtMs = expiresAtMs
        return try await call(MeshSubjects.deviceExpiry, r, caller.requestID.nilIfEmpty)
    }

    /// The settings a tenant's admins change.
    public func tenantSettings(caller: Mesh_V1_Caller) async throws(MeshError) -> Mesh_V1_TenantAdminSettings {
        var r = Mesh_V1_GetTenantSettingsRequest()
        r.caller = caller
        let resp: Mesh_V1_TenantSettingsResponse = try await call(MeshSubjects.settingsGet, r, caller.requestID.nilIfEmpty)
        return resp.settings
    }

    /// Changes them (admins): the mesh switch, the default device lifetime.
    public func updateTenantSettings(_ r: Mesh_V1_UpdateTenantSettingsRequest) async throws(MeshError) -> Mesh_V1_TenantSettingsResponse {
        try await call(MeshSubjects.settingsUpdate, r, r.caller.requestID.nilIfEmpty)
    }

    /// The certificate of a node's HTTPS front, for the node's own P-256 public key (DER).
    public func nodeCertificate(tenantID: String, nodeID: String, publicKeyDER: [UInt8]) async throws(MeshError) -> Mesh_V1_NodeCertificateResponse {
        var r = Mesh_V1_NodeCertificateRequest()
        r.tenantID = tenantID
        r.nodeID = nodeID
        r.publicKeyDer = Data(publicKeyDER)
        return try await call(MeshSubjects.nodeCertificate(tenant: tenantID, node: nodeID), r, nil)
    }

    public func deleteDevice(caller: Mesh_V1_Caller, deviceID: String) async throws(MeshError) -> Mesh_V1_DeleteDeviceResponse {
        var r = Mesh_V1_DeleteDeviceRequest()
        r.caller = caller
        r.deviceID = deviceID
        return try await call(MeshSubjects.deviceDelete, r, caller.requestID.nilIfEmpty)
    }

    public func renameDevice(caller: Mesh_V1_Caller, deviceID: String, label: String) async throws(MeshError) -> Mesh_V1_RenameDeviceResponse {
        var r = Mesh_V1_RenameDeviceRequest()
        r.caller = caller
        r.deviceID = deviceID
        r.label = label
        return try await call(MeshSubjects.deviceRename, r, caller.requestID.nilIfEmpty)
    }

    /// A new keypair and a fresh config for a device (its owner or an admin).
    public func reissueDevice(caller: Mesh_V1_Caller, deviceID: String) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        var r = Mesh_V1_ReissueDeviceRequest()
        r.caller = caller
        r.deviceID = deviceID
        return try await call(MeshSubjects.deviceReissue, r, caller.requestID.nilIfEmpty)
    }

    /// Makes a node the tenant's hub (admins).
    public func setHub(caller: Mesh_V1_Caller, nodeID: String) async throws(MeshError) -> Mesh_V1_SetHubResponse {
        var r = Mesh_V1_SetHubRequest()
        r.caller = caller
        r.nodeID = nodeID
        return try await call(MeshSubjects.nodeSetHub, r, caller.requestID.nilIfEmpty)
    }

    /// Every device the caller sees (all pages).
    public func listDevices(caller: Mesh_V1_Caller) async throws(MeshError) -> [Mesh_V1_Device] {
        var r = Mesh_V1_ListDevicesRequest()
        r.caller = caller
        r.limit = 500
        var all: [Mesh_V1_Device] = []
        while true {
            let page = try await listDevices(r)
            all += page.devices
            guard !page.nextCursor.isEmpty else { return all }
            r.cursor = page.nextCursor
        }
    }

    /// One page of devices, with the request's filters.
    public func listDevices(_ r: Mesh_V1_ListDevicesRequest) async throws(MeshError) -> Mesh_V1_ListDevicesResponse {
        try await call(MeshSubjects.deviceList, r, r.caller.requestID.nilIfEmpty)
    }

    public func createEnrollmentToken(caller: Mesh_V1_Caller, ttlSeconds: UInt32 = 3600, maxUses: UInt32 = 1) async throws(MeshError) -> Mesh_V1_CreateEnrollmentTokenResponse {
        var r = Mesh_V1_CreateEnrollmentTokenRequest()
        r.caller = caller
        r.ttlSeconds = ttlSeconds
        r.maxUses = maxUses
        return try await call(MeshSubjects.enrollmentCreate, r, caller.requestID.nilIfEmpty)
    }

    public func registerNode(_ r: Mesh_V1_RegisterNodeRequest, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_RegisterNodeResponse {
        try await call(MeshSubjects.nodeRegister, r, requestID)
    }

    public func deregisterNode(caller: Mesh_V1_Caller, nodeID: String) async throws(MeshError) -> Mesh_V1_DeregisterNodeResponse {
        var r = Mesh_V1_DeregisterNodeRequest()
        r.caller = caller
        r.nodeID = nodeID
        return try await call(MeshSubjects.nodeDeregister, r, caller.requestID.nilIfEmpty)
    }

    /// The tenant's nodes; `live` (admins) also asks each node for its state.
    public func listNodes(caller: Mesh_V1_Caller, live: Bool = false) async throws(MeshError) -> [Mesh_V1_Node] {
        var r = Mesh_V1_ListNodesRequest()
        r.caller = caller
        r.live = live
        let resp: Mesh_V1_ListNodesResponse = try await call(MeshSubjects.nodeList, r, caller.requestID.nilIfEmpty)
        return resp.nodes
    }

    public func getNode(caller: Mesh_V1_Caller, nodeID: String) async throws(MeshError) -> Mesh_V1_Node {
        var r = Mesh_V1_GetNodeRequest()
        r.caller = caller
        r.nodeID = nodeID
        let resp: Mesh_V1_GetNodeResponse = try await call(MeshSubjects.nodeGet, r, caller.requestID.nilIfEmpty)
        return resp.node
    }

    /// A node's live peer dump, cut to what the tenant's plan includes (admins only).
    public func nodeDiagnostics(caller: Mesh_V1_Caller, nodeID: String) async throws(MeshError) -> Mesh_V1_NodeDiagnosticsResponse {
        var r = Mesh_V1_NodeDiagnosticsRequest()
        r.caller = caller
        r.nodeID = nodeID
        return try await call(MeshSubjects.nodeDiagnostics, r, caller.requestID.nilIfEmpty)
    }

    public func license(caller: Mesh_V1_Caller) async throws(MeshError) -> Mesh_V1_MeshVpnFeature {
        var r = Mesh_V1_GetLicenseRequest()
        r.caller = caller
        let resp: Mesh_V1_GetLicenseResponse = try await call(MeshSubjects.licenseGet, r, caller.requestID.nilIfEmpty)
        return resp.meshVpn
    }

    public func audit(caller: Mesh_V1_Caller, beforeID: Int64 = 0, limit: UInt32 = 50, action: String = "",
                      actor: String = "") async throws(MeshError) -> Mesh_V1_ListAuditResponse {
        var r = Mesh_V1_ListAuditRequest()
        r.caller = caller
        r.beforeID = beforeID
        r.limit = limit
        r.action = action
        r.actor = actor
        return try await call(MeshSubjects.auditList, r, caller.requestID.nilIfEmpty)
    }
}

/// FanoutSvc: the outbox relay's ingest, SyncFromCP (paged), catch-up and revision queries.
public struct FanoutClient: Sendable {
    public let bus: BusConnection
    public var timeout: Duration

    public init(bus: BusConnection, timeout: Duration = .seconds(10)) {
        self.bus = bus
        self.timeout = timeout
    }

    /// Hands FanoutSvc a tenant's changes (ProvisionSvc's outbox relay).
    public func ingest(_ r: Mesh_V1_IngestRequest) async throws(MeshError) -> Mesh_V1_IngestResponse {
        try await bus.call(MeshSubjects.fanoutIngest, r, timeout: timeout)
    }

    /// One page of a node's view of its tenant: members with an id above `after`.
    public func sync(tenantID: String, nodeID: String, after: String = "", pageSize: UInt32 = 0,
                     requestID: String? = nil) async throws(MeshError) -> Mesh_V1_SyncResponse {
        var r = Mesh_V1_SyncRequest()
        r.tenantID = tenantID
        r.nodeID = nodeID
        r.afterMemberID = after
        r.pageSize = pageSize
        return try await bus.call(MeshSubjects.sync(tenant: tenantID, node: nodeID), r, requestID: requestID, timeout: timeout)
    }

    /// A node's whole view of its tenant: every page, then the changes made while the pages were read,
    /// applied on top, so the result is the state at one revision.
    public func fullView(tenantID: String, nodeID: String, pageSize: UInt32 = 0) async throws(MeshError) -> MeshView {
        let first = try await sync(tenantID: tenantID, nodeID: nodeID, pageSize: pageSize)
        var view = MeshView(revision: first.revision, settings: first.settings, members: first.members, policy: first.policy)
        var newest = first.revision
        var after = first.nextMemberID
        while !after.isEmpty {
            let page = try await sync(tenantID: tenantID, nodeID: nodeID, after: after, pageSize: pageSize)
            for m in page.members { view.table.put(m) }
            newest = max(newest, page.revision)
            after = page.nextMemberID
        }
        if newest > first.revision {
            // Pages read at later revisions may mix states; replaying every change since the first
            // page's revision (each carries a member's whole state) makes them one.
            var since = first.revision
            while since < newest {
                let c = try await changes(tenantID: tenantID, nodeID: nodeID, after: since)
                guard !c.tooOld else { throw .unavailable("the tenant changed too much during the sync; try again") }
                if c.changes.isEmpty { break }
                for u in c.changes { view.apply(u) }
                since = c.changes.last!.revision
                newest = max(newest, c.revision)
            }
        }
        return view
    }

    /// The changes of a tenant after a revision.
    public func changes(tenantID: String, nodeID: String, after: UInt64, limit: UInt32 = 0) async throws(MeshError) -> Mesh_V1_ChangesResponse {
        var r = Mesh_V1_ChangesRequest()
        r.tenantID = tenantID
        r.nodeID = nodeID
        r.afterRevision = after
        r.limit = limit
        return try await bus.call(MeshSubjects.changes(tenant: tenantID, node: nodeID), r, timeout: timeout)
    }

    /// The tenant's newest revision.
    public func revision(tenantID: String) async throws(MeshError) -> UInt64 {
        var r = Mesh_V1_RevisionRequest()
        r.tenantID = tenantID
        let resp: Mesh_V1_RevisionResponse = try await bus.call(MeshSubjects.revision(tenant: tenantID), r, timeout: timeout)
        return resp.revision
    }
}

/// A tenant's mesh as a node reads it: settings and members at one revision. The members are a
/// ``MemberTable`` (persistent maps), so a view can be shared by many ``MeshState``s without a copy.
public struct MeshView: Sendable {
    public var revision: UInt64
    public var settings: Mesh_V1_TenantSettings
    /// Members with their indexes.
    public var table: MemberTable
    /// Members by id.
    public var members: TreeDictionary<String, Mesh_V1_Member> { table.members }
    /// The tenant's access policy.
    public var policy: Mesh_V1_PolicySet

    public init(revision: UInt64, settings: Mesh_V1_TenantSettings, members: some Sequence<Mesh_V1_Member>,
                policy: Mesh_V1_PolicySet = Mesh_V1_PolicySet()) {
        self.revision = revision
        self.settings = settings
        self.table = MemberTable(members)
        self.policy = policy
    }

    /// Applies one change on top (a later page may already hold its result: changes carry whole
    /// states, so applying them again is harmless).
    public mutating func apply(_ u: Mesh_V1_PeersUpdated) {
        switch u.change {
        case .upsert(let m):
            table.put(m)
        case .remove(let r):
            table.drop(r.id)
        case .settings(let s):
            settings = s
        case .policy(let p):
            policy = p
        case nil:
            break
        }
        revision = max(revision, u.revision)
    }
}

/// A node's control subjects (served by its NodeApplier).
public struct NodeClient: Sendable {
    public let bus: BusConnection
    public var timeout: Duration

    public init(bus: BusConnection, timeout: Duration = .seconds(3)) {
        self.bus = bus
        self.timeout = timeout
    }

    public func state(nodeID: String, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_NodeState {
        try await bus.call(MeshSubjects.nodeState(nodeID), Mesh_V1_NodeStateRequest(), requestID: requestID, timeout: timeout)
    }

    public func peers(nodeID: String, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_PeerDump {
        try await bus.call(MeshSubjects.nodePeers(nodeID), Mesh_V1_PeerDumpRequest(), requestID: requestID, timeout: timeout)
    }

    public func refresh(nodeID: String, requestID: String? = nil) async throws(MeshError) -> Mesh_V1_RefreshResponse {
        try await bus.call(MeshSubjects.nodeRefresh(nodeID), Mesh_V1_RefreshRequest(), requestID: requestID, timeout: .seconds(30))
    }
}

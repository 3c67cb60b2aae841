import Foundation
import Logging
import MeshBus
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import MeshStore
import ServiceKit
import ServiceLifecycle
import SwiftProtobuf

/// ProvisionSvc assembled: its services by concept over one storage backend, the outbox relay and the
/// lease keeper. The executable and the tests build it the same way.
public struct Provisioning: Sendable {
    public let tenants: TenantService
    public let users: UserService
    public let devices: DeviceService
    public let nodes: NodeService
    public let audit: AuditService
    public let policies: PolicyService
    public let accounts: AccountService
    public let certificates: CertificateService
    public let migration: MigrationService
    /// The long-running parts: the outbox relay and the lease keeper (and the bus identities, when on).
    public let services: [any Service]
    public let relay: OutboxRelay
    /// Where device status events go (`mesh.v1.status.<tenant>.devices`).
    let bus: BusConnection
    let logger: Logger

    /// ProvisionSvc on PostgreSQL, talking to AllocatorSvc and FanoutSvc over `bus`.
    public init(store: Store, bus: BusConnection, configuration: ProvisionConfiguration, busIdentities: NodeBusIdentities? = nil,
                logger: Logger) {
        let pg = PostgresProvisionStore(store: store, logger: logger)
        let allocator = AllocatorClient(bus: bus, timeout: configuration.allocatorTimeout)
        let fanout = FanoutClient(bus: bus)
        let relay = OutboxRelay(store: store, ingest: { req async throws(MeshError) in try await fanout.ingest(req) },
                                sweepInterval: configuration.sweepInterval, logger: logger)
        let users = UserService(users: pg)
        self.relay = relay
        self.bus = bus
        self.logger = logger
        self.users = users
        tenants = TenantService(tenants: pg, prefixes: allocator, notifier: relay, logger: logger)
        let certificates = CertificateService(authorities: pg, nodes: pg, sealingKey: configuration.caSealingKey, logger: logger)
        self.certificates = certificates
        devices = DeviceService(devices: pg, users: users, leases: pg, allocator: allocator, notifier: relay, configuration: configuration,
                                fallback: { t async throws(MeshError) in try await certificates.fallback(tenant: t) }, logger: logger)
        let nodeClient = NodeClient(bus: bus)
        let stateClient = NodeClient(bus: bus, timeout: configuration.nodeStateTimeout)
        nodes = NodeService(nodes: pg, users: users, leases: pg, allocator: allocator, notifier: relay, busIdentities: busIdentities,
                            probe: { id async throws(MeshError) in try await nodeClient.peers(nodeID: id) },
                            stateProbe: { id async throws(MeshError) in try await stateClient.state(nodeID: id) },
                            configuration: configuration, logger: logger)
        audit = AuditService(audit: pg, users: users)
        policies = PolicyService(policies: pg, users: users, notifier: relay, logger: logger)
        accounts = AccountService(accounts: pg, users: users, leases: pg, allocator: allocator, notifier: relay, logger: logger)
        migration = MigrationService(migration: pg, users: users, devices: devices, configuration: configuration, logger: logger)
        var services: [any Service] = [relay, LeaseKeeper(tasks: pg, allocator: allocator, interval: configuration.sweepInterval, logger: logger),
                                       ExpirySweeper(devices: devices, interval: configuration.expirySweepInterval, logger: logger)]
        if let busIdentities { services.append(busIdentities) }
        self.services = services
    }

    /// ProvisionSvc's endpoints on the bus (queue group "q" for everything, so replicas share the load).
    public var endpoints: [ServiceEndpoint] {
        let p = self
        @Sendable func rid(_ caller: Mesh_V1_Caller, _ raw: BusRequest) -> String {
            caller.requestID.nilIfEmpty ?? raw.requestID ?? UUID().lowercasedText
        }
        return [
            .proto("tenant-create", subject: MeshSubjects.tenantCreate) { (r: Mesh_V1_CreateTenantRequest, raw) in
                var resp = Mesh_V1_CreateTenantResponse()
                resp.tenant = try await p.tenants.create(r, requestID: raw.requestID ?? UUID().lowercasedText)
                return resp
            },
            .proto("tenant-update", subject: MeshSubjects.tenantUpdate) { (r: Mesh_V1_UpdateTenantRequest, raw) in
                var resp = Mesh_V1_UpdateTenantResponse()
                resp.tenant = try await p.tenants.update(r, requestID: raw.requestID ?? "")
                return resp
            },
            .proto("tenant-get", subject: MeshSubjects.tenantGet) { (r: Mesh_V1_GetTenantRequest, _) in
                var resp = Mesh_V1_GetTenantResponse()
                resp.tenant = try await p.tenants.get(try ProvisionValidate.uuid(r.tenantID, field: "tenant_id"))
                return resp
            },
            .proto("tenant-list", subject: MeshSubjects.tenantList) { (_: Mesh_V1_ListTenantsRequest, _) in
                var resp = Mesh_V1_ListTenantsResponse()
                resp.tenants = try await p.tenants.list()
                return resp
            },
            .proto("user-create", subject: MeshSubjects.userCreate) { (r: Mesh_V1_CreateUserRequest, raw) in
                var resp = Mesh_V1_CreateUserResponse()
                resp.user = try await p.users.create(r, requestID: raw.requestID ?? "")
                return resp
            },
            .proto("user-get", subject: MeshSubjects.userGet) { (r: Mesh_V1_GetUserRequest, _) in
                var resp = Mesh_V1_GetUserResponse()
                resp.user = try await p.users.get(tenant: r.tenantID, id: r.userID)
                return resp
            },
            .proto("user-list", subject: MeshSubjects.userList) { (r: Mesh_V1_ListUsersRequest, _) in
                var resp = Mesh_V1_ListUsersResponse()
                resp.users = try await p.users.list(tenant: r.tenantID, caller: r.hasCaller ? r.caller : nil)
                return resp
            },
            .proto("user-invite", subject: MeshSubjects.userInvite) { (r: Mesh_V1_InviteUserRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.accounts.invite(req)
            },
            .proto("user-role", subject: MeshSubjects.userRole) { (r: Mesh_V1_SetUserRoleRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.accounts.setRole(req)
            },
            .proto("user-delete", subject: MeshSubjects.userDelete) { (r: Mesh_V1_DeleteUserRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.accounts.deleteUser(req)
            },
            .proto("caller-identify", subject: MeshSubjects.callerIdentify) { (r: Mesh_V1_IdentifyRequest, _) in
                var resp = try await p.accounts.identify(r)
                if let id = UUID(text: r.caller.tenantID), let t = try? await p.tenants.get(id) { resp.tenantName = t.name }
                return resp
            },
            .proto("signin-start", subject: MeshSubjects.signInStart) { (r: Mesh_V1_StartSignInRequest, _) in
                try await p.accounts.startSignIn(r)
            },
            .proto("signin-finish", subject: MeshSubjects.signInFinish) { (r: Mesh_V1_FinishSignInRequest, _) in
                try await p.accounts.finishSignIn(r)
            },
            .proto("session-create", subject: MeshSubjects.sessionCreate) { (r: Mesh_V1_CreateSessionRequest, raw) in
                try await p.accounts.createSession(r, requestID: raw.requestID ?? UUID().lowercasedText)
            },
            .proto("session-end", subject: MeshSubjects.sessionEnd) { (r: Mesh_V1_EndSessionRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.accounts.endSession(req)
            },
            .proto("token-create", subject: MeshSubjects.tokenCreate) { (r: Mesh_V1_CreateApiTokenRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.accounts.createAPIToken(req)
            },
            .proto("token-list", subject: MeshSubjects.tokenList) { (r: Mesh_V1_ListApiTokensRequest, _) in
                try await p.accounts.listAPITokens(r)
            },
            .proto("token-revoke", subject: MeshSubjects.tokenRevoke) { (r: Mesh_V1_RevokeApiTokenRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.accounts.revokeAPIToken(req)
            },
            .proto("token-authenticate", subject: MeshSubjects.tokenAuthenticate) { (r: Mesh_V1_AuthenticateTokenRequest, _) in
                try await p.accounts.authenticateAPIToken(r)
            },
            .proto("device-create", subject: MeshSubjects.deviceCreate) { (r: Mesh_V1_CreateDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.create(req)
            },
            .proto("device-delete", subject: MeshSubjects.deviceDelete) { (r: Mesh_V1_DeleteDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.delete(req)
            },
            .proto("device-rename", subject: MeshSubjects.deviceRename) { (r: Mesh_V1_RenameDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.rename(req)
            },
            .proto("device-reissue", subject: MeshSubjects.deviceReissue) { (r: Mesh_V1_ReissueDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.reissue(req)
            },
            .proto("device-list", subject: MeshSubjects.deviceList) { (r: Mesh_V1_ListDevicesRequest, _) in
                try await p.devices.list(r)
            },
            .proto("device-get", subject: MeshSubjects.deviceGet) { (r: Mesh_V1_GetDeviceRequest, _) in
                var resp = Mesh_V1_GetDeviceResponse()
                resp.device = try await p.devices.get(r)
                return resp
            },
            .proto("device-suspend", subject: MeshSubjects.deviceSuspend) { (r: Mesh_V1_SuspendDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.suspend(req)
            },
            .proto("device-resume", subject: MeshSubjects.deviceResume) { (r: Mesh_V1_ResumeDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.resume(req)
            },
            .proto("device-expiry", subject: MeshSubjects.deviceExpiry) { (r: Mesh_V1_SetDeviceExpiryRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.devices.setExpiry(req)
            },
            .proto("settings-get", subject: MeshSubjects.settingsGet) { (r: Mesh_V1_GetTenantSettingsRequest, _) in
                var resp = Mesh_V1_TenantSettingsResponse()
                resp.settings = try await p.tenants.adminSettings(of: try await p.users.identify(r.caller))
                return resp
            },
            .proto("settings-update", subject: MeshSubjects.settingsUpdate) { (r: Mesh_V1_UpdateTenantSettingsRequest, raw) in
                try await p.tenants.updateAdminSettings(r, by: try await p.users.identify(r.caller), requestID: rid(r.caller, raw))
            },
            .proto("enrollment-create", subject: MeshSubjects.enrollmentCreate) { (r: Mesh_V1_CreateEnrollmentTokenRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.nodes.createEnrollmentToken(req)
            },
            .proto("node-register", subject: MeshSubjects.nodeRegister) { (r: Mesh_V1_RegisterNodeRequest, raw) in
                try await p.nodes.register(r, requestID: raw.requestID ?? UUID().lowercasedText)
            },
            .proto("node-deregister", subject: MeshSubjects.nodeDeregister) { (r: Mesh_V1_DeregisterNodeRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.nodes.deregister(req)
            },
            .proto("node-list", subject: MeshSubjects.nodeList) { (r: Mesh_V1_ListNodesRequest, _) in
                var resp = Mesh_V1_ListNodesResponse()
                resp.nodes = try await p.nodes.list(r)
                return resp
            },
            .proto("node-get", subject: MeshSubjects.nodeGet) { (r: Mesh_V1_GetNodeRequest, _) in
                var resp = Mesh_V1_GetNodeResponse()
                resp.node = try await p.nodes.get(r)
                return resp
            },
            .proto("node-set-hub", subject: MeshSubjects.nodeSetHub) { (r: Mesh_V1_SetHubRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.nodes.setHub(req)
            },
            .proto("node-diagnostics", subject: MeshSubjects.nodeDiagnostics) { (r: Mesh_V1_NodeDiagnosticsRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.nodes.diagnostics(req)
            },
            .proto("license-get", subject: MeshSubjects.licenseGet) { (r: Mesh_V1_GetLicenseRequest, _) in
                var resp = Mesh_V1_GetLicenseResponse()
                resp.meshVpn = try await p.audit.license(caller: r.caller)
                return resp
            },
            .proto("audit-list", subject: MeshSubjects.auditList) { (r: Mesh_V1_ListAuditRequest, _) in
                try await p.audit.list(r)
            },
            .proto("node-certificate", subject: MeshSubjects.nodeCertificateWildcard) { (r: Mesh_V1_NodeCertificateRequest, raw) in
                try await p.certificates.issueNode(r, subject: raw.subject)
            },
            .proto("migration-status", subject: MeshSubjects.migrationStatus) { (r: Mesh_V1_MigrationStatusRequest, _) in
                try await p.migration.status(r)
            },
            .proto("migration-check", subject: MeshSubjects.migrationCheck) { (r: Mesh_V1_SetMigrationCheckRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.migration.setCheck(req)
            },
            .proto("link-create", subject: MeshSubjects.linkCreate) { (r: Mesh_V1_CreateConfigLinkRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.migration.createLink(req)
            },
            .proto("link-open", subject: MeshSubjects.linkOpen) { (r: Mesh_V1_OpenConfigLinkRequest, raw) in
                try await p.migration.open(r, requestID: raw.requestID ?? UUID().lowercasedText)
            },
            .proto("policy-get", subject: MeshSubjects.policyGet) { (r: Mesh_V1_GetPolicyRequest, _) in
                var resp = Mesh_V1_GetPolicyResponse()
                resp.policy = try await p.policies.get(r)
                return resp
            },
            .proto("policy-update", subject: MeshSubjects.policyUpdate) { (r: Mesh_V1_UpdatePolicyRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.policies.update(req)
            },
            .proto("policy-check", subject: MeshSubjects.policyCheck) { (r: Mesh_V1_CheckPolicyRequest, _) in
                try await p.policies.check(r)
            },
            .proto("tags-set", subject: MeshSubjects.tagsSet) { (r: Mesh_V1_SetTagsRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.policies.setTags(req)
            },
            .proto("handshake-report", subject: MeshSubjects.handshakeReportWildcard) { (r: Mesh_V1_HandshakeReport, raw) in
                if let event = try await p.devices.applyReport(r, subject: raw.subject) {
                    // After the commit, so a reader that sees the event reads at least this state. Best
                    // effort: a gateway that misses it still shows the change at its next list read.
                    do {
                        try p.bus.publish(MeshSubjects.deviceStatus(tenant: event.tenantID), try event.serializedBytes())
                    } catch {
                        p.logger.warning("device status event not published", metadata: ["tenant.id": "\(event.tenantID)", "error": "\(error)"])
                    }
                }
                return Google_Protobuf_Empty()
            },
        ]
    }
}

extension AllocatorClient: AddressAllocator, TenantPrefixSource {
    public func allocate(tenant: UUID, owner: UUID, kind: Mesh_V1_PeerKind, requestID: String) async throws(MeshError) -> (ipv4: String, ipv6: String) {
        let r = try await allocate(tenantID: tenant.lowercased, ownerID: owner.lowercased, kind: kind, requestID: requestID)
        return (r.lease.ipv4, r.lease.ipv6)
    }

    public func release(tenant: UUID, owner: UUID, neverPublished: Bool, requestID: String) async throws(MeshError) {
        try await release(tenantID: tenant.lowercased, ownerID: owner.lowercased, neverPublished: neverPublished, requestID: requestID)
    }

    public func ensureTenant(_ id: UUID, requestID: String) async throws(MeshError) -> (ipv4: String, ipv6: String) {
        let p = try await ensureTenant(id.lowercased, requestID: requestID)
        return (p.ipv4Prefix, p.ipv6Prefix)
    }
}

import Foundation
import Logging
import MeshKeys
import MeshDomain
import MeshNet
import MeshProto
import MeshQR
import Metrics

/// Where a device creation spends its time: one duration histogram per phase
/// (`mesh_provision_device_phase_seconds{phase=...}`), so the split can be read from a running
/// service under real load (docs/benchmarks.md, ProvisionSvc).
struct DevicePhases {
    enum Phase: String, CaseIterable {
        case identify, precheck, keygen, allocate, commit, config, qr
    }
    private static let timers: [Phase: Metrics.Timer] = Dictionary(uniqueKeysWithValues: Phase.allCases.map {
        ($0, Metrics.Timer(label: "mesh_provision_device_phase_seconds", dimensions: [("phase", $0.rawValue)]))
    })
    private var last = ContinuousClock.now

    /// Records the time since the previous lap (or the start) as `phase`.
    mutating func lap(_ phase: Phase) {
        let now = ContinuousClock.now
        let d = (now - last).components
        Self.timers[phase]!.recordNanoseconds(d.seconds * 1_000_000_000 + d.attoseconds / 1_000_000_000)
        last = now
    }
}

/// Addresses for devices and nodes (AllocatorSvc over the bus; an in-memory pool in unit tests).
public protocol AddressAllocator: Sendable {
    /// The owner's IPv4 and IPv6 address (idempotent by owner).
    func allocate(tenant: UUID, owner: UUID, kind: Mesh_V1_PeerKind, requestID: String) async throws(MeshError) -> (ipv4: String, ipv6: String)
    /// Gives an owner's addresses back (idempotent).
    func release(tenant: UUID, owner: UUID, neverPublished: Bool, requestID: String) async throws(MeshError)
}

/// Wakes whatever hands a tenant's new changes on (the outbox relay).
public protocol ChangeNotifier: Sendable {
    func changed(tenant: UUID)
    /// Hands the tenant's changes on up to `revision` now, waiting (at most a few seconds) until
    /// they are delivered: for a caller whose next step reads them back from FanoutSvc (a node that
    /// registered syncs right away). Returns whether they were delivered.
    @discardableResult
    func deliver(tenant: UUID, through revision: UInt64) async -> Bool
}

/// Devices: creation with the plan's cap, the rate limit, the SAML gate, the slug and the config;
/// deletion, renaming and listing. The rules are MeshDomain's (``DeviceRules``, ``PlanPolicy``);
/// this service orders the steps and keeps the private key out of everything but the reply.
public struct DeviceService: Sendable {
    let devices: any DeviceRepository
    let users: UserService
    let leases: any LeaseTaskRepository
    let allocator: any AddressAllocator
    let notifier: any ChangeNotifier
    let configuration: ProvisionConfiguration
    let renderer = ConfigRenderer()
    let logger: Logger

    public init(devices: any DeviceRepository, users: UserService, leases: any LeaseTaskRepository, allocator: any AddressAllocator,
                notifier: any ChangeNotifier, configuration: ProvisionConfiguration, logger: Logger) {
        self.devices = devices
        self.users = users
        self.leases = leases
        self.allocator = allocator
        self.notifier = notifier
        self.configuration = configuration
        self.logger = logger
    }

    /// Creates a device: the SAML gate, the cap and the rate limit, a keypair, addresses, the config
    /// and its QR code. The private key exists only in the returned config.
    public func create(_ req: Mesh_V1_CreateDeviceRequest) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let label = try Slug.validateLabel(req.label)
        guard req.type != .unspecified, Mesh_V1_DeviceType(key: req.type.key) != nil else {
            throw .invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
        }
        var phases = DevicePhases()
        let who = try await users.identify(req.caller)
        phases.lap(.identify)
        guard let policy = who.plan.policy else { throw .internal("tenant has an unknown plan") }
        try policy.checkProvisioningSession(tenantRequiresSAML: who.requireSAML, amr: who.amr)
        let rate = configuration.rateLimit(for: who.user)

        // Cheap pre-checks, so a request that must fail does not allocate an address first. They
        // are repeated, authoritatively, with the tenant locked below.
        if policy.deviceCap != nil || rate != nil {
            let counts = try await devices.creationCounts(tenant: who.tenant, user: who.user, window: rate?.window)
            try policy.checkCap(used: counts.devices)
            try rate?.check(recent: counts.recent, oldest: counts.oldest, now: counts.now)
        }
        phases.lap(.precheck)

        let deviceID = UUID()
        let keys = WireGuardKeyPair.generate()
        phases.lap(.keygen)
        try await leases.holdLease(owner: deviceID, tenant: who.tenant, due: Date().addingTimeInterval(configuration.leaseHoldSeconds))
        let addresses: (ipv4: String, ipv6: String)
        do {
            addresses = try await allocator.allocate(tenant: who.tenant, owner: deviceID, kind: .device, requestID: requestID)
        } catch {
            await leases.giveBack(tenant: who.tenant, owner: deviceID, neverPublished: true, via: allocator, requestID: requestID, logger: logger)
            throw error
        }
        phases.lap(.allocate)

        let draft = DeviceDraft(id: deviceID, caller: who, label: label, type: req.type, publicKey: keys.publicKey,
                                ipv4: addresses.ipv4, ipv6: addresses.ipv6, slugBase: Slug.make(label, fallback: req.type.key),
                                rateWindow: rate?.window, requestID: requestID)
        let written: WrittenDevice
        do {
            written = try await devices.createDevice(draft) { state throws(MeshError) in
                try DeviceRules.decideCreation(state, slugBase: draft.slugBase, rateLimit: rate)
            }
        } catch {
            // Nothing was committed: the addresses were never published; give them back at once.
            await leases.giveBack(tenant: who.tenant, owner: deviceID, neverPublished: true, via: allocator, requestID: requestID, logger: logger)
            throw error
        }
        notifier.changed(tenant: who.tenant)
        phases.lap(.commit)

        var resp = Mesh_V1_CreateDeviceResponse()
        resp.device = written.device.proto(domain: written.tenant.domain, onlineWindow: configuration.onlineWindow)
        (resp.config, resp.qrSvg, resp.qrUnavailableReason) = render(privateKey: keys.privateKey, device: written, phases: &phases)
        logger.info("device created", metadata: ["tenant.id": "\(who.tenant.lowercased)", "device.id": "\(deviceID.lowercased)",
                                                 "device.slug": "\(written.device.slug)", "revision": "\(written.revision)",
                                                 "request.id": "\(requestID)"])
        return resp
    }

    /// Re-issues a device's config: a new keypair and a fresh config with the tenant's current nodes and
    /// hub. The device keeps its addresses, name and creation time, and its slot of the plan; the
    /// creation rate limit applies. The old key leaves every node with the change. Anyone but the
    /// owner or an admin gets `notFound`.
    public func reissue(_ req: Mesh_V1_ReissueDeviceRequest) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let who = try await users.identify(req.caller)
        guard let id = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        guard let policy = who.plan.policy else { throw .internal("tenant has an unknown plan") }
        try policy.checkProvisioningSession(tenantRequiresSAML: who.requireSAML, amr: who.amr)
        let rate = configuration.rateLimit(for: who.user)
        var phases = DevicePhases()
        let keys = WireGuardKeyPair.generate()
        let written = try await devices.reissueDevice(id, caller: who, publicKey: keys.publicKey, rateWindow: rate?.window, requestID: requestID,
                                                      authorize: { d throws(MeshError) in
                                                          guard who.mayManage(deviceOwnedBy: d.owner) else { throw .notFound("no such device") }
                                                      },
                                                      decide: { state, d throws(MeshError) in
                                                          try DeviceRules.decideReissue(state, slug: d.slug, rateLimit: rate)
                                                      })
        notifier.changed(tenant: who.tenant)
        var resp = Mesh_V1_CreateDeviceResponse()
        resp.device = written.device.proto(domain: written.tenant.domain, onlineWindow: configuration.onlineWindow)
        (resp.config, resp.qrSvg, resp.qrUnavailableReason) = render(privateKey: keys.privateKey, device: written, phases: &phases)
        logger.info("device config re-issued", metadata: ["tenant.id": "\(who.tenant.lowercased)", "device.id": "\(id.lowercased)",
                                                         "revision": "\(written.revision)", "request.id": "\(requestID)"])
        return resp
    }

    /// The config text, its QR code (level M, falling back to L) or why there is none.
    func render(privateKey: String, device w: WrittenDevice, phases: inout DevicePhases) -> (String, String, String) {
        let d = w.device
        let config = renderer.render(privateKey: privateKey, ipv4: d.ipv4, ipv6: d.ipv6, label: d.label,
                                     dnsName: MeshName.dnsName(slug: d.slug, domain: w.tenant.domain), peers: w.config, tenant: w.tenant)
        phases.lap(.config)
        let qrText = renderer.qrText(of: config, label: d.label)
        var svg = "", reason = ""
        do {
            svg = try MeshQR.svg(for: qrText, errorCorrection: .medium)
        } catch {
            do {
                svg = try MeshQR.svg(for: qrText, errorCorrection: .low)
            } catch {
                reason = "the config (\(config.utf8.count) bytes, \(w.config.count) nodes) is too large for a QR code; use the .conf file"
                logger.notice("no QR code for a large config", metadata: ["device.id": "\(d.id.lowercased)", "error": "\(error)"])
            }
        }
        phases.lap(.qr)
        return (config, svg, reason)
    }

    /// Deletes a device (its owner, or an admin of its tenant). Anyone else gets `notFound`, so that
    /// nothing about other users' or tenants' devices leaks.
    public func delete(_ req: Mesh_V1_DeleteDeviceRequest) async throws(MeshError) -> Mesh_V1_DeleteDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let who = try await users.identify(req.caller)
        guard let id = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        let (_, revision) = try await devices.deleteDevice(id, caller: who, requestID: requestID) { d throws(MeshError) in
            guard who.mayManage(deviceOwnedBy: d.owner) else { throw .notFound("no such device") }
        }
        notifier.changed(tenant: who.tenant)
        await leases.giveBack(tenant: who.tenant, owner: id, neverPublished: false, via: allocator, requestID: requestID, logger: logger)
        logger.info("device deleted", metadata: ["tenant.id": "\(who.tenant.lowercased)", "device.id": "\(id.lowercased)", "revision": "\(revision)"])
        var resp = Mesh_V1_DeleteDeviceResponse()
        resp.revision = revision
        return resp
    }

    /// Gives a device a new label and slug (so a new DNS name); the old name stops resolving on
    /// every node once they apply the change.
    public func rename(_ req: Mesh_V1_RenameDeviceRequest) async throws(MeshError) -> Mesh_V1_RenameDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let label = try Slug.validateLabel(req.label)
        let who = try await users.identify(req.caller)
        guard let id = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        let current = try await devices.device(id, tenant: who.tenant)
        let base = Slug.make(label, fallback: (current?.type ?? .other).key)
        let (device, tenant, revision) = try await devices.renameDevice(id, caller: who, label: label, slugBase: base, requestID: requestID) {
            d throws(MeshError) in
            guard who.mayManage(deviceOwnedBy: d.owner) else { throw .notFound("no such device") }
        }
        if revision != nil { notifier.changed(tenant: who.tenant) }
        var resp = Mesh_V1_RenameDeviceResponse()
        resp.device = device.proto(domain: tenant.domain, onlineWindow: configuration.onlineWindow)
        resp.revision = revision ?? 0
        return resp
    }

    /// Owners see their own devices; admins see the whole tenant.
    public func list(_ req: Mesh_V1_ListDevicesRequest) async throws(MeshError) -> [Mesh_V1_Device] {
        let tenant = try ProvisionValidate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let user = try ProvisionValidate.uuid(req.caller.userID, field: "caller.user_id")
        let credential = try CallerCredential(req.caller)
        let (lookup, tenantRecord, list) = try await devices.devices(visibleTo: user, tenant: tenant, credential: credential)
        _ = try UserService.decide(lookup, credential: credential, caller: req.caller)
        guard let t = tenantRecord else { throw .unauthenticated("this user no longer exists") }
        let now = Date()
        return list.map { $0.proto(domain: t.domain, onlineWindow: configuration.onlineWindow, now: now) }
    }

    /// Applies a node's handshake report: per-peer raw counters (so totals survive a counter reset
    /// on either side), the newest handshake and the endpoint. The subject names the sender's tenant
    /// and node and must match what the message says.
    public func applyReport(_ report: Mesh_V1_HandshakeReport, subject: String) async throws(MeshError) {
        let parts = subject.split(separator: ".")
        guard parts.count == 6, String(parts[3]) == report.tenantID.lowercased(), String(parts[4]) == report.nodeID.lowercased() else {
            throw .permissionDenied("report subject does not match its tenant and node")
        }
        let tenant = try ProvisionValidate.uuid(report.tenantID, field: "tenant_id")
        let node = try ProvisionValidate.uuid(report.nodeID, field: "node_id")
        let n = try await devices.applyReport(tenant: tenant, node: node, peers: report.peers.filter { !$0.publicKey.isEmpty })
        logger.debug("handshake report applied", metadata: ["node.id": "\(node.lowercased)", "peers": "\(report.peers.count)", "devices": "\(n)"])
    }
}

/// Input validation shared by the handlers: every rule gives a typed error naming the field.
enum ProvisionValidate {
    static func uuid(_ s: String, field: String) throws(MeshError) -> UUID {
        guard let u = UUID(text: s) else { throw .invalidArgument(field: field, message: "\(field) must be a UUID") }
        return u
    }

    /// `host:port` for a node endpoint.
    static func endpoint(_ s: String) throws(MeshError) -> HostPort {
        guard let hp = HostPort(s) else {
            throw .invalidArgument(field: "endpoint", message: "endpoint must be host:port (IPv6 as [addr]:port)")
        }
        return hp
    }
}

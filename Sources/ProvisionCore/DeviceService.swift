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
    /// What a paired phone falls back on (CertificateService), for a pairing request.
    let fallback: (@Sendable (UUID) async throws(MeshError) -> Mesh_V1_PhoneFallback)?
    let renderer = ConfigRenderer()
    let logger: Logger

    public init(devices: any DeviceRepository, users: UserService, leases: any LeaseTaskRepository, allocator: any AddressAllocator,
                notifier: any ChangeNotifier, configuration: ProvisionConfiguration,
                fallback: (@Sendable (UUID) async throws(MeshError) -> Mesh_V1_PhoneFallback)? = nil, logger: Logger) {
        self.fallback = fallback
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
        if req.pair {
            guard req.type == .iphone || req.type == .android else {
                throw .invalidArgument(field: "pair", message: "only a phone (type iphone or android) is paired")
            }
            guard fallback != nil else { throw .failedPrecondition("pairing is not available") }
        }
        var phases = DevicePhases()
        // The address hold depends only on the tenant the gateway vouched for, not on who the caller
        // is: it is written while the caller is looked up (two independent round trips at once) and
        // dropped again if the caller may not create.
        let deviceID = UUID()
        async let holding = hold(owner: deviceID, tenant: req.caller.tenantID)
        let who: CallerIdentity
        do throws(MeshError) {
            who = try await users.identify(req.caller)
            guard let policy = who.plan.policy else { throw MeshError.internal("tenant has an unknown plan") }
            try policy.checkProvisioningSession(tenantRequiresSAML: who.requireSAML, amr: who.amr)
        } catch {
            if await holding == nil { await dropHold(owner: deviceID) }
            throw error
        }
        if let failure = await holding { throw failure }
        phases.lap(.identify)
        return try await create(for: who, label: label, type: req.type,
                                requestedExpiry: req.expiresAtMs > 0 ? Date(unixMilliseconds: req.expiresAtMs) : nil, pair: req.pair,
                                held: deviceID, requestID: requestID, phases: &phases)
    }

    /// Writes the address hold of a device about to be created; the error, if it could not.
    private func hold(owner: UUID, tenant: String) async -> MeshError? {
        do throws(MeshError) {
            let tenant = try ProvisionValidate.uuid(tenant, field: "caller.tenant_id")
            try await leases.holdLease(owner: owner, tenant: tenant, due: Date().addingTimeInterval(configuration.leaseHoldSeconds))
            return nil
        } catch {
            return error
        }
    }

    /// Drops a hold whose device will not be created (no address was allocated for it). If that
    /// fails, the lease keeper finds it overdue and releases nothing.
    private func dropHold(owner: UUID) async {
        do throws(MeshError) {
            try await leases.finishLeaseTask(owner: owner)
        } catch {
            logger.warning("could not drop an address hold; the lease keeper will", metadata: ["device.id": "\(owner.lowercased)", "error": "\(error)"])
        }
    }

    /// Creates a device for `who`, whose identity (and, where it applies, provisioning session) was
    /// checked: the cap and the rate limit, a keypair, addresses, the config and its QR code.
    /// `requestedExpiry` nil takes the tenant's default lifetime (if any); `pair` adds a phone's fallback.
    /// `held` is the id of a device whose address hold was already written (dropped here if the
    /// creation stops before the allocation); without it the hold is written here.
    func create(for who: CallerIdentity, label: String, type: Mesh_V1_DeviceType, requestedExpiry: Date? = nil, pair: Bool = false,
                held: UUID? = nil, requestID: String, phases: inout DevicePhases) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        let deviceID = held ?? UUID()
        let rate = configuration.rateLimit(for: who.user)
        guard let policy = who.plan.policy else {
            if held != nil { await dropHold(owner: deviceID) }
            throw .internal("tenant has an unknown plan")
        }
        var pairing: Mesh_V1_PhoneFallback?
        do throws(MeshError) {
            // A pairing's fallback (the nodes' URLs and the tenant CA) is read first: when it cannot be
            // had, nothing is created.
            if pair, let fallback { pairing = try await fallback(who.tenant) }

            // Cheap pre-checks, so a request that must fail does not allocate an address first. They
            // are repeated, authoritatively, with the tenant locked below.
            if policy.deviceCap != nil || rate != nil {
                let counts = try await devices.creationCounts(tenant: who.tenant, user: who.user, window: rate?.window)
                try policy.checkCap(used: counts.devices)
                try rate?.check(recent: counts.recent, oldest: counts.oldest, now: counts.now)
            }
        } catch {
            if held != nil { await dropHold(owner: deviceID) }
            throw error
        }
        phases.lap(.precheck)

        let keys = WireGuardKeyPair.generate()
        phases.lap(.keygen)
        if held == nil {
            try await leases.holdLease(owner: deviceID, tenant: who.tenant, due: Date().addingTimeInterval(configuration.leaseHoldSeconds))
        }
        let addresses: (ipv4: String, ipv6: String)
        do {
            addresses = try await allocator.allocate(tenant: who.tenant, owner: deviceID, kind: .device, requestID: requestID)
        } catch {
            await leases.giveBack(tenant: who.tenant, owner: deviceID, neverPublished: true, via: allocator, requestID: requestID, logger: logger)
            throw error
        }
        phases.lap(.allocate)

        let draft = DeviceDraft(id: deviceID, caller: who, label: label, type: type, publicKey: keys.publicKey,
                                ipv4: addresses.ipv4, ipv6: addresses.ipv6, slugBase: Slug.make(label, fallback: type.key),
                                rateWindow: rate?.window, requestID: requestID, requestedExpiry: requestedExpiry)
        let written: WrittenDevice
        do {
            written = try await devices.createDevice(draft) { state throws(MeshError) in
                try DeviceRules.decideCreation(state, slugBase: draft.slugBase, rateLimit: rate, requestedExpiry: draft.requestedExpiry,
                                               callerIsAdmin: who.isAdmin)
            }
        } catch {
            // Nothing was committed: the addresses were never published; give them back at once.
            await leases.giveBack(tenant: who.tenant, owner: deviceID, neverPublished: true, via: allocator, requestID: requestID, logger: logger)
            throw error
        }
        notifier.changed(tenant: who.tenant)
        phases.lap(.commit)

        var resp = Mesh_V1_CreateDeviceResponse()
        resp.device = policy.presenting(written.device.proto(domain: written.tenant.domain, onlineWindow: configuration.onlineWindow))
        (resp.config, resp.qrSvg, resp.qrUnavailableReason) = render(privateKey: keys.privateKey, device: written, phases: &phases)
        if let pairing { resp.fallback = pairing }
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
                                                          try DeviceRules.decideReissue(state, slug: d.slug, rateLimit: rate, lifecycle: d.lifecycle)
                                                      })
        notifier.changed(tenant: who.tenant)
        var resp = Mesh_V1_CreateDeviceResponse()
        resp.device = policy.presenting(written.device.proto(domain: written.tenant.domain, onlineWindow: configuration.onlineWindow))
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
        let who = try await users.identify(req.caller)
        let label = try Slug.validateLabel(req.label)
        guard let id = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        let current = try await devices.device(id, tenant: who.tenant)
        let base = Slug.make(label, fallback: (current?.type ?? .other).key)
        let (device, tenant, revision) = try await devices.renameDevice(id, caller: who, label: label, slugBase: base, requestID: requestID) {
            d throws(MeshError) in
            guard who.mayManage(deviceOwnedBy: d.owner) else { throw .notFound("no such device") }
        }
        if revision != nil { notifier.changed(tenant: who.tenant) }
        var resp = Mesh_V1_RenameDeviceResponse()
        resp.device = try present(device, tenant: tenant)
        resp.revision = revision ?? 0
        return resp
    }

    /// A device as its tenant's plan shows it (``PlanPolicy/presenting(_:)``: no per-peer stats on Free).
    func present(_ d: DeviceRecord, tenant: TenantRecord, now: Date = Date()) throws(MeshError) -> Mesh_V1_Device {
        guard let policy = tenant.plan.policy else { throw .internal("tenant has an unknown plan") }
        return policy.presenting(d.proto(domain: tenant.domain, onlineWindow: configuration.onlineWindow, now: now))
    }

    /// One page of the devices the caller sees, oldest first: owners their own, admins the whole
    /// tenant, filtered by owner, status and type.
    public func list(_ req: Mesh_V1_ListDevicesRequest) async throws(MeshError) -> Mesh_V1_ListDevicesResponse {
        let tenant = try ProvisionValidate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let user = try ProvisionValidate.uuid(req.caller.userID, field: "caller.user_id")
        var q = DeviceQuery()
        guard req.limit <= 500 else { throw .invalidArgument(field: "limit", message: "limit must be 1 to 500") }
        q.limit = req.limit == 0 ? 100 : Int(req.limit)
        if !req.cursor.isEmpty {
            guard let c = DeviceCursor(text: req.cursor) else { throw .invalidArgument(field: "cursor", message: "cursor is not one this service gave out") }
            q.after = c
        }
        if !req.ownerUserID.isEmpty { q.owner = try ProvisionValidate.uuid(req.ownerUserID, field: "owner") }
        switch req.status {
        case .unspecified: break
        case .active, .suspended, .expired: q.status = req.status
        default: throw .invalidArgument(field: "status", message: "status must be active, suspended or expired")
        }
        switch req.type {
        case .unspecified: break
        case .iphone, .android, .laptop, .other: q.type = req.type
        default: throw .invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
        }
        switch req.view {
        case .unspecified, .full: break
        case .listing: q.listing = true
        default: throw .invalidArgument(field: "view", message: "view must be full or listing")
        }
        let credential = try CallerCredential(req.caller)
        let (lookup, found) = try await devices.devices(visibleTo: user, tenant: tenant, credential: credential, query: q)
        _ = try UserService.decide(lookup, credential: credential, caller: req.caller)
        guard let page = found else { throw .unauthenticated("this user no longer exists") }
        guard let policy = page.tenant.plan.policy else { throw .internal("tenant has an unknown plan") }
        let now = Date(), listing = q.listing
        var resp = Mesh_V1_ListDevicesResponse()
        resp.devices = page.devices.map {
            policy.presenting($0.proto(domain: page.tenant.domain, onlineWindow: configuration.onlineWindow, now: now, listing: listing))
        }
        resp.nextCursor = page.next?.text ?? ""
        resp.perPeerStats = policy.includes(.perPeerStats)
        return resp
    }

    /// One device, for its owner or an admin of its tenant (`notFound` for anyone else).
    public func get(_ req: Mesh_V1_GetDeviceRequest) async throws(MeshError) -> Mesh_V1_Device {
        let tenant = try ProvisionValidate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let user = try ProvisionValidate.uuid(req.caller.userID, field: "caller.user_id")
        guard let id = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        // The listing's one read: the caller's check, the tenant, and the device only if the caller sees it.
        let credential = try CallerCredential(req.caller)
        let (lookup, found) = try await devices.devices(visibleTo: user, tenant: tenant, credential: credential, query: DeviceQuery(id: id))
        _ = try UserService.decide(lookup, credential: credential, caller: req.caller)
        guard let page = found else { throw .unauthenticated("this user no longer exists") }
        guard let d = page.devices.first else { throw .notFound("no such device") }
        return try present(d, tenant: page.tenant)
    }

    // MARK: Lifecycle

    /// Suspends a device (its owner or an admin): it leaves every node and the mesh DNS, and keeps
    /// its keys, addresses, name and plan slot.
    public func suspend(_ req: Mesh_V1_SuspendDeviceRequest) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        try await changeLifecycle(req.caller, deviceID: req.deviceID, action: "device.suspend") { who, d, now throws(MeshError) in
            d.lifecycle.suspend(byAdmin: who.isAdmin, at: now).map { ($0, "\(who.isAdmin ? "by an admin" : "by its owner")") }
        }
    }

    /// Resumes a suspended device (its owner, unless an admin suspended it, or an admin); refused
    /// while its expiry has passed.
    public func resume(_ req: Mesh_V1_ResumeDeviceRequest) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        try await changeLifecycle(req.caller, deviceID: req.deviceID, action: "device.resume") { who, d, now throws(MeshError) in
            try d.lifecycle.resume(byAdmin: who.isAdmin, at: now).map { ($0, "") }
        }
    }

    /// Sets, extends or clears a device's expiry (admins). A device that was suspended because it
    /// expired comes back when the new expiry lies in the future.
    public func setExpiry(_ req: Mesh_V1_SetDeviceExpiryRequest) async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        let expiry: Date? = req.expiresAtMs > 0 ? Date(unixMilliseconds: req.expiresAtMs) : nil
        guard req.expiresAtMs >= 0 else { throw .invalidArgument(field: "expires_at", message: "expires_at must be a time in the future, or null for never") }
        return try await changeLifecycle(req.caller, deviceID: req.deviceID, action: "device.expiry") { who, d, now throws(MeshError) in
            guard who.isAdmin else { throw .permissionDenied("only an admin can change a device's expiry") }
            guard let next = try d.lifecycle.withExpiry(expiry, at: now) else { return nil }
            let when = expiry.map { "expires \(Timestamp.iso(ms: $0.unixMilliseconds))" } ?? "never expires"
            return (next, d.lifecycle.status == .expired ? "\(when); resumed" : when)
        }
    }

    /// The common steps of a lifecycle change: the caller must manage the device (`notFound`
    /// otherwise), `decide` applies the rule with the storage's clock, the change and its audit entry
    /// are written with the tenant locked, and the nodes hear of it when the device joins or leaves
    /// the mesh.
    func changeLifecycle(_ caller: Mesh_V1_Caller, deviceID: String, action: String,
                         decide: @escaping @Sendable (CallerIdentity, DeviceRecord, Date) throws(MeshError) -> (DeviceLifecycle, String)?)
        async throws(MeshError) -> Mesh_V1_DeviceChangeResponse {
        let requestID = caller.requestID.isEmpty ? UUID().lowercased : caller.requestID
        let who = try await users.identify(caller)
        guard let id = UUID(text: deviceID) else { throw .notFound("no such device") }
        let (device, tenant, revision) = try await devices.changeLifecycle(id, caller: who) { d, now throws(MeshError) in
            guard who.mayManage(deviceOwnedBy: d.owner) else { throw .notFound("no such device") }
            guard let (next, note) = try decide(who, d, now) else { return nil }
            return LifecycleChange(lifecycle: next, audit: AuditEvent(
                tenant: who.tenant, actor: who.actor, action: action, target: d.id.lowercased, requestID: requestID,
                detail: "\"\(d.label)\" (\(d.slug))\(note.isEmpty ? "" : ": \(note)")"))
        }
        if let revision {
            notifier.changed(tenant: who.tenant)
            logger.info("device lifecycle changed", metadata: ["tenant.id": "\(who.tenant.lowercased)", "device.id": "\(id.lowercased)",
                                                               "action": "\(action)", "status": "\(device.lifecycle.status.key)",
                                                               "revision": "\(revision)", "request.id": "\(requestID)"])
        }
        var resp = Mesh_V1_DeviceChangeResponse()
        resp.device = try present(device, tenant: tenant)
        resp.revision = revision ?? 0
        return resp
    }

    /// Suspends the devices whose expiry has passed (the expiry sweeper's step). Returns what it did.
    @discardableResult
    public func expireDue(limit: Int = 100) async throws(MeshError) -> [ExpiredDevice] {
        let done = try await devices.expireDevices(limit: limit) { lifecycle, now in lifecycle.expire(at: now) }
        for tenant in Set(done.map(\.tenant)) { notifier.changed(tenant: tenant) }
        for e in done {
            logger.info("device expired", metadata: ["tenant.id": "\(e.tenant.lowercased)", "device.id": "\(e.device.lowercased)", "revision": "\(e.revision)"])
        }
        return done
    }

    /// Applies a node's handshake report: per-peer raw counters (so totals survive a counter reset
    /// on either side), the newest handshake and the endpoint. The subject names the sender's tenant
    /// and node and must match what the message says.
    /// Returns the devices whose status changed (nil when none did), for the status event.
    @discardableResult
    public func applyReport(_ report: Mesh_V1_HandshakeReport, subject: String) async throws(MeshError) -> Mesh_V1_DeviceStatusChanged? {
        let parts = subject.split(separator: ".")
        guard parts.count == 6, String(parts[3]) == report.tenantID.lowercased(), String(parts[4]) == report.nodeID.lowercased() else {
            throw .permissionDenied("report subject does not match its tenant and node")
        }
        let tenant = try ProvisionValidate.uuid(report.tenantID, field: "tenant_id")
        let node = try ProvisionValidate.uuid(report.nodeID, field: "node_id")
        // A handshake time is a moment a node saw: after 2000 and not in the future (an hour's grace
        // for clock skew). Anything else is a broken or hostile report, refused before it is stored.
        let latest = Date().addingTimeInterval(3600).unixMilliseconds
        for (i, p) in report.peers.enumerated() where p.lastHandshakeMs != 0 && !(946_684_800_000...latest).contains(p.lastHandshakeMs) {
            throw .invalidArgument(field: "peers[\(i)].last_handshake_ms", message: "last_handshake_ms must be a time after 2000 and not in the future")
        }
        let (domain, changed) = try await devices.applyReport(tenant: tenant, node: node, peers: report.peers.filter { !$0.publicKey.isEmpty })
        logger.debug("handshake report applied", metadata: ["node.id": "\(node.lowercased)", "peers": "\(report.peers.count)", "devices.changed": "\(changed.count)"])
        guard !changed.isEmpty else { return nil }
        var event = Mesh_V1_DeviceStatusChanged()
        event.tenantID = tenant.lowercased
        let now = Date()
        event.devices = changed.map { $0.proto(domain: domain, onlineWindow: configuration.onlineWindow, now: now) }
        return event
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

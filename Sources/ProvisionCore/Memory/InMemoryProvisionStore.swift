import Foundation
import MeshDomain
import MeshProto

/// ProvisionSvc's repositories in memory, for the unit tests of the rules (caps, the rate limit,
/// the SAML gate, slugs, plan changes, hubs and outdated configs) without PostgreSQL. Each method is
/// one actor turn, so it is atomic exactly where the PostgreSQL transaction is. The clock is
/// injected so that rate-limit windows can be tested at their edges.
public actor InMemoryProvisionStore: TenantRepository, UserRepository, DeviceRepository, NodeRepository, AuditRepository,
    LeaseTaskRepository, PolicyRepository {
    var tenantRows: [UUID: TenantRecord] = [:]
    var userRows: [UUID: Mesh_V1_User] = [:]
    var deviceRows: [UUID: DeviceRecord] = [:]
    var nodeRows: [UUID: NodeRecord] = [:]
    var busKeys: [UUID: String] = [:]
    var revokedKeys: Set<String> = []
    /// Per tenant: slug → owner.
    var names: [UUID: [String: UUID]] = [:]
    /// Per user: creation times (the rate limit's window).
    var events: [UUID: [Date]] = [:]
    /// Per tenant: every change, in revision order.
    public private(set) var outbox: [UUID: [Mesh_V1_PeersUpdated]] = [:]
    var auditRows: [Mesh_V1_AuditEntry] = []
    var tokens: [[UInt8]: (tenant: UUID, expires: Date, uses: Int)] = [:]
    /// The token each node registered with last.
    var enrolledWith: [UUID: [UInt8]] = [:]
    var tasks: [UUID: (tenant: UUID, pending: Bool, neverPublished: Bool, due: Date)] = [:]
    /// Insertion order of nodes (their age, where the clock shows no difference).
    var nodeOrder: [UUID: Int] = [:]
    /// Raw traffic counters per "node/public key" (the handshake reports').
    var rawCounters: [String: (rx: Int64, tx: Int64)] = [:]
    /// Per tenant: the access-policy rules in order.
    var policyRows: [UUID: [Mesh_V1_PolicyRule]] = [:]
    /// Sign-in attempts: id → (provider, expires, used).
    var attempts: [[UInt8]: (provider: String, expires: Date, used: Bool)] = [:]
    /// Sessions by id.
    var sessionRows: [UUID: (user: UUID, tenant: UUID, provider: String, amr: [String], expires: Date, ended: Bool)] = [:]
    /// API tokens by id.
    var tokenRows: [UUID: APITokenRecord] = [:]
    /// The Pritunl walk-through's checklist, by user.
    var checklist: [UUID: (tenant: UUID, check: MigrationCheck)] = [:]
    /// One-time config links by the SHA-256 of their token.
    var linkRows: [[UInt8]: ConfigLinkRecord] = [:]
    var now: @Sendable () -> Date

    public init(clock: @escaping @Sendable () -> Date = { Date() }) {
        now = clock
    }

    /// Moves the clock (tests of time windows).
    public func setClock(_ clock: @escaping @Sendable () -> Date) { now = clock }

    /// The lease tasks left (tests check that nothing leaks).
    public var leaseTaskCount: Int { tasks.count }

    // MARK: Helpers

    func append(_ tenant: UUID, _ change: Mesh_V1_PeersUpdated.OneOf_Change) -> UInt64 {
        guard var t = tenantRows[tenant] else { return 0 }
        t.revision += 1
        tenantRows[tenant] = t
        var u = Mesh_V1_PeersUpdated()
        u.tenantID = tenant.lowercased
        u.revision = t.revision
        u.committedAtMs = now().unixMilliseconds
        u.change = change
        outbox[tenant, default: []].append(u)
        return t.revision
    }

    func write(_ a: AuditEvent) {
        var e = Mesh_V1_AuditEntry()
        e.id = Int64(auditRows.count + 1)
        e.tenantID = a.tenant.lowercased
        e.actor = a.actor
        e.action = a.action
        e.targetID = a.target
        e.requestID = a.requestID
        e.detail = a.detail
        e.atMs = now().unixMilliseconds
        auditRows.append(e)
    }

    func nodesByAge(_ tenant: UUID) -> [NodeRecord] {
        nodeRows.values.filter { $0.tenant == tenant }.sorted { ($0.createdAt, nodeOrder[$0.id] ?? 0) < ($1.createdAt, nodeOrder[$1.id] ?? 0) }
    }

    func taken(_ tenant: UUID, _ base: String) -> Set<String> {
        let prefix = Slug.collisionPrefix(base)
        return Set((names[tenant] ?? [:]).keys.filter { $0.hasPrefix(prefix) })
    }

    func markOutdated(tenant: UUID, node: UUID, change: PeerCatalog.ConfigChange) {
        for (id, d) in deviceRows where d.tenant == tenant && d.configOutdated == nil {
            let asHub = d.configHubID == node.lowercased
            let listed = d.configNodeIDs.contains(node.lowercased)
            guard asHub || listed, let reason = change.reason(listedAsHub: asHub) else { continue }
            deviceRows[id]?.configOutdated = reason
        }
    }

    // MARK: Tenants

    public func insertTenant(_ t: TenantRecord, audit: AuditEvent) async throws(MeshError) {
        guard tenantRows[t.id] == nil else { throw .alreadyExists("tenant \(t.id.lowercased) already exists") }
        var record = t
        record.createdAt = now()
        tenantRows[t.id] = record
        _ = append(t.id, .settings(record.settings))
        write(audit)
    }

    public func tenant(_ id: UUID) async throws(MeshError) -> TenantRecord? { tenantRows[id] }

    public func tenants() async throws(MeshError) -> [TenantRecord] {
        tenantRows.values.sorted { ($0.createdAt, $0.id.lowercased) < ($1.createdAt, $1.id.lowercased) }
    }

    public func updateTenant(_ id: UUID, _ change: @escaping @Sendable (TenantRecord) throws(MeshError) -> (TenantRecord, AuditEvent)?)
        async throws(MeshError) -> (tenant: TenantRecord, revision: UInt64?) {
        guard let cur = tenantRows[id] else { throw .notFound("unknown tenant") }
        guard let (t, audit) = try change(cur) else { return (cur, nil) }
        tenantRows[id] = t
        tenantRows[id]?.revision = cur.revision
        var revision: UInt64?
        if t.settings != cur.settings { revision = append(id, .settings(t.settings)) }
        write(audit)
        return (tenantRows[id]!, revision)
    }

    // MARK: Users

    public func insertUser(_ u: Mesh_V1_User, audit: AuditEvent) async throws(MeshError) -> Mesh_V1_User {
        guard let id = UUID(text: u.id), let tenant = UUID(text: u.tenantID) else { throw .invalidArgument(field: "id", message: "id must be a UUID") }
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        guard userRows[id] == nil else { throw .alreadyExists("user \(id.lowercased) already exists") }
        var stored = u
        stored.createdAtMs = now().unixMilliseconds
        if stored.status == .unspecified { stored.status = .active }
        userRows[id] = stored
        write(audit)
        return stored
    }

    public func user(tenant: UUID, id: UUID) async throws(MeshError) -> Mesh_V1_User? {
        userRows[id].flatMap { $0.tenantID == tenant.lowercased ? $0 : nil }
    }

    public func users(tenant: UUID) async throws(MeshError) -> [Mesh_V1_User] {
        userRows.values.filter { $0.tenantID == tenant.lowercased }.sorted { $0.createdAtMs < $1.createdAtMs }
    }

    public func identify(tenant: UUID, user: UUID, credential: CallerCredential) async throws(MeshError) -> CallerLookup {
        guard let u = userRows[user], u.tenantID == tenant.lowercased, let t = tenantRows[tenant] else {
            return CallerLookup(identity: nil, status: .active, credential: .init(exists: false), now: now())
        }
        let who = CallerIdentity(tenant: tenant, user: user, role: u.role, plan: t.plan, requireSAML: t.requireSAML)
        switch credential {
        case .bearer:
            return CallerLookup(identity: who, status: u.status, credential: .init(exists: true), now: now())
        case .session(let id):
            guard let s = sessionRows[id], s.user == user else {
                return CallerLookup(identity: who, status: u.status, credential: .init(exists: false), now: now())
            }
            return CallerLookup(identity: who, status: u.status, credential: .init(exists: true, revoked: s.ended, expires: s.expires),
                                sessionAMR: s.amr, sessionProvider: s.provider, sessionExpires: s.expires, now: now())
        case .apiToken(let id):
            guard let k = tokenRows[id], k.user == user else {
                return CallerLookup(identity: who, status: u.status, credential: .init(exists: false), now: now())
            }
            return CallerLookup(identity: who, status: u.status, credential: .init(exists: true, revoked: k.revoked != nil, expires: k.expires), now: now())
        }
    }

    // MARK: Devices

    func recent(_ user: UUID, window: Duration?) -> (Int, Date?) {
        guard let window else { return (0, nil) }
        let from = now().addingTimeInterval(-window.seconds)
        let inWindow = (events[user] ?? []).filter { $0 > from }
        return (inWindow.count, inWindow.min())
    }

    public func creationCounts(tenant: UUID, user: UUID, window: Duration?) async throws(MeshError) -> (devices: Int, recent: Int, oldest: Date?, now: Date) {
        let (n, oldest) = recent(user, window: window)
        return (deviceRows.values.filter { $0.tenant == tenant }.count, n, oldest, now())
    }

    public func createDevice(_ draft: DeviceDraft,
                             decide: @escaping @Sendable (DeviceCreationState) throws(MeshError) -> DeviceCreationDecision) async throws(MeshError) -> WrittenDevice {
        let c = draft.caller
        guard let t = tenantRows[c.tenant] else { throw .notFound("unknown tenant") }
        let nodes = nodesByAge(c.tenant)
        let (n, oldest) = recent(c.user, window: draft.rateWindow)
        let state = DeviceCreationState(plan: t.plan, settings: t.settings, devicesUsed: deviceRows.values.filter { $0.tenant == c.tenant }.count,
                                        recentCreations: n, oldestRecentCreation: oldest, takenNames: taken(c.tenant, draft.slugBase),
                                        nodesByAge: nodes.map(\.member), configMaxNodes: t.configMaxNodes, now: now(),
                                        defaultLifetimeSeconds: t.deviceLifetimeSeconds)
        let decision = try decide(state)
        guard tasks[draft.id]?.pending == true else {
            throw .unavailable("the address hold expired before the device was saved; try again")
        }
        let listed = decision.config.compactMap { p in nodes.first { $0.id.lowercased == p.node.id }?.listed }
        var device = DeviceRecord(id: draft.id, tenant: c.tenant, owner: c.user, label: draft.label, slug: decision.slug, type: draft.type,
                                  ipv4: draft.ipv4, ipv6: draft.ipv6, publicKey: draft.publicKey, createdAt: now(), lastHandshake: nil,
                                  rxBytes: 0, txBytes: 0, endpoint: nil, configHubID: decision.hubID, configNodeIDs: listed.map(\.id), configOutdated: nil,
                                  ownerRole: c.role)
        device.lifecycle.expiresAt = decision.expiresAt
        tasks.removeValue(forKey: draft.id)
        if draft.rateWindow != nil { events[c.user, default: []].append(now()) }
        names[c.tenant, default: [:]][decision.slug] = draft.id
        deviceRows[draft.id] = device
        let revision = append(c.tenant, .upsert(device.member()))
        write(AuditEvent(tenant: c.tenant, actor: c.actor, action: "device.create", target: draft.id.lowercased, requestID: draft.requestID,
                         detail: "\(draft.type.key) \"\(draft.label)\" as \(MeshName.dnsName(slug: decision.slug, domain: t.domain))"))
        return WrittenDevice(device: device, tenant: tenantRows[c.tenant]!, config: decision.config, revision: revision)
    }

    public func deleteDevice(_ id: UUID, caller: CallerIdentity, requestID: String,
                             authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void) async throws(MeshError) -> (DeviceRecord, UInt64) {
        guard tenantRows[caller.tenant] != nil else { throw .notFound("unknown tenant") }
        guard let d = deviceRows[id], d.tenant == caller.tenant else { throw .notFound("no such device") }
        try authorize(d)
        deviceRows.removeValue(forKey: id)
        names[caller.tenant]?.removeValue(forKey: d.slug)
        tasks[id] = (caller.tenant, false, false, now())
        let revision = append(caller.tenant, .remove(Mesh_V1_MemberRemoval(id: id.lowercased, kind: .device, publicKey: d.publicKey)))
        write(AuditEvent(tenant: caller.tenant, actor: caller.actor, action: "device.delete", target: id.lowercased, requestID: requestID,
                         detail: "\"\(d.label)\""))
        return (d, revision)
    }

    public func renameDevice(_ id: UUID, caller: CallerIdentity, label: String, slugBase: String, requestID: String,
                             authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void) async throws(MeshError) -> (DeviceRecord, TenantRecord, UInt64?) {
        guard let t = tenantRows[caller.tenant] else { throw .notFound("unknown tenant") }
        guard var d = deviceRows[id], d.tenant == caller.tenant else { throw .notFound("no such device") }
        try authorize(d)
        let old = d.slug
        names[caller.tenant]?.removeValue(forKey: old)
        d.label = label
        d.slug = Slug.firstFree(slugBase, taken: taken(caller.tenant, slugBase))
        names[caller.tenant, default: [:]][d.slug] = id
        deviceRows[id] = d
        write(AuditEvent(tenant: caller.tenant, actor: caller.actor, action: "device.rename", target: id.lowercased, requestID: requestID,
                         detail: "\(old) to \(d.slug)"))
        guard d.slug != old else { return (d, t, nil) }
        let revision = append(caller.tenant, .upsert(d.member()))
        return (d, tenantRows[caller.tenant]!, revision)
    }

    public func reissueDevice(_ id: UUID, caller: CallerIdentity, publicKey: String, rateWindow: Duration?, requestID: String,
                              authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void,
                              decide: @escaping @Sendable (DeviceCreationState, DeviceRecord) throws(MeshError) -> DeviceCreationDecision)
        async throws(MeshError) -> WrittenDevice {
        guard let t = tenantRows[caller.tenant] else { throw .notFound("unknown tenant") }
        guard let old = deviceRows[id], old.tenant == caller.tenant else { throw .notFound("no such device") }
        try authorize(old)
        let nodes = nodesByAge(caller.tenant)
        let (n, oldest) = recent(caller.user, window: rateWindow)
        let state = DeviceCreationState(plan: t.plan, settings: t.settings, devicesUsed: 0, recentCreations: n, oldestRecentCreation: oldest,
                                        takenNames: [], nodesByAge: nodes.map(\.member), configMaxNodes: t.configMaxNodes, now: now(),
                                        defaultLifetimeSeconds: t.deviceLifetimeSeconds)
        let decision = try decide(state, old)
        var device = old
        if let renewed = decision.lifecycle { device.lifecycle = renewed }
        device.publicKey = publicKey
        device.configHubID = decision.hubID
        device.configNodeIDs = decision.config.compactMap { p in nodes.first { $0.id.lowercased == p.node.id }?.listed.id }
        device.configOutdated = nil
        deviceRows[id] = device
        if rateWindow != nil { events[caller.user, default: []].append(now()) }
        let revision = append(caller.tenant, .upsert(device.member()))
        write(AuditEvent(tenant: caller.tenant, actor: caller.actor, action: "device.reissue", target: id.lowercased, requestID: requestID,
                         detail: "\"\(old.label)\": new key and config"))
        return WrittenDevice(device: device, tenant: tenantRows[caller.tenant]!, config: decision.config, revision: revision)
    }

    public func device(_ id: UUID, tenant: UUID) async throws(MeshError) -> DeviceRecord? {
        deviceRows[id].flatMap { $0.tenant == tenant ? $0 : nil }
    }

    /// The list's order: creation time (to the microsecond, as PostgreSQL keeps it), then id.
    func position(_ d: DeviceRecord) -> (Int64, String) {
        (Int64((d.createdAt.timeIntervalSince1970 * 1_000_000).rounded()), d.id.lowercased)
    }

    public func devices(visibleTo user: UUID, tenant: UUID, credential: CallerCredential, query q: DeviceQuery) async throws(MeshError)
        -> (CallerLookup, DevicePage?) {
        let lookup = try await identify(tenant: tenant, user: user, credential: credential)
        guard let who = lookup.identity, let t = tenantRows[tenant] else { return (lookup, nil) }
        let after = q.after.map { ($0.createdMicros, $0.id.lowercased) }
        var list = deviceRows.values.filter { d in
            d.tenant == tenant && (who.isAdmin || d.owner == user) && (q.owner.map { d.owner == $0 } ?? true) && (q.id.map { d.id == $0 } ?? true)
                && (q.type.map { d.type == $0 } ?? true) && (q.status.map { d.lifecycle.status == $0 } ?? true)
                && (after.map { position(d) > $0 } ?? true)
        }.sorted { position($0) < position($1) }
        var next: DeviceCursor?
        if let limit = q.limit, list.count > limit {
            list = Array(list.prefix(limit))
            next = list.last.map { DeviceCursor(createdMicros: position($0).0, id: $0.id) }
        }
        for i in list.indices { list[i].ownerName = userRows[list[i].owner]?.name ?? "" }
        return (lookup, DevicePage(caller: who, tenant: t, devices: list, next: next))
    }

    public func changeLifecycle(_ id: UUID, caller: CallerIdentity,
                                change: @escaping @Sendable (DeviceRecord, Date) throws(MeshError) -> LifecycleChange?) async throws(MeshError)
        -> (DeviceRecord, TenantRecord, UInt64?) {
        guard let t = tenantRows[caller.tenant] else { throw .notFound("unknown tenant") }
        guard let before = deviceRows[id], before.tenant == caller.tenant else { throw .notFound("no such device") }
        guard let decided = try change(before, now()) else { return (before, t, nil) }
        var after = before
        after.lifecycle = decided.lifecycle
        deviceRows[id] = after
        write(decided.audit)
        guard after.member() != before.member() else { return (after, t, nil) }
        let revision = append(caller.tenant, .upsert(after.member()))
        return (after, tenantRows[caller.tenant]!, revision)
    }

    public func expireDevices(limit: Int, expire: @escaping @Sendable (DeviceLifecycle, Date) -> DeviceLifecycle?) async throws(MeshError)
        -> [ExpiredDevice] {
        let at = now()
        let due = deviceRows.values.filter { $0.lifecycle.isActive && $0.lifecycle.isPastExpiry(at: at) }
            .sorted { ($0.lifecycle.expiresAt!, $0.id.lowercased) < ($1.lifecycle.expiresAt!, $1.id.lowercased) }.prefix(limit)
        var out: [ExpiredDevice] = []
        for d in due {
            guard let next = expire(d.lifecycle, at) else { continue }
            var after = d
            after.lifecycle = next
            deviceRows[d.id] = after
            write(AuditEvent(tenant: d.tenant, actor: "system", action: "device.expire", target: d.id.lowercased, requestID: "",
                             detail: "\"\(d.label)\" expired and was suspended"))
            out.append(ExpiredDevice(tenant: d.tenant, device: d.id, revision: append(d.tenant, .upsert(after.member()))))
        }
        return out
    }

    public func applyReport(tenant: UUID, node: UUID, peers: [Mesh_V1_PeerStats]) async throws(MeshError) -> (domain: String, changed: [DeviceRecord]) {
        guard nodeRows[node]?.tenant == tenant else { throw .notFound("unknown node") }
        nodeRows[node]?.lastSeen = now()
        var changed: [DeviceRecord] = []
        for p in peers {
            // Raw counters per (node, peer), as PostgreSQL keeps them: a counter that went down was reset.
            let key = "\(node.lowercased)/\(p.publicKey)"
            let (lastRx, lastTx) = rawCounters[key] ?? (0, 0)
            let rx = Int64(clamping: p.rxBytes), tx = Int64(clamping: p.txBytes)
            rawCounters[key] = (rx, tx)
            guard let (id, d) = deviceRows.first(where: { $0.value.tenant == tenant && $0.value.publicKey == p.publicKey }) else { continue }
            var updated = d
            updated.rxBytes += rx >= lastRx ? rx - lastRx : rx
            updated.txBytes += tx >= lastTx ? tx - lastTx : tx
            if p.lastHandshakeMs > 0 {
                let h = Date(unixMilliseconds: p.lastHandshakeMs)
                updated.lastHandshake = max(d.lastHandshake ?? h, h)
            }
            if !p.endpoint.isEmpty { updated.endpoint = p.endpoint }
            deviceRows[id] = updated
            if updated.lastHandshake != d.lastHandshake || updated.endpoint != d.endpoint { changed.append(updated) }
        }
        return (tenantRows[tenant]?.domain ?? TenantDefaults.domain, changed)
    }

    // MARK: Nodes

    public func insertEnrollmentToken(hash: [UInt8], tenant: UUID, createdBy: String, ttl: Duration, uses: Int,
                                      audit: AuditEvent) async throws(MeshError) -> Date {
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        let expires = now().addingTimeInterval(ttl.seconds)
        tokens[hash] = (tenant, expires, uses)
        write(audit)
        return expires
    }

    public func enrollmentTenant(tokenHash: [UInt8], publicKey: String, busKey: String?) async throws(MeshError) -> UUID? {
        guard let t = tokens[tokenHash], t.expires > now(),
              t.uses > 0 || spentBy(tokenHash, tenant: t.tenant, publicKey: publicKey, busKey: busKey) else { return nil }
        return t.tenant
    }

    /// Whether the node with these keys registered with this token (its retry spends nothing).
    private func spentBy(_ hash: [UInt8], tenant: UUID, publicKey: String, busKey: String?) -> Bool {
        guard let n = nodeRows.values.first(where: { $0.publicKey == publicKey && $0.tenant == tenant }) else { return false }
        return enrolledWith[n.id] == hash && busKeys[n.id] == busKey
    }

    public func node(publicKey: String) async throws(MeshError) -> NodeRecord? {
        nodeRows.values.first { $0.publicKey == publicKey }
    }

    public func busKeyHolder(_ key: String) async throws(MeshError) -> (holder: UUID?, revoked: Bool) {
        (busKeys.first { $0.value == key }?.key, revokedKeys.contains(key))
    }

    public func registerNode(id: UUID, tenant: UUID, _ r: NodeRegistration, addresses: (ipv4: String, ipv6: String)?)
        async throws(MeshError) -> (node: NodeRecord, tenant: TenantRecord, revision: UInt64?, isNew: Bool) {
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        guard let tok = tokens[r.tokenHash], tok.tenant == tenant, tok.expires > now() else {
            throw .unauthenticated("invalid or expired enrollment token")
        }
        if !spentBy(r.tokenHash, tenant: tenant, publicKey: r.publicKey, busKey: r.busKey) {
            guard tok.uses > 0 else { throw .unauthenticated("invalid or expired enrollment token") }
            tokens[r.tokenHash]?.uses -= 1
        }
        enrolledWith[id] = r.tokenHash
        var revision: UInt64?
        if var n = nodeRows[id] {
            let before = n
            n.endpoint = r.endpoint
            n.listenPort = r.listenPort
            n.name = r.name
            n.lastSeen = now()
            if let key = r.busKey {
                if let old = busKeys[id], old != key { revokedKeys.insert(old) }
                busKeys[id] = key
            }
            nodeRows[id] = n
            if n.member != before.member {
                revision = append(tenant, .upsert(n.member))
                if n.endpoint != before.endpoint { markOutdated(tenant: tenant, node: id, change: .nodeMoved(name: n.name, endpoint: n.endpoint)) }
            }
            write(AuditEvent(tenant: tenant, actor: "node:\(id.lowercased)", action: "node.reregister", target: id.lowercased,
                             requestID: r.requestID, detail: r.name))
            return (n, tenantRows[tenant]!, revision, false)
        }
        guard let addresses else { throw .internal("a new node needs addresses") }
        guard tasks[id]?.pending == true else { throw .unavailable("the address hold expired before the node was saved; try again") }
        tasks.removeValue(forKey: id)
        let base = Slug.make(r.name, fallback: "node")
        let slug = Slug.firstFree(base, taken: taken(tenant, base))
        names[tenant, default: [:]][slug] = id
        let n = NodeRecord(id: id, tenant: tenant, name: r.name, slug: slug, publicKey: r.publicKey, endpoint: r.endpoint,
                           listenPort: r.listenPort, ipv4: addresses.ipv4, ipv6: addresses.ipv6, createdAt: now(), lastSeen: now())
        nodeRows[id] = n
        nodeOrder[id] = nodeOrder.count
        if let key = r.busKey { busKeys[id] = key }
        revision = append(tenant, .upsert(n.member))
        let hub = DeviceRules.hub(current: tenantRows[tenant]!.hubNodeID, nodesByAge: nodesByAge(tenant).map(\.id.lowercased))
        if hub != tenantRows[tenant]!.hubNodeID {
            tenantRows[tenant]!.hubNodeID = hub
            revision = append(tenant, .settings(tenantRows[tenant]!.settings))
        }
        write(AuditEvent(tenant: tenant, actor: "node:\(id.lowercased)", action: "node.register", target: id.lowercased,
                         requestID: r.requestID, detail: r.name))
        return (n, tenantRows[tenant]!, revision, true)
    }

    public func deregisterNode(_ id: UUID, tenant: UUID, actor: String, requestID: String) async throws(MeshError) -> (NodeRecord, UInt64) {
        guard tenantRows[tenant] != nil else { throw .notFound("unknown tenant") }
        guard let n = nodeRows[id], n.tenant == tenant else { throw .notFound("no such node") }
        if let key = busKeys.removeValue(forKey: id) { revokedKeys.insert(key) }
        nodeRows.removeValue(forKey: id)
        names[tenant]?.removeValue(forKey: n.slug)
        tasks[id] = (tenant, false, false, now())
        write(AuditEvent(tenant: tenant, actor: actor, action: "node.deregister", target: id.lowercased, requestID: requestID, detail: n.name))
        markOutdated(tenant: tenant, node: id, change: .nodeRemoved(name: n.name))
        var revision = append(tenant, .remove(Mesh_V1_MemberRemoval(id: id.lowercased, kind: .node, publicKey: n.publicKey)))
        if tenantRows[tenant]!.hubNodeID == id.lowercased {
            tenantRows[tenant]!.hubNodeID = DeviceRules.hub(current: "", nodesByAge: nodesByAge(tenant).map(\.id.lowercased))
            revision = append(tenant, .settings(tenantRows[tenant]!.settings))
        }
        return (n, revision)
    }

    public func setHub(_ id: UUID, tenant: UUID, actor: String, requestID: String) async throws(MeshError) -> (NodeRecord, TenantRecord, UInt64?) {
        guard let t = tenantRows[tenant] else { throw .notFound("unknown tenant") }
        guard let n = nodeRows[id], n.tenant == tenant else { throw .notFound("no such node") }
        guard t.hubNodeID != id.lowercased else { return (n, t, nil) }
        let old = nodeRows.values.first { $0.id.lowercased == t.hubNodeID }
        tenantRows[tenant]!.hubNodeID = id.lowercased
        write(AuditEvent(tenant: tenant, actor: actor, action: "node.set_hub", target: id.lowercased, requestID: requestID,
                         detail: "hub \(old?.name ?? "none") → \(n.name)"))
        if let old { markOutdated(tenant: tenant, node: old.id, change: .hubChanged(from: old.name, to: n.name)) }
        let revision = append(tenant, .settings(tenantRows[tenant]!.settings))
        return (n, tenantRows[tenant]!, revision)
    }

    public func nodes(tenant: UUID) async throws(MeshError) -> (TenantRecord, [NodeRecord])? {
        guard let t = tenantRows[tenant] else { return nil }
        return (t, nodesByAge(tenant))
    }

    // MARK: Audit and license

    public func audit(tenant: UUID, before: Int64, limit: Int, filter: AuditFilter) async throws(MeshError) -> [Mesh_V1_AuditEntry] {
        Array(auditRows.filter { $0.tenantID == tenant.lowercased && $0.id < before && filter.matches(action: $0.action, actor: $0.actor) }
            .sorted { $0.id > $1.id }.prefix(limit))
    }

    public func license(tenant: UUID) async throws(MeshError) -> (TenantRecord, devices: Int)? {
        guard let t = tenantRows[tenant] else { return nil }
        return (t, deviceRows.values.filter { $0.tenant == tenant }.count)
    }

    // MARK: Lease tasks

    public func holdLease(owner: UUID, tenant: UUID, due: Date) async throws(MeshError) {
        if tasks[owner] == nil { tasks[owner] = (tenant, true, true, due) }
    }

    public func claimLeaseTasks(limit: Int, retryAfter: Duration) async throws(MeshError) -> [LeaseTask] {
        let due = tasks.filter { $0.value.due <= now() }.sorted { $0.value.due < $1.value.due }.prefix(limit)
        return due.map { owner, t in
            tasks[owner] = (t.tenant, false, t.neverPublished, now().addingTimeInterval(retryAfter.seconds))
            return LeaseTask(owner: owner, tenant: t.tenant, neverPublished: t.neverPublished)
        }
    }

    public func finishLeaseTask(owner: UUID) async throws(MeshError) {
        tasks.removeValue(forKey: owner)
    }
}

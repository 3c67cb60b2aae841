import Foundation
import Logging
import MeshCore
import MeshNet
import MeshProto
import MeshQR
import MeshStore
import Metrics

/// Where a device creation spends its time: one duration histogram per phase
/// (`mesh_provision_device_phase_seconds{phase=...}`), so the split can be read from a running
/// service under real load (docs/benchmarks.md, ProvisionSvc).
struct DevicePhases {
    enum Phase: String, CaseIterable {
        case identify, tenant, precheck, keygen, allocate, commit, config, qr
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

extension Provisioner {
    /// The SELECT list `Mapping.device` reads.
    static let deviceColumns: SQL = """
        id, tenant_id, owner_user_id, label, slug, type, ipv4, ipv6, public_key,
        (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
        (extract(epoch FROM last_handshake_at) * 1000)::bigint AS handshake_ms,
        coalesce(last_handshake_at > now() - make_interval(secs => $2), false) AS online,
        rx_bytes, tx_bytes, endpoint
        """

    /// Creates a device: rate limit, plan cap, label and slug, keypair, addresses, config, QR, audit
    /// and outbox. The private key exists only in the returned config.
    public func createDevice(_ req: Mesh_V1_CreateDeviceRequest) async throws(MeshError) -> Mesh_V1_CreateDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let label = try Slug.validateLabel(req.label)
        guard let typeKey = Optional(req.type.key), req.type != .unspecified, Mesh_V1_DeviceType(key: typeKey) != nil else {
            throw .invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
        }
        var phases = DevicePhases()
        let who = try await identify(req.caller)
        phases.lap(.identify)
        let t = try await tenant(who.tenant)
        phases.lap(.tenant)
        if t.plan == .enterprise && t.requireSaml && !req.caller.amr.contains(where: { $0.lowercased() == "saml" }) {
            throw .permissionDenied("this tenant requires a SAML-authenticated session to provision devices")
        }
        let exempt = configuration.rateLimit <= 0 || configuration.rateLimitExempt.contains(who.user)
        let limit = configuration.rateLimit, window = configuration.rateWindow.seconds
        let cap = t.plan.deviceCap

        // Cheap pre-checks, so a request that must fail does not allocate an address first. They
        // are repeated, authoritatively, inside the transaction below. With no cap and no rate
        // limit there is nothing to check, and no transaction is opened.
        if cap != nil || !exempt {
            try await read { tx in
                if let cap {
                    let used = try tx.queryFirst("SELECT count(*) AS n FROM devices WHERE tenant_id = $1", who.tenant)!.decode("n", as: Int.self)
                    if used >= cap { throw MeshError.quotaExceeded(plan: t.plan, cap: cap) }
                }
                if !exempt { try Self.checkRate(tx, user: who.user, limit: limit, window: window) }
            }
        }
        phases.lap(.precheck)

        let deviceID = UUID()
        let keys = WireGuardKeyPair.generate()
        phases.lap(.keygen)
        let lease = try await allocator.allocate(tenantID: who.tenant.lowercased, ownerID: deviceID.lowercased, kind: .device, requestID: requestID)
        phases.lap(.allocate)
        let ipv4 = lease.lease.ipv4, ipv6 = lease.lease.ipv6
        let domain = configuration.meshDomain
        let deviceType = req.type
        let committed: (slug: String, revision: UInt64, nodes: [ConfigNode], ranges: [IPPrefix], row: Row)
        do {
            committed = try await run { tx in
                // Round trip 1 (BEGIN rides along): lock the tenant row — it serialises every change
                // of this tenant: cap, slug, revision — then read under the lock all the decisions need.
                let slugBase = Slug.make(label, fallback: deviceType.key)
                var reads = [
                    Statement("SELECT plan, device_ranges FROM tenants WHERE id = $1 FOR UPDATE", who.tenant),
                    Self.slugStatement(tenant: who.tenant, base: slugBase),
                    Statement("SELECT slug, public_key, endpoint, ipv4, ipv6 FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id", who.tenant),
                ]
                let countsDevices = cap != nil
                if countsDevices { reads.append(Statement("SELECT count(*) AS n FROM devices WHERE tenant_id = $1", who.tenant)) }
                if !exempt {
                    // The user row lock makes the sliding window exact across replicas.
                    reads.append(Statement("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", who.user))
                    reads.append(Self.rateStatement(user: who.user, window: window))
                }
                let r = try tx.batch(reads)
                guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
                let plan = Mesh_V1_Plan(key: try trow.decode("plan")) ?? .free
                if let cap = plan.deviceCap {
                    // (A plan changed to a capped one since the read above was not counted in the batch.)
                    let used = countsDevices
                        ? try r[3].rows[0].decode("n", as: Int.self)
                        : try tx.queryFirst("SELECT count(*) AS n FROM devices WHERE tenant_id = $1", who.tenant)!.decode("n", as: Int.self)
                    if used >= cap { throw MeshError.quotaExceeded(plan: plan, cap: cap) }
                }
                if !exempt { try Self.checkRate(r[r.count - 1], limit: limit) }
                let slug = try Self.freeSlug(r[1], base: slugBase)
                let nodes = try r[2].rows.map { r in
                    ConfigNode(name: try r.decode("slug"), dnsName: "\(try r.decode("slug", as: String.self)).\(domain)",
                               publicKey: try r.decode("public_key"), endpoint: try r.decode("endpoint"),
                               ipv4: IPv4Address(try r.decode("ipv4", as: String.self))!, ipv6: IPv6Address(try r.decode("ipv6", as: String.self))!)
                }
                let ranges = (try trow.decode("device_ranges", as: String.self)).split(separator: ",").compactMap { IPPrefix(String($0)) }

                // Round trip 2: every write, in order. COMMIT is the third and last.
                var writes: [Statement] = []
                if !exempt {
                    writes.append(Statement("INSERT INTO provision_events (user_id, at) VALUES ($1, now())", who.user))
                    writes.append(Statement("DELETE FROM provision_events WHERE user_id = $1 AND at < now() - make_interval(secs => $2)", who.user, window))
                }
                let first = writes.count
                writes.append(Statement("INSERT INTO mesh_names (tenant_id, slug, owner_id) VALUES ($1, $2, $3)", who.tenant, slug, deviceID))
                writes.append(Statement("""
                    INSERT INTO devices (id, tenant_id, owner_user_id, label, slug, type, public_key, ipv4, ipv6)
                    VALUES ($1, $3, $4, $5, $6, $7, $8, $9, $10)
                    RETURNING \(Self.deviceColumns)
                    """, deviceID, 0.0, who.tenant, who.user, label, slug, deviceType.key, keys.publicKey, ipv4, ipv6))
                // Confirm the lease in the same transaction: from now on the address is published.
                writes.append(Statement("UPDATE leases SET confirmed = true WHERE tenant_id = $1 AND owner_id = $2", who.tenant, deviceID))
                let peer = Mapping.devicePeer(id: deviceID, publicKey: keys.publicKey, ipv4: ipv4, ipv6: ipv6, slug: slug, domain: domain)
                writes += try Outbox.statements(tenant: who.tenant, op: "added", peer: peer)
                writes.append(Audit.statement(tenant: who.tenant, actor: "user:\(who.user.lowercased)", action: "device.create",
                                              target: deviceID.lowercased, requestID: requestID,
                                              detail: "\(deviceType.key) \"\(label)\" as \(slug).\(domain) at \(ipv4), \(ipv6)"))
                let w = try tx.batch(writes)
                guard let row = w[first + 1].rows.first else { throw MeshError.internal("device insert returned nothing") }
                guard w[first + 2].affectedRows == 1 else {
                    throw MeshError.unavailable("the address lease expired before the device was saved; try again")
                }
                let revision = try Outbox.revision(w[(first + 3)..<(first + 6)])
                return (slug, revision, nodes, ranges, row)
            }
        } catch {
            // Nothing was committed: give the address back at once (it was never published).
            _ = try? await allocator.release(tenantID: who.tenant.lowercased, ownerID: deviceID.lowercased, requestID: requestID)
            throw error
        }

        phases.lap(.commit)

        var device = try Mapping.device(committed.row, domain: domain)
        device.online = false
        let config = renderer.render(privateKey: keys.privateKey, ipv4: IPv4Address(ipv4)!, ipv6: IPv6Address(ipv6)!, label: label,
                                     dnsName: device.dnsName, nodes: committed.nodes, deviceRanges: committed.ranges)
        phases.lap(.config)
        // Level M suits a screen; a long config (many nodes) falls back to L, and one too long
        // even for that is still provisioned, with the .conf as the only way in.
        var svg = "", qrReason = ""
        do {
            svg = try MeshQR.svg(for: config, errorCorrection: .medium)
        } catch {
            do {
                svg = try MeshQR.svg(for: config, errorCorrection: .low)
            } catch {
                qrReason = "the config (\(config.utf8.count) bytes, \(committed.nodes.count) nodes) is too large for a QR code; use the .conf file"
                logger.notice("no QR code for a large config", metadata: ["device.id": "\(deviceID.lowercased)", "error": "\(error)"])
            }
        }
        phases.lap(.qr)
        logger.info("device created", metadata: ["tenant.id": "\(who.tenant.lowercased)", "device.id": "\(deviceID.lowercased)",
                                                 "device.slug": "\(committed.slug)", "revision": "\(committed.revision)", "request.id": "\(requestID)"])
        var resp = Mesh_V1_CreateDeviceResponse()
        resp.device = device
        resp.config = config
        resp.qrSvg = svg
        resp.qrUnavailableReason = qrReason
        return resp
    }

    /// Deletes a device (its owner, or an admin of its tenant). Anyone else gets `notFound`, so that
    /// nothing about other users' or tenants' devices leaks.
    public func deleteDevice(_ req: Mesh_V1_DeleteDeviceRequest) async throws(MeshError) -> Mesh_V1_DeleteDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let who = try await identify(req.caller)
        guard let deviceID = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        let domain = configuration.meshDomain
        let revision = try await run { tx in
            try tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", who.tenant)
            guard let row = try tx.queryFirst("""
                SELECT owner_user_id, public_key, ipv4, ipv6, slug, label FROM devices WHERE id = $1 AND tenant_id = $2
                """, deviceID, who.tenant) else { throw MeshError.notFound("no such device") }
            let owner: UUID = try row.decode("owner_user_id")
            guard who.isAdmin || owner == who.user else { throw MeshError.notFound("no such device") }
            let publicKey: String = try row.decode("public_key"), slug: String = try row.decode("slug")
            try tx.execute("DELETE FROM devices WHERE id = $1", deviceID)
            try tx.execute("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", who.tenant, deviceID)
            try tx.execute("DELETE FROM peer_stats WHERE public_key = $1 AND node_id IN (SELECT id FROM nodes WHERE tenant_id = $2)", publicKey, who.tenant)
            let peer = Mapping.devicePeer(id: deviceID, publicKey: publicKey, ipv4: try row.decode("ipv4"), ipv6: try row.decode("ipv6"),
                                          slug: slug, domain: domain)
            let revision = try Outbox.append(tx, tenant: who.tenant, op: "removed", peer: peer)
            try Audit.write(tx, tenant: who.tenant, actor: "user:\(who.user.lowercased)", action: "device.delete", target: deviceID.lowercased,
                            requestID: requestID, detail: "\"\(try row.decode("label", as: String.self))\" (\(slug).\(domain))")
            return revision
        }
        await releaseAfterDelete(tenant: who.tenant, owner: deviceID, requestID: requestID)
        logger.info("device deleted", metadata: ["tenant.id": "\(who.tenant.lowercased)", "device.id": "\(deviceID.lowercased)", "revision": "\(revision)"])
        var resp = Mesh_V1_DeleteDeviceResponse()
        resp.revision = revision
        return resp
    }

    /// Gives a device a new label and slug (so a new DNS name). Published as a `changed` peer; the
    /// old name stops resolving on every node once they apply it.
    public func renameDevice(_ req: Mesh_V1_RenameDeviceRequest) async throws(MeshError) -> Mesh_V1_RenameDeviceResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let label = try Slug.validateLabel(req.label)
        let who = try await identify(req.caller)
        guard let deviceID = UUID(text: req.deviceID) else { throw .notFound("no such device") }
        let domain = configuration.meshDomain, online = configuration.onlineWindow.seconds
        let (row, revision) = try await run { tx in
            try tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", who.tenant)
            guard let cur = try tx.queryFirst("SELECT owner_user_id, type, slug, label FROM devices WHERE id = $1 AND tenant_id = $2",
                                              deviceID, who.tenant) else { throw MeshError.notFound("no such device") }
            let owner: UUID = try cur.decode("owner_user_id")
            guard who.isAdmin || owner == who.user else { throw MeshError.notFound("no such device") }
            let type = Mesh_V1_DeviceType(key: try cur.decode("type")) ?? .other
            let oldSlug: String = try cur.decode("slug"), oldLabel: String = try cur.decode("label")
            try tx.execute("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", who.tenant, deviceID)
            let slug = try Self.freeSlug(tx, tenant: who.tenant, base: Slug.make(label, fallback: type.key))
            try tx.execute("INSERT INTO mesh_names (tenant_id, slug, owner_id) VALUES ($1, $2, $3)", who.tenant, slug, deviceID)
            guard let row = try tx.queryFirst("""
                UPDATE devices SET label = $3, slug = $4 WHERE id = $1 AND tenant_id = $5
                RETURNING \(Self.deviceColumns)
                """, deviceID, online, label, slug, who.tenant) else { throw MeshError.notFound("no such device") }
            var revision: UInt64 = 0
            if slug != oldSlug {
                let peer = Mapping.devicePeer(id: deviceID, publicKey: try row.decode("public_key"), ipv4: try row.decode("ipv4"),
                                              ipv6: try row.decode("ipv6"), slug: slug, domain: domain)
                revision = try Outbox.append(tx, tenant: who.tenant, op: "changed", peer: peer)
            }
            try Audit.write(tx, tenant: who.tenant, actor: "user:\(who.user.lowercased)", action: "device.rename", target: deviceID.lowercased,
                            requestID: requestID, detail: "\"\(oldLabel)\" (\(oldSlug)) to \"\(label)\" (\(slug))")
            return (row, revision)
        }
        var resp = Mesh_V1_RenameDeviceResponse()
        resp.device = try Mapping.device(row, domain: domain)
        resp.revision = revision
        return resp
    }

    /// Owners see their own devices; admins see the whole tenant.
    ///
    /// One statement in autocommit, so one round trip: the caller's check (the user exists in the
    /// tenant, and its role) and the device rows come from the same snapshot. No row at all means
    /// an unknown user; a row without a device id is a known user with nothing to list.
    public func listDevices(_ req: Mesh_V1_ListDevicesRequest) async throws(MeshError) -> [Mesh_V1_Device] {
        let tenant = try Validate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let user = try Validate.uuid(req.caller.userID, field: "caller.user_id")
        let online = configuration.onlineWindow.seconds
        let rows: [Row]
        do {
            rows = try await store.query("""
                WITH caller AS (SELECT role FROM users WHERE id = $3 AND tenant_id = $1)
                SELECT caller.role AS caller_role, \(Self.deviceColumns)
                FROM caller LEFT JOIN devices ON devices.tenant_id = $1 AND (caller.role = 'admin' OR devices.owner_user_id = $3)
                ORDER BY devices.created_at, devices.id
                """, tenant, online, user)
        } catch {
            throw mapStore(error)
        }
        guard let first = rows.first, Mesh_V1_Role(key: (try? first.decode("caller_role", as: String.self)) ?? "") != nil else {
            throw .notFound("unknown user")
        }
        var devices: [Mesh_V1_Device] = []
        devices.reserveCapacity(rows.count)
        for row in rows where (try? row.decodeIfPresent("id", as: String.self)) != nil {
            devices.append(try Mapping.device(row, domain: configuration.meshDomain))
        }
        return devices
    }

    /// Hands the addresses back to AllocatorSvc (quarantined). A failure here leaves the lease in
    /// place; AllocatorSvc's sweeper frees confirmed leases whose owner no longer exists.
    func releaseAfterDelete(tenant: UUID, owner: UUID, requestID: String) async {
        for attempt in 0..<3 {
            do {
                try await allocator.release(tenantID: tenant.lowercased, ownerID: owner.lowercased, requestID: requestID)
                return
            } catch {
                logger.warning("address release failed; will retry", metadata: ["owner.id": "\(owner.lowercased)", "error": "\(error)", "attempt": "\(attempt)"])
                try? await Task.sleep(for: .milliseconds(200 << attempt))
            }
        }
    }

    /// Throws `rateLimited` when the user made `limit` creations within the window.
    static func checkRate(_ tx: borrowing Transaction, user: UUID, limit: Int, window: Double) throws {
        try checkRate(tx.batch([rateStatement(user: user, window: window)])[0], limit: limit)
    }

    /// The sliding-window count of the user's recent creations (``checkRate(_:limit:)`` reads it).
    static func rateStatement(user: UUID, window: Double) -> Statement {
        Statement("""
            SELECT count(*) AS n,
                   ceil(extract(epoch FROM (min(at) + make_interval(secs => $2) - now())))::bigint AS retry
            FROM provision_events WHERE user_id = $1 AND at > now() - make_interval(secs => $2)
            """, user, window)
    }

    /// Throws `rateLimited` when ``rateStatement(user:window:)`` counted `limit` creations or more.
    static func checkRate(_ result: QueryResult, limit: Int) throws {
        let row = result.rows[0]
        if try row.decode("n", as: Int.self) >= limit {
            let retry = max(1, try row.decodeIfPresent("retry", as: Int.self) ?? 1)
            throw MeshError.rateLimited(retryAfterSeconds: retry)
        }
    }

    /// The first free slug of `base`, `base-2`, `base-3`, … among the tenant's device and node names.
    /// Called with the tenant row locked, so nobody takes it before the insert.
    static func freeSlug(_ tx: borrowing Transaction, tenant: UUID, base: String) throws -> String {
        try freeSlug(tx.batch([slugStatement(tenant: tenant, base: base)])[0], base: base)
    }

    /// The tenant's names that `base` or a suffixed form of it could collide with.
    static func slugStatement(tenant: UUID, base: String) -> Statement {
        Statement("SELECT slug FROM mesh_names WHERE tenant_id = $1 AND slug LIKE $2", tenant, String(base.prefix(40)) + "%")
    }

    /// The first free slug of `base` given the result of ``slugStatement(tenant:base:)``.
    static func freeSlug(_ taken: QueryResult, base: String) throws -> String {
        let names = Set(try taken.rows.map { try $0.decode("slug", as: String.self) })
        var n = 1
        while names.contains(Slug.withSuffix(base, n)) { n += 1 }
        return Slug.withSuffix(base, n)
    }
}

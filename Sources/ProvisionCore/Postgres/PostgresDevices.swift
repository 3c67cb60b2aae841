import Foundation
import MeshDomain
import MeshNet
import MeshProto
import MeshStore

extension PostgresProvisionStore: DeviceRepository {
    public func creationCounts(tenant: UUID, user: UUID, window: Duration?) async throws(MeshError) -> (devices: Int, recent: Int, oldest: Date?, now: Date) {
        let rows = try await query("""
            SELECT (SELECT device_count FROM tenants WHERE id = $1) AS used,
                   count(e.at) AS recent, min(e.at) AS oldest, now() AS now
            FROM (SELECT at FROM provision_events WHERE user_id = $2 AND $3::float8 > 0 AND at > now() - make_interval(secs => $3::float8)) e
            """, tenant, user, window?.seconds ?? 0)
        do {
            guard let r = rows.first else { return (0, 0, nil, Date()) }
            return (try r.decode("used"), try r.decode("recent"), try r.decodeIfPresent("oldest"), try r.decode("now"))
        } catch {
            throw map(error)
        }
    }

    /// The nodes a new config can list, oldest first: the hub and the `config_max_nodes` oldest (all
    /// that `PeerCatalog.deviceConfig` reads), not every node of the tenant: with 10,000 nodes, reading
    /// them all under the tenant row lock was most of a device creation.
    static let configNodesQuery: SQL = """
        SELECT \(nodeColumns) FROM nodes WHERE tenant_id = $1
           AND (id = (SELECT hub_node_id FROM tenants WHERE id = $1)
                OR id IN (SELECT id FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id
                          LIMIT (SELECT config_max_nodes FROM tenants WHERE id = $1)))
         ORDER BY created_at, id
        """

    /// The tenant's names that a new name made from `base` could collide with (``Slug/collisionRange(_:)``:
    /// a range, so the `(tenant_id, slug text_pattern_ops)` index serves it in every plan).
    static func takenNamesStatement(tenant: UUID, base: String) -> Statement {
        let range = Slug.collisionRange(base)
        return Statement("SELECT slug FROM mesh_names WHERE tenant_id = $1 AND slug ~>=~ $2 AND slug ~<~ $3", tenant, range.lower, range.upper)
    }

    /// ``takenNamesStatement(tenant:base:)`` run in `tx`.
    static func takenNames(_ tx: borrowing Transaction, tenant: UUID, base: String) throws -> Set<String> {
        Set(try tx.batch([takenNamesStatement(tenant: tenant, base: base)])[0].rows.map { try $0.decode("slug", as: String.self) })
    }

    /// The reads a device decision needs, as statements of one batch (with the tenant row lock first),
    /// and the state built from their results.
    static func decisionReads(tenant: UUID, user: UUID, slugBase: String, window: Duration?) -> [Statement] {
        var reads = [
            Statement("SELECT \(tenantColumns), device_count AS used, now() AS now FROM tenants WHERE id = $1 FOR UPDATE", tenant),
            takenNamesStatement(tenant: tenant, base: slugBase),
            Statement(configNodesQuery, tenant),
        ]
        if let window {
            // The user row lock makes the sliding window exact across replicas.
            reads.append(Statement("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user))
            reads.append(Statement("""
                SELECT count(*) AS n, min(at) AS oldest FROM provision_events WHERE user_id = $1 AND at > now() - make_interval(secs => $2)
                """, user, window.seconds))
        }
        return reads
    }

    static func decisionState(_ r: [QueryResult], windowed: Bool) throws -> (TenantRecord, [NodeRecord], DeviceCreationState) {
        guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
        let t = try tenant(trow)
        let nodes = try r[2].rows.map(node)
        let rate = windowed ? r[4].rows.first : nil
        let state = DeviceCreationState(
            plan: t.plan, settings: t.settings, devicesUsed: try trow.decode("used"),
            recentCreations: try rate?.decode("n") ?? 0, oldestRecentCreation: try rate?.decodeIfPresent("oldest"),
            takenNames: Set(try r[1].rows.map { try $0.decode("slug", as: String.self) }), nodesByAge: nodes.map(\.member),
            configMaxNodes: t.configMaxNodes, now: try trow.decode("now"), defaultLifetimeSeconds: t.deviceLifetimeSeconds)
        return (t, nodes, state)
    }

    public func createDevice(_ draft: DeviceDraft,
                             decide: @escaping @Sendable (DeviceCreationState) throws(MeshError) -> DeviceCreationDecision) async throws(MeshError) -> WrittenDevice {
        try await write { tx in
            // Round trip 1 (BEGIN rides along): lock the tenant row (it serialises every change of the
            // tenant: cap, slug, revision) and read everything the rules need.
            let c = draft.caller
            let (tenantRecord, nodes, state) = try Self.decisionState(
                try tx.batch(Self.decisionReads(tenant: c.tenant, user: c.user, slugBase: draft.slugBase, window: draft.rateWindow)),
                windowed: draft.rateWindow != nil)
            let decision = try decide(state)
            let listed = decision.config.compactMap { p in nodes.first { $0.id.lowercased == p.node.id }?.listed }
            var device = DeviceRecord(id: draft.id, tenant: c.tenant, owner: c.user, label: draft.label, slug: decision.slug, type: draft.type,
                                      ipv4: draft.ipv4, ipv6: draft.ipv6, publicKey: draft.publicKey, createdAt: state.now, lastHandshake: nil,
                                      rxBytes: 0, txBytes: 0, endpoint: nil, configHubID: decision.hubID, configNodeIDs: listed.map(\.id), configOutdated: nil,
                                      ownerRole: c.role)
            device.lifecycle.expiresAt = decision.expiresAt

            // Round trip 2: every write, in order. COMMIT is the third and last.
            var writes: [Statement] = []
            if let window = draft.rateWindow {
                writes.append(Statement("INSERT INTO provision_events (user_id, at) VALUES ($1, now())", c.user))
                writes.append(Statement("DELETE FROM provision_events WHERE user_id = $1 AND at < now() - make_interval(secs => $2)",
                                        c.user, window.seconds))
            }
            let first = writes.count
            writes.append(Statement("INSERT INTO mesh_names (tenant_id, slug, owner_id) VALUES ($1, $2, $3)", c.tenant, decision.slug, draft.id))
            writes.append(Statement("""
                INSERT INTO devices (id, tenant_id, owner_user_id, label, slug, type, public_key, ipv4, ipv6, config_hub_id, config_nodes,
                                     expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12) RETURNING created_at
                """, draft.id, c.tenant, c.user, draft.label, decision.slug, draft.type.key, draft.publicKey, draft.ipv4, draft.ipv6,
                UUID(text: decision.hubID), Self.json(listed), decision.expiresAt))
            writes.append(Self.dropHoldStatement(owner: draft.id))
            writes += try Outbox.statements(tenant: c.tenant, change: .upsert(device.member()))
            writes.append(Self.auditStatement(AuditEvent(
                tenant: c.tenant, actor: c.actor, action: "device.create", target: draft.id.lowercased, requestID: draft.requestID,
                detail: "\(draft.type.key) \"\(draft.label)\" as \(MeshName.dnsName(slug: decision.slug, domain: tenantRecord.domain)) at \(draft.ipv4), \(draft.ipv6)"
                    + (decision.expiresAt.map { ", expires \(Timestamp.iso(ms: $0.unixMilliseconds))" } ?? ""))))
            let w = try tx.batch(writes)
            if let created = try w[first + 1].rows.first?.decode("created_at", as: Date.self) { device.createdAt = created }
            // The hold is gone only if the lease keeper took it as overdue: its release may already be
            // on its way, so this device must not be saved with these addresses.
            guard w[first + 2].affectedRows == 1 else {
                throw MeshError.unavailable("the address hold expired before the device was saved; try again")
            }
            let revision = try Outbox.revision(w[(first + 3)..<(first + 3 + Outbox.statementCount)])
            var t = tenantRecord
            t.revision = revision
            return WrittenDevice(device: device, tenant: t, config: decision.config, revision: revision)
        }
    }

    /// Locks the tenant and reads a device of it.
    static func lockedDevice(_ tx: borrowing Transaction, _ id: UUID, tenant: UUID) throws -> (TenantRecord, DeviceRecord) {
        let r = try tx.batch([
            Statement("SELECT \(tenantColumns) FROM tenants WHERE id = $1 FOR UPDATE", tenant),
            Statement("SELECT \(deviceColumns) FROM devices WHERE id = $1 AND tenant_id = $2", id, tenant),
        ])
        guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
        guard let drow = r[1].rows.first else { throw MeshError.notFound("no such device") }
        return (try Self.tenant(trow), try Self.device(drow))
    }

    public func deleteDevice(_ id: UUID, caller: CallerIdentity, requestID: String,
                             authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void) async throws(MeshError) -> (DeviceRecord, UInt64) {
        try await write { tx in
            let (t, d) = try Self.lockedDevice(tx, id, tenant: caller.tenant)
            try authorize(d)
            let removal = Mesh_V1_MemberRemoval(id: id.lowercased, kind: .device, publicKey: d.publicKey)
            var writes = [
                Statement("DELETE FROM devices WHERE id = $1", id),
                Statement("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", caller.tenant, id),
                Statement("DELETE FROM peer_stats WHERE public_key = $1 AND node_id IN (SELECT id FROM nodes WHERE tenant_id = $2)",
                          d.publicKey, caller.tenant),
                Self.releaseStatement(owner: id, tenant: caller.tenant),
            ]
            let first = writes.count
            writes += try Outbox.statements(tenant: caller.tenant, change: .remove(removal))
            writes.append(Self.auditStatement(AuditEvent(
                tenant: caller.tenant, actor: caller.actor, action: "device.delete", target: id.lowercased, requestID: requestID,
                detail: "\"\(d.label)\" (\(MeshName.dnsName(slug: d.slug, domain: t.domain)))")))
            let w = try tx.batch(writes)
            return (d, try Outbox.revision(w[first..<(first + Outbox.statementCount)]))
        }
    }

    public func renameDevice(_ id: UUID, caller: CallerIdentity, label: String, slugBase: String, requestID: String,
                             authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void) async throws(MeshError) -> (DeviceRecord, TenantRecord, UInt64?) {
        try await write { tx in
            let (t, cur) = try Self.lockedDevice(tx, id, tenant: caller.tenant)
            try authorize(cur)
            try tx.execute("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", caller.tenant, id)
            let taken = try Self.takenNames(tx, tenant: caller.tenant, base: slugBase)
            let slug = Slug.firstFree(slugBase, taken: taken)
            var d = cur
            d.label = label
            d.slug = slug
            var writes = [
                Statement("INSERT INTO mesh_names (tenant_id, slug, owner_id) VALUES ($1, $2, $3)", caller.tenant, slug, id),
                Statement("UPDATE devices SET label = $2, slug = $3 WHERE id = $1", id, label, slug),
                Self.auditStatement(AuditEvent(
                    tenant: caller.tenant, actor: caller.actor, action: "device.rename", target: id.lowercased, requestID: requestID,
                    detail: "\"\(cur.label)\" (\(cur.slug)) to \"\(label)\" (\(slug))")),
            ]
            guard slug != cur.slug else {
                try tx.batch(writes)
                return (d, t, nil)
            }
            let first = writes.count
            writes += try Outbox.statements(tenant: caller.tenant, change: .upsert(d.member()))
            let w = try tx.batch(writes)
            var after = t
            after.revision = try Outbox.revision(w[first..<(first + Outbox.statementCount)])
            return (d, after, after.revision)
        }
    }

    public func changeLifecycle(_ id: UUID, caller: CallerIdentity,
                                change: @escaping @Sendable (DeviceRecord, Date) throws(MeshError) -> LifecycleChange?) async throws(MeshError)
        -> (DeviceRecord, TenantRecord, UInt64?) {
        try await write { tx in
            // Round trip 1: lock the tenant (it orders every change of its mesh) and read the device
            // and the clock the rules decide with.
            let r = try tx.batch([
                Statement("SELECT \(Self.tenantColumns), now() AS now FROM tenants WHERE id = $1 FOR UPDATE", caller.tenant),
                Statement("SELECT \(Self.deviceColumns) FROM devices WHERE id = $1 AND tenant_id = $2", id, caller.tenant),
            ])
            guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            guard let drow = r[1].rows.first else { throw MeshError.notFound("no such device") }
            var t = try Self.tenant(trow)
            let before = try Self.device(drow)
            guard let decided = try change(before, try trow.decode("now")) else { return (before, t, nil) }
            var after = before
            after.lifecycle = decided.lifecycle
            // Round trip 2: the lifecycle, the audit entry and, when the device joins or leaves the
            // mesh, its change for the nodes.
            var writes = [Self.lifecycleStatement(id, decided.lifecycle), Self.auditStatement(decided.audit)]
            let publish = after.member() != before.member()
            if publish { writes += try Outbox.statements(tenant: caller.tenant, change: .upsert(after.member())) }
            let w = try tx.batch(writes)
            guard publish else { return (after, t, nil) }
            t.revision = try Outbox.revision(w[2..<(2 + Outbox.statementCount)])
            return (after, t, t.revision)
        }
    }

    public func expireDevices(limit: Int, expire: @escaping @Sendable (DeviceLifecycle, Date) -> DeviceLifecycle?) async throws(MeshError)
        -> [ExpiredDevice] {
        // The tenants with due devices (no lock: only a hint where to look).
        let due = try await query("""
            SELECT DISTINCT tenant_id FROM devices WHERE suspended_at IS NULL AND expires_at <= now() LIMIT $1
            """, limit)
        var expired: [ExpiredDevice] = []
        for row in due {
            let tenant: UUID
            do {
                tenant = try row.decode("tenant_id")
            } catch {
                throw map(error)
            }
            expired += try await write { tx in
                // The tenant lock orders this with every other change of the tenant, a concurrent sweep
                // included: a replica that waited for it reads the devices again (a new snapshot per
                // statement) and finds them suspended already. SKIP LOCKED passes over a device another
                // transaction holds (a handshake report); the next sweep takes it.
                let r = try tx.batch([
                    Statement("SELECT \(Self.tenantColumns), now() AS now FROM tenants WHERE id = $1 FOR UPDATE", tenant),
                    Statement("""
                        SELECT \(Self.deviceColumns) FROM devices
                        WHERE tenant_id = $1 AND suspended_at IS NULL AND expires_at <= now()
                        ORDER BY expires_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
                        """, tenant, limit),
                ])
                guard let trow = r[0].rows.first else { return [] }
                let t = try Self.tenant(trow)
                let now: Date = try trow.decode("now")
                var writes: [Statement] = [], suspended: [(UUID, Int)] = []
                for drow in r[1].rows {
                    let d = try Self.device(drow)
                    guard let next = expire(d.lifecycle, now) else { continue }
                    var after = d
                    after.lifecycle = next
                    writes.append(Self.lifecycleStatement(d.id, next))
                    writes.append(Self.auditStatement(AuditEvent(
                        tenant: tenant, actor: "system", action: "device.expire", target: d.id.lowercased, requestID: "",
                        detail: "\"\(d.label)\" (\(MeshName.dnsName(slug: d.slug, domain: t.domain))) expired at \(Timestamp.iso(ms: (d.lifecycle.expiresAt ?? now).unixMilliseconds)) and was suspended")))
                    suspended.append((d.id, writes.count))
                    writes += try Outbox.statements(tenant: tenant, change: .upsert(after.member()))
                }
                guard !writes.isEmpty else { return [] }
                let w = try tx.batch(writes)
                return try suspended.map { id, at in
                    ExpiredDevice(tenant: tenant, device: id, revision: try Outbox.revision(w[at..<(at + Outbox.statementCount)]))
                }
            }
        }
        return expired
    }

    public func reissueDevice(_ id: UUID, caller: CallerIdentity, publicKey: String, rateWindow: Duration?, requestID: String,
                              authorize: @escaping @Sendable (DeviceRecord) throws(MeshError) -> Void,
                              decide: @escaping @Sendable (DeviceCreationState, DeviceRecord) throws(MeshError) -> DeviceCreationDecision)
        async throws(MeshError) -> WrittenDevice {
        try await write { tx in
            let c = caller
            var reads = [
                Statement("SELECT \(Self.tenantColumns), now() AS now FROM tenants WHERE id = $1 FOR UPDATE", c.tenant),
                Statement("SELECT \(Self.deviceColumns) FROM devices WHERE id = $1 AND tenant_id = $2", id, c.tenant),
                Statement(Self.configNodesQuery, c.tenant),
            ]
            if let window = rateWindow {
                reads.append(Statement("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", c.user))
                reads.append(Statement("""
                    SELECT count(*) AS n, min(at) AS oldest FROM provision_events WHERE user_id = $1 AND at > now() - make_interval(secs => $2)
                    """, c.user, window.seconds))
            }
            let r = try tx.batch(reads)
            guard let trow = r[0].rows.first else { throw MeshError.notFound("unknown tenant") }
            guard let drow = r[1].rows.first else { throw MeshError.notFound("no such device") }
            var t = try Self.tenant(trow)
            let old = try Self.device(drow)
            try authorize(old)
            let nodes = try r[2].rows.map(Self.node)
            let rate = rateWindow != nil ? r[4].rows.first : nil
            let state = DeviceCreationState(
                plan: t.plan, settings: t.settings, devicesUsed: 0, recentCreations: try rate?.decode("n") ?? 0,
                oldestRecentCreation: try rate?.decodeIfPresent("oldest"), takenNames: [], nodesByAge: nodes.map(\.member),
                configMaxNodes: t.configMaxNodes, now: try trow.decode("now"), defaultLifetimeSeconds: t.deviceLifetimeSeconds)
            let decision = try decide(state, old)
            let listed = decision.config.compactMap { p in nodes.first { $0.id.lowercased == p.node.id }?.listed }
            var device = old
            device.publicKey = publicKey
            device.configHubID = decision.hubID
            device.configNodeIDs = listed.map(\.id)
            device.configOutdated = nil
            var writes: [Statement] = []
            // A tenant's default lifetime renews the device with its new config.
            if let renewed = decision.lifecycle {
                device.lifecycle = renewed
                writes.append(Self.lifecycleStatement(id, renewed))
            }
            if let window = rateWindow {
                writes.append(Statement("INSERT INTO provision_events (user_id, at) VALUES ($1, now())", c.user))
                writes.append(Statement("DELETE FROM provision_events WHERE user_id = $1 AND at < now() - make_interval(secs => $2)",
                                        c.user, window.seconds))
            }
            writes.append(Statement("""
                UPDATE devices SET public_key = $2, config_hub_id = $3, config_nodes = $4::jsonb, config_outdated = NULL WHERE id = $1
                """, id, publicKey, UUID(text: decision.hubID), Self.json(listed)))
            writes.append(Statement("DELETE FROM peer_stats WHERE public_key = $1 AND node_id IN (SELECT id FROM nodes WHERE tenant_id = $2)",
                                    old.publicKey, c.tenant))
            let first = writes.count
            writes += try Outbox.statements(tenant: c.tenant, change: .upsert(device.member()))
            writes.append(Self.auditStatement(AuditEvent(
                tenant: c.tenant, actor: c.actor, action: "device.reissue", target: id.lowercased, requestID: requestID,
                detail: "\"\(old.label)\" (\(MeshName.dnsName(slug: old.slug, domain: t.domain))): new key and config\(old.configOutdated.map { " (was outdated: \($0))" } ?? "")")))
            let w = try tx.batch(writes)
            t.revision = try Outbox.revision(w[first..<(first + Outbox.statementCount)])
            return WrittenDevice(device: device, tenant: t, config: decision.config, revision: t.revision)
        }
    }

    public func device(_ id: UUID, tenant: UUID) async throws(MeshError) -> DeviceRecord? {
        let rows = try await query("SELECT \(Self.deviceColumns) FROM devices WHERE id = $1 AND tenant_id = $2", id, tenant)
        do {
            return try rows.first.map(Self.device)
        } catch {
            throw map(error)
        }
    }

    /// One statement in autocommit, so one round trip: the caller's check (the user exists in the
    /// tenant, its role and status, its session or token), the tenant and one page of device rows
    /// (with their owners' roles and names) come from the same snapshot. One row, the header, holds
    /// the caller and the tenant and no device; each further row holds one device and nothing else,
    /// so the tenant's columns are sent once, not once per device. No row at all means an unknown
    /// user. One device more than the page is read, to know whether another page follows.
    ///
    /// The header and the devices are two branches of a `UNION ALL`, and the devices come out of
    /// their index already in order, so PostgreSQL neither materialises nor sorts the page (0.164
    /// against 0.208 ms for the statement with a full join and a sort; docs/benchmarks.md). SQL
    /// does not promise the order of a `UNION ALL`'s rows, so the header is found by its columns
    /// and the devices are put in order here if they ever come out of it.
    public func devices(visibleTo user: UUID, tenant: UUID, credential: CallerCredential, query q: DeviceQuery) async throws(MeshError)
        -> (CallerLookup, DevicePage?) {
        let (session, token) = Self.ids(credential)
        let rows = try await query("""
            WITH h AS MATERIALIZED (
                   SELECT c.role AS u_role, c.status AS u_status, t.plan AS t_plan, now() AS now,
                          s.id AS s_id, s.ended_at AS s_ended, s.expires_at AS s_expires, s.amr AS s_amr, s.provider AS s_provider,
                          k.id AS k_id, k.revoked_at AS k_revoked, k.expires_at AS k_expires,
                          t.id AS t_id, t.name AS t_name, t.require_saml AS t_require_saml,
                          t.ipv4_prefix AS t_ipv4_prefix, t.ipv6_prefix AS t_ipv6_prefix, t.domain AS t_domain,
                          t.node_keepalive AS t_node_keepalive, t.device_keepalive AS t_device_keepalive, t.device_mtu AS t_device_mtu,
                          t.config_max_nodes AS t_config_max_nodes, t.dns_resolvers AS t_dns_resolvers, t.hub_node_id AS t_hub_node_id,
                          t.mesh_enabled AS t_mesh_enabled, t.revision AS t_revision, t.created_at AS t_created_at,
                          t.dns_filtered AS t_dns_filtered, t.policy_version AS t_policy_version,
                          t.device_lifetime_seconds AS t_device_lifetime_seconds
                   FROM users c JOIN tenants t ON t.id = c.tenant_id
                   LEFT JOIN sessions s ON s.id = $10 AND s.user_id = c.id
                   LEFT JOIN api_tokens k ON k.id = $11 AND k.user_id = c.id
                   WHERE c.id = $2 AND c.tenant_id = $1),
                 d AS NOT MATERIALIZED (
                   SELECT \(q.listing ? Self.deviceListingColumns : Self.deviceOwnColumns) FROM devices
                   WHERE tenant_id = $1 AND EXISTS (SELECT 1 FROM h)
                     AND ((SELECT u_role FROM h) = 'admin' OR owner_user_id = $2)
                     AND ($3::uuid IS NULL OR owner_user_id = $3)
                     AND ($4::text IS NULL OR type = $4)
                     AND ($5::text IS NULL OR ($5 = 'active' AND suspended_at IS NULL) OR ($5 = 'suspended' AND suspend_reason IN ('user', 'admin'))
                          OR ($5 = 'expired' AND suspend_reason = 'expired'))
                     AND ($6::bigint IS NULL OR (created_at, id) > (timestamptz 'epoch' + $6::bigint * interval '1 microsecond', $7::uuid))
                     AND ($9::uuid IS NULL OR id = $9)
                   ORDER BY created_at, id LIMIT $8)
            SELECT h.*, d.*, NULL::text AS owner_role, NULL::text AS owner_name FROM h LEFT JOIN d ON false
            UNION ALL
            SELECT h.*, d.*, u.role, u.name FROM d LEFT JOIN users u ON u.id = d.owner_user_id LEFT JOIN h ON false
            """, tenant, user, q.owner, q.type?.key, q.status?.key, q.after?.createdMicros, q.after?.id, q.limit.map { $0 + 1 }, q.id, session, token)
        do {
            var header: Row?
            var listed: [(device: DeviceRecord, cursor: DeviceCursor)] = []
            listed.reserveCapacity(rows.count)
            for r in rows {
                guard let id = try r.decodeIfPresent("id", as: UUID.self) else {
                    header = r
                    continue
                }
                var d = try Self.device(r, id: id, listedIn: q.listing ? tenant : nil)
                d.ownerName = try r.decodeIfPresent("owner_name") ?? ""
                // The cursor holds the device's creation time to the microsecond, as stored.
                listed.append((d, DeviceCursor(createdMicros: try r.decode("created_at", as: PGMicroseconds.self).value, id: id)))
            }
            guard let header else {
                return (CallerLookup(identity: nil, status: .active, credential: .init(exists: false), now: Date()), nil)
            }
            let lookup = try Self.lookup(header, tenant: tenant, user: user, credential: credential)
            guard let who = lookup.identity else { return (lookup, nil) }
            let t = try Self.tenant(header, prefix: "t_")
            if zip(listed, listed.dropFirst()).contains(where: { !$0.cursor.precedes($1.cursor) }) { listed.sort { $0.cursor.precedes($1.cursor) } }
            var next: DeviceCursor?
            if let limit = q.limit, listed.count > limit {
                listed.removeLast(listed.count - limit)
                next = listed.last?.cursor
            }
            return (lookup, DevicePage(caller: who, tenant: t, devices: listed.map(\.device), next: next))
        } catch {
            throw map(error)
        }
    }

    public func applyReport(tenant: UUID, node: UUID, peers: [Mesh_V1_PeerStats]) async throws(MeshError) -> (domain: String, changed: [DeviceRecord]) {
        try await write { tx in
            guard try tx.execute("UPDATE nodes SET last_seen_at = now() WHERE id = $1 AND tenant_id = $2", node, tenant) == 1 else {
                throw MeshError.notFound("unknown node")
            }
            var changed: [DeviceRecord] = []
            for p in peers {
                let prev = try tx.queryFirst("SELECT rx_raw, tx_raw FROM peer_stats WHERE node_id = $1 AND public_key = $2 FOR UPDATE", node, p.publicKey)
                let lastRx = try prev?.decode("rx_raw", as: Int64.self) ?? 0, lastTx = try prev?.decode("tx_raw", as: Int64.self) ?? 0
                let rx = Int64(clamping: p.rxBytes), txb = Int64(clamping: p.txBytes)
                // A raw counter that went down was reset (interface or peer re-created): count from zero.
                let dRx = rx >= lastRx ? rx - lastRx : rx, dTx = txb >= lastTx ? txb - lastTx : txb
                let handshake: Date? = p.lastHandshakeMs > 0 ? Date(unixMilliseconds: p.lastHandshakeMs) : nil
                let endpoint: String? = p.endpoint.isEmpty ? nil : p.endpoint
                try tx.execute("""
                    INSERT INTO peer_stats (node_id, public_key, rx_raw, tx_raw, last_handshake_at, endpoint, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, now())
                    ON CONFLICT (node_id, public_key) DO UPDATE SET rx_raw = $3, tx_raw = $4,
                      last_handshake_at = coalesce($5, peer_stats.last_handshake_at), endpoint = coalesce($6, peer_stats.endpoint), updated_at = now()
                    """, node, p.publicKey, rx, txb, handshake, endpoint)
                // The row as it was (locked) and as it is: a new handshake or endpoint is a status change.
                let rows = try tx.query("""
                    UPDATE devices SET rx_bytes = rx_bytes + $3, tx_bytes = tx_bytes + $4,
                      last_handshake_at = greatest(last_handshake_at, $5), endpoint = coalesce($6, endpoint)
                    FROM (SELECT id AS old_id, last_handshake_at AS old_handshake, endpoint AS old_endpoint
                          FROM devices WHERE tenant_id = $1 AND public_key = $2 FOR UPDATE) old
                    WHERE devices.id = old.old_id
                    RETURNING \(Self.deviceColumns),
                      (last_handshake_at IS DISTINCT FROM old.old_handshake OR endpoint IS DISTINCT FROM old.old_endpoint) AS status_changed
                    """, tenant, p.publicKey, dRx, dTx, handshake, endpoint)
                for r in rows where try r.decode("status_changed", as: Bool.self) { changed.append(try Self.device(r)) }
            }
            guard !changed.isEmpty else { return ("", changed) }
            let domain = try tx.queryFirst("SELECT domain FROM tenants WHERE id = $1", tenant)?.decode("domain", as: String.self)
            return (domain ?? TenantDefaults.domain, changed)
        }
    }
}

import Crypto
import Foundation
import Logging
import MeshBusAuth
import MeshCore
import MeshNet
import MeshProto
import MeshStore

extension Provisioner {
    /// The SELECT list `Mapping.node` reads; `hub` marks the tenant's oldest node.
    static let nodeColumns: SQL = """
        id, tenant_id, name, slug, public_key, endpoint, listen_port, ipv4, ipv6,
        (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
        (extract(epoch FROM last_seen_at) * 1000)::bigint AS seen_ms,
        (row_number() OVER (PARTITION BY tenant_id ORDER BY created_at, id) = 1) AS hub
        """

    /// Creates a token that lets a node register into the caller's tenant. Only its SHA-256 is stored.
    public func createEnrollmentToken(_ req: Mesh_V1_CreateEnrollmentTokenRequest) async throws(MeshError) -> Mesh_V1_CreateEnrollmentTokenResponse {
        let who = try await identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("only admins can enroll nodes") }
        let ttl = req.ttlSeconds == 0 ? 3600 : min(Int(req.ttlSeconds), 30 * 86400)
        let uses = req.maxUses == 0 ? 1 : min(Int(req.maxUses), 10_000)
        var raw = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in raw.indices { raw[i] = UInt8.random(in: 0...255, using: &rng) }
        let token = "qme_" + Data(raw).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let hash = ByteA(Array(SHA256.hash(data: Data(token.utf8))))
        let requestID = req.caller.requestID
        let expires: Int64 = try await run { tx in
            let row = try tx.queryFirst("""
                INSERT INTO enrollment_tokens (token_hash, tenant_id, created_by, expires_at, uses_left)
                VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)
                RETURNING (extract(epoch FROM expires_at) * 1000)::bigint AS exp
                """, hash, who.tenant, "user:\(who.user.lowercased)", Double(ttl), uses)!
            try Audit.write(tx, tenant: who.tenant, actor: "user:\(who.user.lowercased)", action: "enrollment.create", target: "",
                            requestID: requestID, detail: "\(uses) use(s), valid \(ttl) s")
            return try row.decode("exp")
        }
        var resp = Mesh_V1_CreateEnrollmentTokenResponse()
        resp.token = token
        resp.expiresAtMs = expires
        return resp
    }

    /// Registers a node with its own public key. Idempotent by public key: a node that registers
    /// again (with a valid token) keeps its id and addresses; a changed endpoint is published.
    public func registerNode(_ req: Mesh_V1_RegisterNodeRequest, requestID: String) async throws(MeshError) -> Mesh_V1_RegisterNodeResponse {
        let name = try Validate.name(req.name, field: "name")
        try WireGuardKeyPair.validatePublicKey(req.publicKey)
        let endpoint = try Validate.endpoint(req.endpoint).description
        guard (1...65535).contains(req.listenPort) else { throw .invalidArgument(field: "listen_port", message: "listen_port must be 1 to 65535") }
        guard !req.enrollmentToken.isEmpty else { throw .unauthenticated("an enrollment token is required") }
        let busKey = req.busPublicKey.trimmingCharacters(in: .whitespaces)
        if busIdentities != nil {
            guard NKeyCodec.kind(ofPublicKey: busKey) == .user else {
                throw .invalidArgument(field: "bus_public_key", message: "bus_public_key must be the node's own NATS user public key (U...)")
            }
        }
        let hash = ByteA(Array(SHA256.hash(data: Data(req.enrollmentToken.utf8))))
        let tokenRow = try await read { tx in
            try tx.queryFirst("SELECT tenant_id FROM enrollment_tokens WHERE token_hash = $1 AND uses_left > 0 AND expires_at > now()", hash)
        }
        guard let tokenRow, let tenant = try? tokenRow.decode("tenant_id", as: UUID.self) else {
            throw .unauthenticated("invalid or expired enrollment token")
        }
        let existing = try await read { tx in try tx.queryFirst("SELECT id, tenant_id FROM nodes WHERE public_key = $1", req.publicKey) }
        let nodeID: UUID
        if let existing {
            guard (try? existing.decode("tenant_id", as: UUID.self)) == tenant else {
                throw .conflict("that public key belongs to a node of another tenant")
            }
            nodeID = (try? existing.decode("id", as: UUID.self)) ?? UUID()
        } else {
            nodeID = UUID()
        }
        // The node's bus JWT is signed before the transaction (pure computation) and only handed out if it commits.
        let credentials = try busIdentities?.issue(node: nodeID, tenant: tenant, userKey: busKey)
        let withBus = credentials != nil
        if withBus, let holder = try await read({ tx in try tx.queryFirst("SELECT id FROM nodes WHERE bus_public_key = $1", busKey) }),
           (try? holder.decode("id", as: UUID.self)) != nodeID {
            throw .conflict("that bus key belongs to another node")
        }
        if withBus, try await read({ tx in try tx.queryFirst("SELECT 1 AS x FROM bus_revocations WHERE user_key = $1", busKey) }) != nil {
            throw .invalidArgument(field: "bus_public_key", message: "that bus key was revoked; make a new one")
        }
        let lease = try await allocator.allocate(tenantID: tenant.lowercased, ownerID: nodeID.lowercased, kind: .node, requestID: requestID)
        let domain = configuration.meshDomain, keepalive = configuration.persistentKeepalive, listenPort = Int(req.listenPort)
        let publicKey = req.publicKey
        let row: Row
        do {
            row = try await run { tx in
                try tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant)
                guard try tx.execute("""
                    UPDATE enrollment_tokens SET uses_left = uses_left - 1
                    WHERE token_hash = $1 AND tenant_id = $2 AND uses_left > 0 AND expires_at > now()
                    """, hash, tenant) == 1 else { throw MeshError.unauthenticated("invalid or expired enrollment token") }
                if let old = try tx.queryFirst("""
                    SELECT endpoint, listen_port, slug, ipv4, ipv6, bus_public_key, bus_jwt_expires_at FROM nodes WHERE id = $1
                    """, nodeID) {
                    let oldEndpoint: String = try old.decode("endpoint"), oldPort: Int = try old.decode("listen_port")
                    // A node that registers again with a new bus key: its old key stops working.
                    if withBus, let oldKey = try old.decodeIfPresent("bus_public_key", as: String.self), oldKey != busKey {
                        try Self.revokeBusKey(tx, key: oldKey, node: nodeID, pruneAfter: try old.decodeIfPresent("bus_jwt_expires_at", as: Date.self))
                    }
                    try tx.execute("UPDATE nodes SET endpoint = $2, listen_port = $3, name = $4, last_seen_at = now() WHERE id = $1",
                                   nodeID, endpoint, listenPort, name)
                    if withBus {
                        try tx.execute("UPDATE nodes SET bus_public_key = $2, bus_jwt_expires_at = $3 WHERE id = $1",
                                       nodeID, busKey, credentials?.expires)
                    }
                    if oldEndpoint != endpoint || oldPort != listenPort {
                        let peer = Mapping.nodePeer(id: nodeID, publicKey: publicKey, ipv4: try old.decode("ipv4"), ipv6: try old.decode("ipv6"),
                                                    slug: try old.decode("slug"), endpoint: endpoint, keepalive: keepalive, hub: false, domain: domain)
                        try Outbox.append(tx, tenant: tenant, op: "changed", peer: peer)
                    }
                    try Audit.write(tx, tenant: tenant, actor: "node:\(nodeID.lowercased)", action: "node.reregister", target: nodeID.lowercased,
                                    requestID: requestID, detail: "\(name) at \(endpoint)")
                } else {
                    let slug = try Self.freeSlug(tx, tenant: tenant, base: Slug.make(name, fallback: "node"))
                    try tx.execute("INSERT INTO mesh_names (tenant_id, slug, owner_id) VALUES ($1, $2, $3)", tenant, slug, nodeID)
                    try tx.execute("""
                        INSERT INTO nodes (id, tenant_id, name, slug, public_key, endpoint, listen_port, ipv4, ipv6, last_seen_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
                        """, nodeID, tenant, name, slug, publicKey, endpoint, listenPort, lease.lease.ipv4, lease.lease.ipv6)
                    if withBus {
                        try tx.execute("UPDATE nodes SET bus_public_key = $2, bus_jwt_expires_at = $3 WHERE id = $1",
                                       nodeID, busKey, credentials?.expires)
                    }
                    guard try tx.execute("UPDATE leases SET confirmed = true WHERE tenant_id = $1 AND owner_id = $2", tenant, nodeID) == 1 else {
                        throw MeshError.unavailable("the address lease expired before the node was saved; try again")
                    }
                    let hub = try tx.queryFirst("SELECT count(*) AS n FROM nodes WHERE tenant_id = $1", tenant)!.decode("n", as: Int.self) == 1
                    let peer = Mapping.nodePeer(id: nodeID, publicKey: publicKey, ipv4: lease.lease.ipv4, ipv6: lease.lease.ipv6, slug: slug,
                                                endpoint: endpoint, keepalive: keepalive, hub: hub, domain: domain)
                    try Outbox.append(tx, tenant: tenant, op: "added", peer: peer)
                    try Audit.write(tx, tenant: tenant, actor: "node:\(nodeID.lowercased)", action: "node.register", target: nodeID.lowercased,
                                    requestID: requestID, detail: "\(name) as \(slug).\(domain) at \(endpoint), \(lease.lease.ipv4)")
                }
                return try tx.queryFirst("SELECT * FROM (SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $2) n WHERE id = $1", nodeID, tenant)!
            }
        } catch {
            if existing == nil {
                _ = try? await allocator.release(tenantID: tenant.lowercased, ownerID: nodeID.lowercased, requestID: requestID)
            }
            throw error
        }
        var resp = Mesh_V1_RegisterNodeResponse()
        resp.node = try Mapping.node(row, domain: domain)
        resp.ipv4Prefix = lease.prefixes.ipv4Prefix
        resp.ipv6Prefix = lease.prefixes.ipv6Prefix
        resp.inboxPrefix = BusPolicy.nodeInboxPrefix(nodeID.lowercased)
        if let credentials {
            resp.busUserJwt = credentials.jwt
            resp.busJwtExpiresAtMs = credentials.expires.map { Int64($0.timeIntervalSince1970 * 1000) } ?? 0
            // The node may have replaced an older key; make sure the server no longer accepts it.
            if existing != nil { await busIdentities?.push(reason: "node re-registered") }
        }
        logger.info("node registered", metadata: ["tenant.id": "\(tenant.lowercased)", "node.id": "\(nodeID.lowercased)", "request.id": "\(requestID)"])
        return resp
    }

    /// Removes a node (an admin of its tenant, or the node itself).
    public func deregisterNode(_ req: Mesh_V1_DeregisterNodeRequest) async throws(MeshError) -> Mesh_V1_DeregisterNodeResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        guard let nodeID = UUID(text: req.nodeID) else { throw .notFound("no such node") }
        let tenant = try Validate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let actor: String
        if !req.caller.nodeID.isEmpty {
            guard req.caller.nodeID.lowercased() == nodeID.lowercased else { throw .notFound("no such node") }
            actor = "node:\(nodeID.lowercased)"
        } else {
            let who = try await identify(req.caller)
            guard who.isAdmin else { throw .permissionDenied("only admins can remove nodes") }
            actor = "user:\(who.user.lowercased)"
        }
        let domain = configuration.meshDomain, keepalive = configuration.persistentKeepalive
        let revision = try await run { tx in
            try tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant)
            guard let row = try tx.queryFirst("""
                SELECT name, slug, public_key, endpoint, ipv4, ipv6, bus_public_key, bus_jwt_expires_at FROM nodes WHERE id = $1 AND tenant_id = $2
                """, nodeID, tenant) else { throw MeshError.notFound("no such node") }
            if let key = try row.decodeIfPresent("bus_public_key", as: String.self) {
                try Self.revokeBusKey(tx, key: key, node: nodeID, pruneAfter: try row.decodeIfPresent("bus_jwt_expires_at", as: Date.self))
            }
            try tx.execute("DELETE FROM nodes WHERE id = $1", nodeID)
            try tx.execute("DELETE FROM mesh_names WHERE tenant_id = $1 AND owner_id = $2", tenant, nodeID)
            let peer = Mapping.nodePeer(id: nodeID, publicKey: try row.decode("public_key"), ipv4: try row.decode("ipv4"), ipv6: try row.decode("ipv6"),
                                        slug: try row.decode("slug"), endpoint: try row.decode("endpoint"), keepalive: keepalive, hub: false, domain: domain)
            let revision = try Outbox.append(tx, tenant: tenant, op: "removed", peer: peer)
            try Audit.write(tx, tenant: tenant, actor: actor, action: "node.deregister", target: nodeID.lowercased, requestID: requestID,
                            detail: try row.decode("name"))
            return revision
        }
        // Cut the node off the bus before answering (a failed push is retried by the service).
        await busIdentities?.push(reason: "node deregistered")
        await releaseAfterDelete(tenant: tenant, owner: nodeID, requestID: requestID)
        var resp = Mesh_V1_DeregisterNodeResponse()
        resp.revision = revision
        return resp
    }

    /// Records that a node's bus key is revoked (pushed to nats-server after the commit).
    static func revokeBusKey(_ tx: borrowing Transaction, key: String, node: UUID, pruneAfter: Date?) throws {
        try tx.execute("""
            INSERT INTO bus_revocations (user_key, node_id, prune_after) VALUES ($1, $2, $3)
            ON CONFLICT (user_key) DO UPDATE SET revoked_at = now()
            """, key, node, pruneAfter)
    }

    /// The tenant's nodes, oldest (the hub) first. Any user of the tenant may list them; a node may
    /// read its own entry with ``node(_:)``.
    public func listNodes(_ req: Mesh_V1_ListNodesRequest) async throws(MeshError) -> [Mesh_V1_Node] {
        let tenant: UUID
        if !req.caller.nodeID.isEmpty {
            tenant = try Validate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        } else {
            tenant = try await identify(req.caller).tenant
        }
        let rows = try await read { tx in
            try tx.query("SELECT \(Self.nodeColumns) FROM nodes WHERE tenant_id = $1 ORDER BY created_at, id", tenant)
        }
        return try rows.map { row throws(MeshError) in try Mapping.node(row, domain: configuration.meshDomain) }
    }

    public func node(_ req: Mesh_V1_GetNodeRequest) async throws(MeshError) -> Mesh_V1_Node {
        let nodes = try await listNodes({ var r = Mesh_V1_ListNodesRequest(); r.caller = req.caller; return r }())
        guard let n = nodes.first(where: { $0.id == req.nodeID.lowercased() }) else { throw .notFound("no such node") }
        if !req.caller.nodeID.isEmpty && req.caller.nodeID.lowercased() != n.id { throw .notFound("no such node") }
        return n
    }
}

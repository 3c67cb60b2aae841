import Crypto
import Foundation
import Logging
import MeshBusAuth
import MeshDomain
import MeshNet
import MeshProto

/// Nodes: enrollment tokens, registration with the node's own keys, removal, listing.
public struct NodeService: Sendable {
    let nodes: any NodeRepository
    let users: UserService
    let leases: any LeaseTaskRepository
    let allocator: any AddressAllocator
    let notifier: any ChangeNotifier
    /// Per-node bus identities, when the bus runs with them (docs/security.md); nil on an open bus.
    let busIdentities: NodeBusIdentities?
    /// A node's live peer dump (its NodeApplier over the bus).
    let probe: @Sendable (String) async throws(MeshError) -> Mesh_V1_PeerDump
    let configuration: ProvisionConfiguration
    let logger: Logger

    public init(nodes: any NodeRepository, users: UserService, leases: any LeaseTaskRepository, allocator: any AddressAllocator,
                notifier: any ChangeNotifier, busIdentities: NodeBusIdentities?,
                probe: @escaping @Sendable (String) async throws(MeshError) -> Mesh_V1_PeerDump,
                configuration: ProvisionConfiguration, logger: Logger) {
        self.probe = probe
        self.nodes = nodes
        self.users = users
        self.leases = leases
        self.allocator = allocator
        self.notifier = notifier
        self.busIdentities = busIdentities
        self.configuration = configuration
        self.logger = logger
    }

    /// Creates a token that lets a node register into the caller's tenant. Only its SHA-256 is stored.
    public func createEnrollmentToken(_ req: Mesh_V1_CreateEnrollmentTokenRequest) async throws(MeshError) -> Mesh_V1_CreateEnrollmentTokenResponse {
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("only admins can enroll nodes") }
        let ttl = req.ttlSeconds == 0 ? 3600 : min(Int(req.ttlSeconds), 30 * 86400)
        let uses = req.maxUses == 0 ? 1 : min(Int(req.maxUses), 10_000)
        var raw = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in raw.indices { raw[i] = UInt8.random(in: 0...255, using: &rng) }
        let token = "qme_" + Data(raw).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        let expires = try await nodes.insertEnrollmentToken(
            hash: Self.hash(token), tenant: who.tenant, createdBy: who.actor, ttl: .seconds(ttl), uses: uses,
            audit: AuditEvent(tenant: who.tenant, actor: who.actor, action: "enrollment.create", target: "", requestID: req.caller.requestID,
                              detail: "\(uses) use(s), valid \(ttl) s"))
        var resp = Mesh_V1_CreateEnrollmentTokenResponse()
        resp.token = token
        resp.expiresAtMs = expires.unixMilliseconds
        return resp
    }

    static func hash(_ token: String) -> [UInt8] { Array(SHA256.hash(data: Data(token.utf8))) }

    /// Registers a node with its own public key. Idempotent by public key: a node that registers
    /// again (with a valid token) keeps its id and addresses; a changed endpoint is published.
    public func register(_ req: Mesh_V1_RegisterNodeRequest, requestID: String) async throws(MeshError) -> Mesh_V1_RegisterNodeResponse {
        let name = try DisplayName.validate(req.name, field: "name")
        try WireGuardKeyText.validatePublicKey(req.publicKey)
        let endpoint = try ProvisionValidate.endpoint(req.endpoint).description
        guard (1...65535).contains(req.listenPort) else { throw .invalidArgument(field: "listen_port", message: "listen_port must be 1 to 65535") }
        guard !req.enrollmentToken.isEmpty else { throw .unauthenticated("an enrollment token is required") }
        let busKey = req.busPublicKey.trimmingCharacters(in: .whitespaces)
        if busIdentities != nil {
            guard NKeyCodec.kind(ofPublicKey: busKey) == .user else {
                throw .invalidArgument(field: "bus_public_key", message: "bus_public_key must be the node's own NATS user public key (U...)")
            }
        }
        let hash = Self.hash(req.enrollmentToken)
        let registeringBusKey = busIdentities == nil ? nil : busKey
        guard let tenant = try await nodes.enrollmentTenant(tokenHash: hash, publicKey: req.publicKey, busKey: registeringBusKey) else { throw .unauthenticated("invalid or expired enrollment token") }
        let existing = try await nodes.node(publicKey: req.publicKey)
        if let existing, existing.tenant != tenant { throw .conflict("that public key belongs to a node of another tenant") }
        let nodeID = existing?.id ?? UUID()
        // The node's bus JWT is signed before the transaction (pure computation) and only handed out if it commits.
        let credentials = try busIdentities?.issue(node: nodeID, tenant: tenant, userKey: busKey)
        if credentials != nil {
            let (holder, revoked) = try await nodes.busKeyHolder(busKey)
            if let holder, holder != nodeID { throw .conflict("that bus key belongs to another node") }
            if revoked { throw .invalidArgument(field: "bus_public_key", message: "that bus key was revoked; make a new one") }
        }
        var addresses: (ipv4: String, ipv6: String)?
        if existing == nil {
            try await leases.holdLease(owner: nodeID, tenant: tenant, due: Date().addingTimeInterval(configuration.leaseHoldSeconds))
            do {
                addresses = try await allocator.allocate(tenant: tenant, owner: nodeID, kind: .node, requestID: requestID)
            } catch {
                await leases.giveBack(tenant: tenant, owner: nodeID, neverPublished: true, via: allocator, requestID: requestID, logger: logger)
                throw error
            }
        }
        let registration = NodeRegistration(name: name, publicKey: req.publicKey, endpoint: endpoint, listenPort: Int(req.listenPort),
                                            busKey: credentials == nil ? nil : busKey, busJWTExpires: credentials?.expires,
                                            tokenHash: hash, requestID: requestID)
        let result: (node: NodeRecord, tenant: TenantRecord, revision: UInt64?, isNew: Bool)
        do {
            result = try await nodes.registerNode(id: nodeID, tenant: tenant, registration, addresses: addresses)
        } catch {
            if existing == nil { await leases.giveBack(tenant: tenant, owner: nodeID, neverPublished: true, via: allocator, requestID: requestID, logger: logger) }
            throw error
        }
        // The node syncs as soon as it has this answer: FanoutSvc must know it by then (also on a retry,
        // whose first attempt may still be on its way).
        await notifier.deliver(tenant: tenant, through: result.revision ?? result.tenant.revision)
        var resp = Mesh_V1_RegisterNodeResponse()
        resp.node = result.node.proto(domain: result.tenant.domain, hubID: result.tenant.hubNodeID)
        resp.ipv4Prefix = result.tenant.ipv4Prefix
        resp.ipv6Prefix = result.tenant.ipv6Prefix
        resp.inboxPrefix = BusPolicy.nodeInboxPrefix(nodeID.lowercased)
        if let credentials {
            resp.busUserJwt = credentials.jwt
            resp.busJwtExpiresAtMs = credentials.expires.map { $0.unixMilliseconds } ?? 0
            // The node may have replaced an older key; make sure the server no longer accepts it.
            if existing != nil { await busIdentities?.push(reason: "node re-registered") }
        }
        logger.info("node registered", metadata: ["tenant.id": "\(tenant.lowercased)", "node.id": "\(nodeID.lowercased)", "request.id": "\(requestID)"])
        return resp
    }

    /// Removes a node (an admin of its tenant, or the node itself). Its bus key is revoked before the
    /// reply.
    public func deregister(_ req: Mesh_V1_DeregisterNodeRequest) async throws(MeshError) -> Mesh_V1_DeregisterNodeResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        guard let nodeID = UUID(text: req.nodeID) else { throw .notFound("no such node") }
        let tenant = try ProvisionValidate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        let actor: String
        if !req.caller.nodeID.isEmpty {
            guard req.caller.nodeID.lowercased() == nodeID.lowercased else { throw .notFound("no such node") }
            actor = "node:\(nodeID.lowercased)"
        } else {
            let who = try await users.identify(req.caller)
            guard who.isAdmin else { throw .permissionDenied("only admins can remove nodes") }
            actor = who.actor
        }
        let (_, revision) = try await nodes.deregisterNode(nodeID, tenant: tenant, actor: actor, requestID: requestID)
        notifier.changed(tenant: tenant)
        // Cut the node off the bus before answering (a failed push is retried by the service).
        await busIdentities?.push(reason: "node deregistered")
        await leases.giveBack(tenant: tenant, owner: nodeID, neverPublished: false, via: allocator, requestID: requestID, logger: logger)
        var resp = Mesh_V1_DeregisterNodeResponse()
        resp.revision = revision
        return resp
    }

    /// Makes a node the tenant's hub (admins). Configs that route through the old hub are marked
    /// outdated; they keep working while the old hub lives (docs/routing.md).
    public func setHub(_ req: Mesh_V1_SetHubRequest) async throws(MeshError) -> Mesh_V1_SetHubResponse {
        let requestID = req.caller.requestID.isEmpty ? UUID().lowercased : req.caller.requestID
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("only admins can choose the hub") }
        guard let id = UUID(text: req.nodeID) else { throw .notFound("no such node") }
        let (n, t, revision) = try await nodes.setHub(id, tenant: who.tenant, actor: who.actor, requestID: requestID)
        if revision != nil { notifier.changed(tenant: who.tenant) }
        var resp = Mesh_V1_SetHubResponse()
        resp.node = n.proto(domain: t.domain, hubID: t.hubNodeID)
        resp.revision = revision ?? t.revision
        return resp
    }

    /// The tenant's nodes, oldest first. Any user of the tenant may list them; a node may read its
    /// own entry with ``get(_:)``.
    public func list(_ req: Mesh_V1_ListNodesRequest) async throws(MeshError) -> [Mesh_V1_Node] {
        let tenant: UUID
        if !req.caller.nodeID.isEmpty {
            tenant = try ProvisionValidate.uuid(req.caller.tenantID, field: "caller.tenant_id")
        } else {
            tenant = try await users.identify(req.caller).tenant
        }
        guard let (t, list) = try await nodes.nodes(tenant: tenant) else { throw .notFound("unknown tenant") }
        return list.map { $0.proto(domain: t.domain, hubID: t.hubNodeID) }
    }

    /// A node's live peer dump for an admin of its tenant, with per-peer stats only on a plan that
    /// includes them (Free gets basic state: keys, allowed IPs, names).
    public func diagnostics(_ req: Mesh_V1_NodeDiagnosticsRequest) async throws(MeshError) -> Mesh_V1_NodeDiagnosticsResponse {
        let who = try await users.identify(req.caller)
        guard who.isAdmin else { throw .permissionDenied("this route is for admins") }
        guard let node = UUID(text: req.nodeID) else { throw .invalidArgument(field: "node_id", message: "node_id must be a UUID") }
        guard let (_, list) = try await nodes.nodes(tenant: who.tenant), list.contains(where: { $0.id == node }) else {
            throw .notFound("no such node")
        }
        guard let policy = who.plan.policy else { throw .internal("tenant has an unknown plan") }
        var dump = try await probe(node.lowercased)
        let stats = policy.includes(.perPeerStats)
        if !stats {
            for i in dump.peers.indices {
                dump.peers[i].endpoint = ""
                dump.peers[i].lastHandshakeMs = 0
                dump.peers[i].rxBytes = 0
                dump.peers[i].txBytes = 0
            }
        }
        var resp = Mesh_V1_NodeDiagnosticsResponse()
        resp.dump = dump
        resp.perPeerStats = stats
        return resp
    }

    public func get(_ req: Mesh_V1_GetNodeRequest) async throws(MeshError) -> Mesh_V1_Node {
        var lr = Mesh_V1_ListNodesRequest()
        lr.caller = req.caller
        guard let n = try await list(lr).first(where: { $0.id == req.nodeID.lowercased() }) else { throw .notFound("no such node") }
        if !req.caller.nodeID.isEmpty && req.caller.nodeID.lowercased() != n.id { throw .notFound("no such node") }
        return n
    }
}

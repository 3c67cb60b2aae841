import Foundation
import Hummingbird
import Logging
import MeshBus
import MeshClient
import MeshAuth
import MeshDomain
import MeshNet
import MeshProto

/// The HTTP API: decode the request, verify the token, call the services over the bus, encode
/// the reply. It holds no state of its own, so any number of replicas can serve the same clients;
/// every rule (caps, rate limits, who may see what) is decided by the services.
public struct GatewayAPI: Sendable {
    let configuration: GatewayConfiguration
    let bus: BusConnection
    let verifier: TokenVerifier
    let provision: ProvisionClient
    let fanout: FanoutClient
    let nodes: NodeClient
    let logger: Logger
    /// Sign-in through identity providers and sessions (empty: bearer tokens only).
    let signIn: SignInConfiguration
    /// The configured providers by id.
    let providers: [String: OIDCProvider]
    /// The live channel's feed: a Service the gateway runs beside its HTTP server.
    public let live: LiveFeed
    /// Looks for the legacy Pritunl VPN at its configured address (nil: only the flag counts).
    let pritunlProbe: PritunlProbe?

    /// The API over `bus`, with service clients bounded by the configured deadlines.
    public init(configuration: GatewayConfiguration, bus: BusConnection, verifier: TokenVerifier, signIn: SignInConfiguration = SignInConfiguration(),
                pritunlProbe: PritunlProbe? = nil, logger: Logger) {
        self.configuration = configuration
        self.pritunlProbe = pritunlProbe
        self.bus = bus
        self.verifier = verifier
        self.provision = ProvisionClient(bus: bus, timeout: configuration.serviceTimeout)
        self.fanout = FanoutClient(bus: bus, timeout: configuration.serviceTimeout)
        self.nodes = NodeClient(bus: bus, timeout: configuration.nodeTimeout)
        self.logger = logger
        self.signIn = signIn
        var providers: [String: OIDCProvider] = [:]
        for p in signIn.providers {
            providers[p.id] = OIDCProvider(configuration: p, timeout: signIn.providerTimeout, refresh: signIn.jwksRefresh, logger: logger)
        }
        self.providers = providers
        live = LiveFeed(bus: bus, tick: configuration.liveTick, logger: logger)
    }

    /// The provider with this id (tests read its counters).
    public func provider(_ id: String) -> OIDCProvider? { providers[id] }

    // MARK: Identity

    /// The bearer token of the `Authorization` header; `unauthenticated` when there is none.
    static func bearer(_ request: Request) throws(MeshError) -> String? {
        guard let header = request.headers[.authorization] else { return nil }
        guard let token = bearer(header: header) else { throw .unauthenticated("missing bearer token") }
        return token
    }

    /// The credentials of an `Authorization` value of the Bearer scheme (RFC 6750: the scheme in any
    /// case, then spaces), without the optional whitespace (spaces and tabs, RFC 9110) around
    /// them; nil for another scheme or no credentials. Read byte by byte: it runs on every request.
    static func bearer(header: String) -> String? {
        var header = header
        return header.withUTF8 { u -> String? in
            let scheme = "bearer".utf8
            func blank(_ c: UInt8) -> Bool { c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }
            var i = 0
            while i < u.count, blank(u[i]) { i += 1 }
            guard u.count - i > scheme.count, zip(u[i..<(i + scheme.count)], scheme).allSatisfy({ $0 | 0x20 == $1 }),
                  u[i + scheme.count] == UInt8(ascii: " ") else { return nil }
            var start = i + scheme.count, end = u.count
            while start < end, blank(u[start]) { start += 1 }
            while end > start, blank(u[end - 1]) { end -= 1 }
            return start < end ? String(decoding: UnsafeBufferPointer(rebasing: u[start..<end]), as: UTF8.self) : nil
        }
    }

    /// The verified identity of the bearer JWT; `unauthenticated` without one.
    func identity(_ request: Request) async throws(MeshError) -> Identity {
        guard let token = try Self.bearer(request) else { throw .unauthenticated("missing bearer token") }
        if token.hasPrefix(APITokenFormat.prefix) { throw .permissionDenied("this route needs a node token") }
        return try await verifier.verify(token)
    }

    /// A user's caller identity, from (in this order) the `Authorization: Bearer` header — a personal
    /// API token (`qmp_…`, resolved by ProvisionSvc) or a signed JWT — or the session cookie. Node
    /// tokens are refused. ProvisionSvc checks the user and the session or token again on the call
    /// the route makes, so a removed user or a revoked credential fails on its next request.
    func user(_ request: Request, _ context: GatewayRequestContext) async throws(MeshError) -> Mesh_V1_Caller {
        if let token = try Self.bearer(request) {
            if token.hasPrefix(APITokenFormat.prefix) {
                guard APITokenFormat.isWellFormed(token) else { throw .unauthenticated("malformed API token") }
                var c = try await provision.authenticateAPIToken(hash: SignInSecrets.tokenHash(token), requestID: context.requestID)
                c.requestID = context.requestID
                return c
            }
            let id = try await verifier.verify(token)
            guard case .user = id else { throw .permissionDenied("this route needs a user token") }
            return id.caller(requestID: context.requestID)
        }
        if let s = context.session {
            var c = Mesh_V1_Caller()
            c.tenantID = s.tid
            c.userID = s.uid
            c.role = Mesh_V1_Role(key: s.role) ?? .owner
            c.amr = s.amr
            c.sessionID = s.sid
            c.requestID = context.requestID
            return c
        }
        throw .unauthenticated(context.sessionRefusal ?? "missing bearer token")
    }

    /// Whether the caller's role is known to be not admin without asking: only a JWT's claim says so
    /// (a session's role may have changed since sign-in; a token's role came from ProvisionSvc).
    static func surelyNotAdmin(_ c: Mesh_V1_Caller) -> Bool {
        c.role != .admin && c.sessionID.isEmpty && c.apiTokenID.isEmpty
    }

    /// A user whose stored role (not only the token's claim) is admin. A JWT's claim is checked
    /// first so that owners are refused without a service call.
    func admin(_ request: Request, _ context: GatewayRequestContext) async throws(MeshError) -> Mesh_V1_Caller {
        var caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw .permissionDenied("this route is for admins") }
        let stored = try await provision.identify(caller: caller)
        guard stored.user.role == .admin else { throw .permissionDenied("this route is for admins") }
        caller.role = .admin
        return caller
    }

    /// The node a diagnostics route is about: `?node_id=` (admins only) or this gateway's node.
    func targetNode(_ request: Request, caller: Mesh_V1_Caller) throws(MeshError) -> String {
        // Present means chosen: an empty node_id is not a UUID either.
        if let raw = request.uri.queryParameters["node_id"].map(String.init) {
            guard !Self.surelyNotAdmin(caller) else { throw .permissionDenied("only admins may choose node_id") }
            guard let id = UUID(text: raw) else { throw .invalidArgument(field: "node_id", message: "node_id must be a UUID") }
            return id.lowercasedText
        }
        guard !configuration.nodeID.isEmpty else {
            throw .unavailable("this gateway has no mesh node configured (MESH_GATEWAY_NODE_ID)")
        }
        return configuration.nodeID
    }

    // MARK: Devices

    /// `GET /api/mesh/devices?cursor=&limit=&owner=&status=&type=`: one page, oldest first; owners
    /// see theirs, admins the whole tenant (ProvisionSvc filters, and leaves the per-peer stats out
    /// below Pro).
    func listDevices(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let page = try await provision.listDevices(try Self.deviceListRequest(request, caller: caller))
        return JSONBody.response(DeviceListJSON(devices: page.devices.map(DeviceJSON.init), nextCursor: page.nextCursor.nilIfEmpty,
                                                perPeerStats: page.perPeerStats))
    }

    /// The page of devices a request asks for (`cursor`, `limit`, `owner`, `status`, `type`), shared by
    /// the list and the live channel, so both show the same page.
    static func deviceListRequest(_ request: Request, caller: Mesh_V1_Caller) throws -> Mesh_V1_ListDevicesRequest {
        let q = request.uri.queryParameters
        var r = Mesh_V1_ListDevicesRequest()
        r.caller = caller
        // The page shows neither keys nor configs' nodes (DeviceJSON): ask for the listing only.
        r.view = .listing
        if let raw = q["limit"].map(String.init) {
            guard let v = UInt32(raw), (1...500).contains(v) else { throw MeshError.invalidArgument(field: "limit", message: "limit must be 1 to 500") }
            r.limit = v
        }
        r.cursor = q["cursor"].map(String.init) ?? ""
        if let raw = q["owner"].map(String.init) {
            if raw == "me" {
                r.ownerUserID = caller.userID
            } else {
                guard let id = UUID(text: raw) else { throw MeshError.invalidArgument(field: "owner", message: "owner must be a user id or \"me\"") }
                r.ownerUserID = id.lowercasedText
            }
        }
        if let raw = q["status"].map(String.init) {
            guard let st = Mesh_V1_DeviceStatus(key: raw) else {
                throw MeshError.invalidArgument(field: "status", message: "status must be active, suspended or expired")
            }
            r.status = st
        }
        if let raw = q["type"].map(String.init) {
            guard let t = Mesh_V1_DeviceType(key: raw), t.key == raw else {
                throw MeshError.invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
            }
            r.type = t
        }
        return r
    }

    /// `POST /api/mesh/devices` `{label, type?}`: 201 with the config and QR code, shown this once.
    func createDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let body = try await readBody(request)
        let object = try JSONBody.object(body, allowed: ["label", "type", "expires_at", "pair"])
        guard let label = try JSONBody.string(object, "label") else { throw MeshError.invalidArgument(field: "label", message: "label is required") }
        let pair = try JSONBody.bool(object, "pair") ?? false
        var type = Mesh_V1_DeviceType.other
        if let t = try JSONBody.string(object, "type") {
            guard let parsed = Mesh_V1_DeviceType(key: t), parsed.key == t else {
                throw MeshError.invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
            }
            type = parsed
        }
        let expires = try JSONBody.timestamp(object, "expires_at") ?? 0
        let created = try await provision.createDevice(caller: caller, label: label, type: type, expiresAtMs: expires, pair: pair)
        context.logger.info("device created", metadata: ["device.id": "\(created.device.id)", "tenant.id": "\(caller.tenantID)"])
        // The body holds a private key: nothing on the way may keep a copy.
        return JSONBody.response(CreatedDeviceJSON(created), status: .created,
                                 headers: [.cacheControl: "no-store", .location: "/api/mesh/devices/\(created.device.id)"])
    }

    /// `DELETE /api/mesh/devices/:id`: 204 for its owner or an admin of its tenant, 404 for anyone else.
    func deleteDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let id = context.parameters.get("id") ?? ""
        // Not a UUID cannot name a device: the same 404 as any other unknown id.
        guard let uuid = UUID(text: id) else { throw MeshError.notFound("no such device") }
        _ = try await provision.deleteDevice(caller: caller, deviceID: uuid.lowercasedText)
        return Response(status: .noContent)
    }

    /// `PATCH /api/mesh/devices/:id` with one of `{label}` (a new label, slug and DNS name; owner or
    /// admin) or `{expires_at}` (an RFC 3339 time, or null for never; admins). 404 for anyone who
    /// may not see the device.
    func renameDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let id = context.parameters.get("id") ?? ""
        guard let uuid = UUID(text: id) else { throw MeshError.notFound("no such device") }
        let object = try JSONBody.object(try await readBody(request), allowed: ["label", "expires_at"])
        switch (object["label"] != nil, object["expires_at"] != nil) {
        case (true, false):
            guard let label = try JSONBody.string(object, "label") else { throw MeshError.invalidArgument(field: "label", message: "label is required") }
            let renamed = try await provision.renameDevice(caller: caller, deviceID: uuid.lowercasedText, label: label)
            return JSONBody.response(DeviceJSON(renamed.device))
        case (false, true):
            let expires = try JSONBody.timestamp(object, "expires_at") ?? 0
            let changed = try await provision.setDeviceExpiry(caller: caller, deviceID: uuid.lowercasedText, expiresAtMs: expires)
            return JSONBody.response(DeviceJSON(changed.device))
        case (true, true):
            throw MeshError.invalidArgument(field: "expires_at", message: "change the label and the expiry in separate requests")
        case (false, false):
            throw MeshError.invalidArgument(field: "label", message: "give a label or an expires_at")
        }
    }

    /// `POST /api/mesh/devices/:id/reissue`: a new keypair and config (owner or admin, 404 for anyone
    /// else), shown this once.
    func reissueDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard let uuid = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such device") }
        let r = try await provision.reissueDevice(caller: caller, deviceID: uuid.lowercasedText)
        context.logger.info("device config re-issued", metadata: ["device.id": "\(r.device.id)", "tenant.id": "\(caller.tenantID)"])
        return JSONBody.response(CreatedDeviceJSON(r), headers: [.cacheControl: "no-store"])
    }

    /// `PATCH /api/mesh/nodes/:id` `{"hub": true}`: makes the node the tenant's hub (admins).
    func updateNode(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        guard let uuid = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such node") }
        let object = try JSONBody.object(try await readBody(request), allowed: ["hub"])
        guard object["hub"] as? Bool == true else {
            throw MeshError.invalidArgument(field: "hub", message: "hub must be true (to move the hub, make another node the hub)")
        }
        let r = try await provision.setHub(caller: caller, nodeID: uuid.lowercasedText)
        return JSONBody.response(NodeJSON(r.node))
    }

    /// Reads the body up to the configured limit (413 beyond it).
    func readBody(_ request: Request) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > configuration.maxBodyBytes {
            throw APIError.bodyTooLarge
        }
        do {
            return try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch let e as any HTTPResponseError where e.status == .contentTooLarge {
            throw APIError.bodyTooLarge
        }
    }

    // MARK: Node diagnostics

    /// `GET /api/mesh/state`: the WireGuard interface and DNS status of this gateway's node (or of
    /// `?node_id=`, admins only). The node must belong to the caller's tenant.
    func state(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let nodeID = try targetNode(request, caller: caller)
        async let member = provision.getNode(caller: caller, nodeID: nodeID)
        async let state = nodes.state(nodeID: nodeID, requestID: caller.requestID)
        _ = try await member
        return JSONBody.response(StateJSON(try await state, nodeID: nodeID))
    }

    /// `GET /api/mesh/peers`: the node's live peer dump, admins only. ProvisionSvc decides what the
    /// tenant's plan shows (basic state on Free, per-peer stats from Pro up).
    func peers(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("this route is for admins") }
        let nodeID = try targetNode(request, caller: caller)
        let answer = try await provision.nodeDiagnostics(caller: caller, nodeID: nodeID)
        let withStats = answer.perPeerStats, d = answer.dump
        return JSONBody.response(PeerDumpJSON(nodeId: d.nodeID.nilIfEmpty ?? nodeID, diagnostics: withStats ? "per_peer_stats" : "basic_state",
                                              readAt: Timestamp.isoOrNil(ms: d.readAtMs),
                                              peers: d.peers.map { PeerStatsJSON($0, withStats: withStats) }))
    }

    /// `POST /api/mesh/refresh`: every node of the tenant re-syncs from the control plane at once.
    /// Admins only. 204 when at least one node was reached, with how many in `X-Mesh-Nodes-Reached`
    /// (and `X-Mesh-Nodes-Total`); nodes that fail or are too slow are logged (each also re-syncs by
    /// itself). 503 when none was reached; 409 for a tenant without nodes.
    func refresh(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await admin(request, context)
        let list = try await provision.listNodes(caller: caller)
        guard !list.isEmpty else {
            throw MeshError.failedPrecondition("this tenant has no node to refresh: enroll a node first")
        }
        let nodes = self.nodes, log = context.logger, deadline = configuration.refreshTimeout
        let failures = await withTaskGroup(of: String?.self) { group in
            for node in list {
                group.addTask {
                    do {
                        _ = try await nodes.refresh(nodeID: node.id, requestID: caller.requestID)
                        return nil
                    } catch {
                        log.warning("node refresh failed", metadata: ["node.id": "\(node.id)", "error": "\(error)"])
                        return node.id
                    }
                }
            }
            // A bound on the whole fan-out: whatever has not answered by then is cancelled.
            group.addTask {
                try? await Task.sleep(for: deadline)
                return "deadline"
            }
            var failed: [String] = []
            var remaining = list.count
            while remaining > 0, let r = await group.next() {
                if r == "deadline" {
                    log.warning("node refresh deadline passed", metadata: ["nodes.pending": "\(remaining)"])
                    failed.append(contentsOf: Array(repeating: "timeout", count: remaining))
                    break
                }
                remaining -= 1
                if let r { failed.append(r) }
            }
            group.cancelAll()
            return failed
        }
        log.info("refresh requested", metadata: ["nodes": "\(list.count)", "nodes.failed": "\(failures.count)"])
        let reached = list.count - failures.count
        guard reached > 0 else {
            throw APIError(status: .serviceUnavailable, code: "unavailable",
                           message: "no node could be reached (\(list.count) tried); each node re-syncs by itself once it is back",
                           headers: [(nodesReachedHeader, "0"), (nodesTotalHeader, String(list.count))])
        }
        return Response(status: .noContent, headers: [nodesReachedHeader: String(reached), nodesTotalHeader: String(list.count)])
    }

    // MARK: License and audit

    /// `GET /api/license/orbit-features`.
    func orbitFeatures(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        // The user must exist (and its session or token stand): the license reveals a tenant's usage.
        async let stored = provision.identify(caller: caller)
        async let feature = provision.license(caller: caller)
        _ = try await stored
        return JSONBody.response(OrbitFeaturesJSON(meshVpn: try await feature))
    }

    /// `GET /api/mesh/audit?before=&limit=&action=&actor=`: newest first. ProvisionSvc checks admin
    /// and plan (Team and above) and the filters.
    func audit(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let q = request.uri.queryParameters
        var before: Int64 = 0
        if let raw = q["before"].map(String.init), !raw.isEmpty {
            guard let v = Int64(raw), v >= 0 else { throw MeshError.invalidArgument(field: "before", message: "before must be a non-negative integer") }
            before = v
        }
        var limit: UInt32 = 50
        if let raw = q["limit"].map(String.init) {
            guard let v = UInt32(raw), (1...500).contains(v) else { throw MeshError.invalidArgument(field: "limit", message: "limit must be 1 to 500") }
            limit = v
        }
        let page = try await provision.audit(caller: caller, beforeID: before, limit: limit, action: q["action"].map(String.init) ?? "",
                                             actor: q["actor"].map(String.init) ?? "")
        return JSONBody.response(AuditPageJSON(entries: page.entries, nextBefore: page.nextBeforeID > 0 ? page.nextBeforeID : nil))
    }

    // MARK: Control-plane authority

    /// `GET /cp/api/v1/mesh/peers/:node_id`: a node's current peer list, for that node only.
    func nodePeerList(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let id = try await identity(request)
        guard case .node(let tenant, let node) = id else { throw MeshError.permissionDenied("this route needs a node token") }
        let asked = context.parameters.get("node_id") ?? ""
        // Another node's list, or a malformed id, is simply not there for this caller.
        guard let askedID = UUID(text: asked), askedID.lowercasedText == node else {
            throw MeshError.notFound("no such node")
        }
        let view = try await fanout.fullView(tenantID: tenant, nodeID: node)
        guard let me = view.members[node] else { throw MeshError.notFound("no such node") }
        var selfPeer = Mesh_V1_Peer()
        selfPeer.id = me.id
        selfPeer.kind = me.kind
        selfPeer.publicKey = me.publicKey
        selfPeer.meshIps = [me.ipv4, me.ipv6]
        selfPeer.allowedIps = PeerCatalog.hostRoutes(me)
        selfPeer.dnsName = MeshName.dnsName(slug: me.slug, domain: view.settings.domain)
        selfPeer.endpoint = me.endpoint
        selfPeer.hub = me.id == view.settings.hubNodeID
        let peers = PeerCatalog.peers(seenBy: node, settings: view.settings, members: view.members.values)
        return JSONBody.response(SyncJSON(tenantId: tenant, nodeId: node, revision: view.revision,
                                          selfPeer: MeshPeerJSON(selfPeer), peers: peers.map(MeshPeerJSON.init),
                                          ipv4Prefix: view.settings.ipv4Prefix, ipv6Prefix: view.settings.ipv6Prefix))
    }

    // MARK: Operations

    /// `GET /readyz`: 200 when the bus is connected and ProvisionSvc answers `$SRV.PING`, else 503.
    func ready(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        var checks: [String: String] = ["nats": bus.isConnected ? "ok" : "disconnected"]
        if bus.isConnected {
            do {
                _ = try await bus.request("$SRV.PING.\(MeshServiceName.provision)", [], timeout: .seconds(2))
                checks[MeshServiceName.provision] = "ok"
            } catch {
                checks[MeshServiceName.provision] = "\(MeshError(busError: error).code)"
            }
        } else {
            checks[MeshServiceName.provision] = "unknown"
        }
        let ok = checks.values.allSatisfy { $0 == "ok" }
        return JSONBody.response(HealthJSON(status: ok ? "ready" : "not_ready", checks: checks), status: ok ? .ok : .serviceUnavailable,
                                 headers: [.cacheControl: "no-store"])
    }

    /// `GET /api/mesh/ui-config`.
    func uiConfig(_ request: Request, _ context: GatewayRequestContext) -> Response {
        JSONBody.response(UIConfigJSON(pritunlConfigured: pritunlBanner, meshDomain: TenantDefaults.domain,
                                       deviceTypes: ["iphone", "android", "laptop", "other"],
                                       providers: signIn.sessionsEnabled ? signIn.providers.map { ($0.id, $0.name) } : []))
    }
}

import Foundation
import Hummingbird
import MeshClient
import MeshDomain
import MeshNet
import MeshProto
import NIOCore

/// How many nodes `POST /api/mesh/refresh` reached, and how many it tried.
public let nodesReachedHeader = HTTPHeaderName("X-Mesh-Nodes-Reached")!
public let nodesTotalHeader = HTTPHeaderName("X-Mesh-Nodes-Total")!

/// The routes of the device and node lifecycle, the tenant's settings and the audit export. As
/// everywhere in the gateway: decode, verify the token, call ProvisionSvc, encode; the rules are
/// ProvisionSvc's.
extension GatewayAPI {
    /// The device id of a `:id` path; anything that is not a UUID names no device (404, as any unknown id).
    func deviceID(_ context: GatewayRequestContext) throws(MeshError) -> String {
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw .notFound("no such device") }
        return id.lowercasedText
    }

    // MARK: Devices

    /// `GET /api/mesh/devices/:id`: the device's owner or an admin of its tenant; 404 for anyone else.
    func getDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let device = try await provision.getDevice(caller: caller, deviceID: try deviceID(context))
        return JSONBody.response(DeviceJSON(device))
    }

    /// `POST /api/mesh/devices/:id/suspend`: the device leaves every node and the mesh DNS; it keeps
    /// its keys, addresses, name and plan slot. Idempotent.
    func suspendDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let changed = try await provision.suspendDevice(caller: caller, deviceID: try deviceID(context))
        return JSONBody.response(DeviceJSON(changed.device))
    }

    /// `POST /api/mesh/devices/:id/resume`: back in the mesh; 409 while its expiry has passed, 403 for
    /// an owner when an admin suspended it. Idempotent.
    func resumeDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let changed = try await provision.resumeDevice(caller: caller, deviceID: try deviceID(context))
        return JSONBody.response(DeviceJSON(changed.device))
    }

    // MARK: Nodes

    /// `GET /api/mesh/nodes`: the tenant's nodes for admins, hub first, each with what it says about
    /// itself (asked with a bounded wait).
    func listNodes(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("this route is for admins") }
        let nodes = try await provision.listNodes(caller: caller, live: true)
        // The hub first, then by age (ProvisionSvc lists them by age).
        let ordered = nodes.filter(\.hub) + nodes.filter { !$0.hub }
        return JSONBody.response(NodeListJSON(nodes: ordered.map(NodeJSON.init)))
    }

    /// `DELETE /api/mesh/nodes/:id`: removes a node (admins); its bus identity is revoked before the
    /// answer, its address released, and devices whose configs list it are marked outdated.
    func removeNode(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("this route is for admins") }
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such node") }
        _ = try await provision.deregisterNode(caller: caller, nodeID: id.lowercasedText)
        return Response(status: .noContent)
    }

    /// `POST /api/mesh/enrollment-tokens` `{ttl_seconds?, uses?}`: a token a NodeApplier registers
    /// with (admins). Shown once; only its hash is kept.
    func createEnrollmentToken(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("this route is for admins") }
        let body = try await readBody(request)
        var ttl: UInt32 = 3600, uses: UInt32 = 1
        if body.readableBytes > 0 {
            // Each member absent or an integer (null is refused, naming the member).
            let object = try JSONBody.object(body, allowed: ["ttl_seconds", "uses"])
            if let v = try JSONBody.int(object, "ttl_seconds") {
                guard let u = UInt32(exactly: v), u > 0 else {
                    throw MeshError.invalidArgument(field: "ttl_seconds", message: "ttl_seconds must be 60 to 2592000 (30 days)")
                }
                ttl = u
            }
            if let v = try JSONBody.int(object, "uses") {
                guard let u = UInt32(exactly: v), u > 0 else { throw MeshError.invalidArgument(field: "uses", message: "uses must be 1 to 10000") }
                uses = u
            }
        }
        let r = try await provision.createEnrollmentToken(caller: caller, ttlSeconds: ttl, maxUses: uses)
        return JSONBody.response(EnrollmentTokenJSON(token: r.token, expiresAt: Timestamp.iso(ms: r.expiresAtMs), uses: uses),
                                 status: .created, headers: [.cacheControl: "no-store"])
    }

    // MARK: Tenant settings

    /// `GET /api/mesh/settings`: the mesh switch and the default device lifetime (any user).
    func getSettings(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        return JSONBody.response(TenantSettingsJSON(settings: try await provision.tenantSettings(caller: caller)))
    }

    /// `PATCH /api/mesh/settings` `{mesh_enabled?, device_lifetime_seconds?}` (admins): turning the
    /// mesh off takes every device off every node and refuses new ones; `device_lifetime_seconds`
    /// null (or 0) turns the default lifetime off.
    func updateSettings(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("only admins can change the tenant's settings") }
        let body = try await readBody(request)
        let object = try JSONBody.object(body, allowed: ["mesh_enabled", "device_lifetime_seconds"])
        struct Body: Decodable {
            var mesh_enabled: Bool?
            var device_lifetime_seconds: Int?
        }
        let b = try JSONBody.decode(body, as: Body.self)
        var r = Mesh_V1_UpdateTenantSettingsRequest()
        r.caller = caller
        if object["mesh_enabled"] != nil {
            guard let on = b.mesh_enabled else { throw MeshError.invalidArgument(field: "mesh_enabled", message: "mesh_enabled must be true or false") }
            r.meshEnabled = on
        }
        if object["device_lifetime_seconds"] != nil {
            let v = b.device_lifetime_seconds ?? 0
            guard let u = UInt32(exactly: v) else {
                throw MeshError.invalidArgument(field: "device_lifetime_seconds", message: "device_lifetime_seconds must be null or 3600 to 315360000")
            }
            r.deviceLifetimeSeconds = u
        }
        guard r.meshEnabledSet != nil || r.deviceLifetimeSet != nil else {
            throw MeshError.invalidArgument(field: "", message: "give mesh_enabled or device_lifetime_seconds")
        }
        let answer = try await provision.updateTenantSettings(r)
        return JSONBody.response(TenantSettingsJSON(settings: answer.settings))
    }

    // MARK: Audit export

    /// `GET /api/mesh/audit/export?format=csv|jsonl&action=&actor=`: the whole (filtered) audit log,
    /// newest first, streamed page by page: neither the gateway nor ProvisionSvc holds more than one
    /// page. The first page is read before the answer starts, so refusals are proper errors; a failure
    /// later cuts the download short (and is logged).
    func exportAudit(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let q = request.uri.queryParameters
        let raw = q["format"].map(String.init) ?? "csv"
        guard let format = AuditExport(rawValue: raw) else { throw MeshError.invalidArgument(field: "format", message: "format must be csv or jsonl") }
        let action = q["action"].map(String.init) ?? "", actor = q["actor"].map(String.init) ?? ""
        let provision = self.provision, log = context.logger
        let first = try await provision.audit(caller: caller, beforeID: 0, limit: 500, action: action, actor: actor)
        let stamp = Timestamp.iso(ms: Date().unixMilliseconds).prefix(10)
        let body = ResponseBody { writer in
            var page = first
            var exported = 0
            if format == .csv { try await writer.write(ByteBuffer(string: AuditExport.csvHeader)) }
            while true {
                var bytes: [UInt8] = []
                bytes.reserveCapacity(page.entries.count * 200)
                for e in page.entries { bytes += format.line(e) }
                if !bytes.isEmpty { try await writer.write(ByteBuffer(bytes: bytes)) }
                exported += page.entries.count
                guard page.nextBeforeID > 0 else { break }
                do {
                    page = try await provision.audit(caller: caller, beforeID: page.nextBeforeID, limit: 500, action: action, actor: actor)
                } catch {
                    log.warning("audit export cut short", metadata: ["error": "\(error)", "entries": "\(exported)"])
                    throw error
                }
            }
            log.info("audit exported", metadata: ["entries": "\(exported)", "format": "\(format.rawValue)"])
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [
            .contentType: format.contentType, .cacheControl: "no-store",
            .contentDisposition: "attachment; filename=\"audit-\(stamp).\(format == .csv ? "csv" : "jsonl")\"",
        ], body: body)
    }
}

import Foundation
import Hummingbird
import MeshAuth
import MeshClient
import MeshDomain
import MeshProto

/// The walk-through from the legacy Pritunl VPN (admins) and one-time config links. The rules are
/// ProvisionSvc's; the gateway makes a link's token (only its SHA-256 leaves the gateway) and says
/// what the Pritunl probe found.
extension GatewayAPI {
    /// `GET /api/mesh/migration`: whether Pritunl is configured or answers, and every user of the
    /// tenant with their devices, the "Pritunl access revoked" item and pending links (admins).
    func migration(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("the Pritunl walk-through is for admins") }
        let users = try await provision.migrationStatus(caller: caller)
        return JSONBody.response(MigrationJSON(pritunl: pritunlStatus, users: users.map(MigrationUserJSON.init)),
                                 headers: [.cacheControl: "no-store"])
    }

    /// `PUT /api/mesh/migration/users/:id` `{"pritunl_revoked": bool}` (admins).
    func setMigrationCheck(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("the Pritunl walk-through is for admins") }
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such user") }
        let o = try JSONBody.object(try await readBody(request), allowed: ["pritunl_revoked"])
        // JSONSerialization gives booleans as an NSNumber subclass; its type tells them from 0 and 1.
        guard let v = o["pritunl_revoked"], String(describing: type(of: v)).contains("Boolean"), let revoked = v as? Bool else {
            throw MeshError.invalidArgument(field: "pritunl_revoked", message: "pritunl_revoked must be true or false")
        }
        let u = try await provision.setMigrationCheck(caller: caller, userID: id.lowercasedText, pritunlRevoked: revoked)
        return JSONBody.response(MigrationUserJSON(u))
    }

    /// `POST /api/mesh/links` `{label, type?, user_id?, expires_in?}`: a one-time config link for a
    /// device of `user_id` (admins for anyone of the tenant, others for themselves). 201 with the
    /// link's address, shown this once.
    func createLink(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let o = try JSONBody.object(try await readBody(request), allowed: ["label", "type", "user_id", "expires_in"])
        guard let label = try JSONBody.string(o, "label") else { throw MeshError.invalidArgument(field: "label", message: "label is required") }
        var type = Mesh_V1_DeviceType.other
        if let t = try JSONBody.string(o, "type") {
            guard let parsed = Mesh_V1_DeviceType(key: t), parsed.key == t else {
                throw MeshError.invalidArgument(field: "type", message: "type must be iphone, android, laptop or other")
            }
            type = parsed
        }
        let userID = try JSONBody.string(o, "user_id") ?? ""
        // Absent: the caller; present: a user id.
        guard o["user_id"] == nil || UUID(text: userID) != nil else {
            throw MeshError.invalidArgument(field: "user_id", message: "user_id must be a user id (a UUID)")
        }
        var ttl: UInt32 = 0
        if let s = try JSONBody.int(o, "expires_in") {
            guard s > 0, s <= Int(UInt32.max) else { throw MeshError.invalidArgument(field: "expires_in", message: "expires_in must be a positive number of seconds") }
            ttl = UInt32(s)
        }
        var rng = SystemRandomNumberGenerator()
        let token = ConfigLinkFormat.make(using: &rng)
        let link = try await provision.createConfigLink(caller: caller, userID: userID, label: label, type: type, ttlSeconds: ttl,
                                                        tokenHash: SignInSecrets.tokenHash(token))
        let path = "/vpn/mesh/link.html#\(token)"
        let url = signIn.publicURL.map { $0.absoluteString.trimmingSuffix("/") + path } ?? path
        return JSONBody.response(CreatedLinkJSON(link: link, token: token, url: url), status: .created, headers: [.cacheControl: "no-store"])
    }

    /// `POST /api/mesh/links/open` `{token}`: no sign-in; the token is the credential. The device is
    /// made now and its config returned once: `404` for a token no link has, `410` for a link that was
    /// used or has expired.
    func openLink(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let o = try JSONBody.object(try await readBody(request), allowed: ["token"])
        guard let token = try JSONBody.string(o, "token") else { throw MeshError.invalidArgument(field: "token", message: "token is required") }
        // A token of the wrong shape cannot name a link: the same 404 as an unknown one, without a lookup.
        guard ConfigLinkFormat.isWellFormed(token) else { throw MeshError.notFound("no such config link") }
        let r = try await provision.openConfigLink(tokenHash: SignInSecrets.tokenHash(token), requestID: context.requestID)
        context.logger.info("config link opened", metadata: ["link.id": "\(r.link.id)", "device.id": "\(r.created.device.id)"])
        return JSONBody.response(CreatedDeviceJSON(r.created), headers: [.cacheControl: "no-store"])
    }

    /// What the flag and the probe say about Pritunl here.
    var pritunlStatus: PritunlStatusJSON {
        let f = pritunlProbe?.finding
        return PritunlStatusJSON(flag: configuration.pritunlConfigured, probeURL: pritunlProbe?.url.absoluteString, detected: f?.detected,
                                 detail: f?.detail, checkedAt: f.map { Timestamp.iso(ms: $0.checkedAt.unixMilliseconds) })
    }

    /// Whether the page shows the migration banner: the flag says so, or the probe found Pritunl.
    var pritunlBanner: Bool { configuration.pritunlConfigured || pritunlProbe?.finding?.detected == true }
}

extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) ? String(dropLast(s.count)) : self }
}

/// What the flag and the probe say about Pritunl.
struct PritunlStatusJSON: JSONEncodable {
    var flag: Bool
    var probeURL: String?
    var detected: Bool?
    var detail: String?
    var checkedAt: String?

    var banner: Bool { flag || detected == true }

    func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("banner"); w.bool(banner)
            w.key("configured"); w.bool(flag)
            w.key("probe")
            if let probeURL {
                w.object { w in
                    w.key("url"); w.string(probeURL)
                    w.key("detected")
                    if let detected { w.bool(detected) } else { w.null() }
                    w.key("answer"); w.string(detail)
                    w.key("checked_at"); w.string(checkedAt)
                }
            } else {
                w.null()
            }
        }
    }
}

/// `GET /api/mesh/migration`.
struct MigrationJSON: JSONEncodable {
    var pritunl: PritunlStatusJSON
    var users: [MigrationUserJSON]

    func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("pritunl"); w.value(pritunl)
            w.key("users"); w.array(users)
        }
    }
}

/// One user of the walk-through.
struct MigrationUserJSON: JSONEncodable {
    var m: Mesh_V1_MigrationUser

    init(_ m: Mesh_V1_MigrationUser) { self.m = m }

    func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("user"); w.value(UserJSON(m.user))
            w.key("devices"); w.array(m.devices.map(DeviceJSON.init))
            w.key("pritunl_revoked"); w.bool(m.pritunlRevoked)
            w.key("checked_at"); w.string(Timestamp.isoOrNil(ms: m.checkedAtMs))
            w.key("checked_by"); w.string(m.checkedBy.nilIfEmpty)
            w.key("pending_links"); w.array(m.pendingLinks.map { LinkJSON(link: $0) })
        }
    }
}

/// A config link as stored (never its token).
struct LinkJSON: JSONEncodable {
    var link: Mesh_V1_ConfigLink

    func encode(to w: inout JSONWriter) { encodeMembers(to: &w, extra: { _ in }) }

    func encodeMembers(to w: inout JSONWriter, extra: (inout JSONWriter) -> Void) {
        let l = link
        w.object { w in
            w.key("id"); w.string(l.id)
            w.key("user_id"); w.string(l.userID)
            w.key("label"); w.string(l.label)
            w.key("type"); w.string(l.type.key)
            w.key("created_by"); w.string(l.createdBy)
            w.key("created_at"); w.string(Timestamp.iso(ms: l.createdAtMs))
            w.key("expires_at"); w.string(Timestamp.iso(ms: l.expiresAtMs))
            w.key("used_at"); w.string(Timestamp.isoOrNil(ms: l.usedAtMs))
            w.key("device_id"); w.string(l.deviceID.nilIfEmpty)
            extra(&w)
        }
    }
}

/// `POST /api/mesh/links` (201): the link with its token and address, shown this once.
struct CreatedLinkJSON: JSONEncodable {
    var link: Mesh_V1_ConfigLink
    var token: String
    var url: String

    func encode(to w: inout JSONWriter) {
        LinkJSON(link: link).encodeMembers(to: &w) { w in
            w.key("token"); w.string(token)
            w.key("url"); w.string(url)
        }
    }
}

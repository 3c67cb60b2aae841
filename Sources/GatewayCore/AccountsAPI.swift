import Foundation
import Hummingbird
import MeshAuth
import MeshClient
import MeshDomain
import MeshProto

/// Users (invite, change role, remove) and personal API tokens (create, list, revoke). Every rule is
/// ProvisionSvc's; the gateway decodes, makes the token (only its hash leaves the gateway), encodes.
extension GatewayAPI {
    // MARK: Users

    /// `GET /api/mesh/users`: the tenant's users and invitations (admins).
    func listUsers(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("only admins see the tenant's users") }
        let users = try await provision.listUsers(caller: caller)
        return JSONBody.response(UserListJSON(users: users.map(UserJSON.init)))
    }

    /// `POST /api/mesh/users` `{email | subject [+ issuer], role?, name?, expires_in_days?}`: an invitation (admins).
    func inviteUser(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("only admins invite users") }
        let o = try JSONBody.object(try await readBody(request), allowed: ["email", "subject", "issuer", "role", "name", "expires_in_days"])
        var r = Mesh_V1_InviteUserRequest()
        r.caller = caller
        r.email = try JSONBody.string(o, "email") ?? ""
        r.subject = try JSONBody.string(o, "subject") ?? ""
        r.issuer = try JSONBody.string(o, "issuer") ?? ""
        r.name = try JSONBody.string(o, "name") ?? ""
        r.role = try Self.role(o, default: .owner)
        if let days = try JSONBody.int(o, "expires_in_days") {
            guard (1...90).contains(days) else { throw MeshError.invalidArgument(field: "expires_in_days", message: "expires_in_days must be 1 to 90") }
            r.ttlSeconds = UInt32(days * 86400)
        }
        let u = try await provision.inviteUser(r)
        return JSONBody.response(UserJSON(u), status: .created, headers: [.location: "/api/mesh/users/\(u.id)"])
    }

    static func role(_ o: [String: Any], default d: Mesh_V1_Role?) throws(MeshError) -> Mesh_V1_Role {
        guard let text = try JSONBody.string(o, "role") else {
            guard let d else { throw .invalidArgument(field: "role", message: "role is required") }
            return d
        }
        guard let r = Mesh_V1_Role(key: text), r.key == text else { throw .invalidArgument(field: "role", message: "role must be owner or admin") }
        return r
    }

    /// `PATCH /api/mesh/users/:id` `{role}` (admins).
    func setUserRole(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("only admins manage users") }
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such user") }
        let o = try JSONBody.object(try await readBody(request), allowed: ["role"])
        let u = try await provision.setUserRole(caller: caller, userID: id.lowercasedText, role: try Self.role(o, default: nil))
        return JSONBody.response(UserJSON(u))
    }

    /// `DELETE /api/mesh/users/:id?devices=delete|reassign&reassign_to=<user id>` (admins): the user's
    /// sessions and tokens end at once; their devices are deleted or reassigned.
    func deleteUser(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard !Self.surelyNotAdmin(caller) else { throw MeshError.permissionDenied("only admins manage users") }
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such user") }
        let q = request.uri.queryParameters
        var disposition = Mesh_V1_DeviceDisposition.unspecified
        switch q["devices"].map(String.init) {
        case nil, "": break
        case "delete": disposition = .delete
        case "reassign": disposition = .reassign
        default: throw MeshError.invalidArgument(field: "devices", message: "devices must be delete or reassign")
        }
        var to = ""
        if let raw = q["reassign_to"].map(String.init), !raw.isEmpty {
            guard let u = UUID(text: raw) else { throw MeshError.invalidArgument(field: "reassign_to", message: "reassign_to must be a user id") }
            to = u.lowercasedText
        }
        let r = try await provision.deleteUser(caller: caller, userID: id.lowercasedText, devices: disposition, reassignTo: to)
        return JSONBody.response(UserRemovalJSON(removal: r))
    }

    // MARK: API tokens

    /// `GET /api/mesh/tokens`: the caller's tokens (never the tokens themselves).
    func listTokens(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let tokens = try await provision.listAPITokens(caller: caller)
        return JSONBody.response(APITokenListJSON(tokens: tokens.map { APITokenJSON(token: $0, secret: nil) }))
    }

    /// `POST /api/mesh/tokens` `{name, expires_in_days?}`: 201 with the token, shown this once.
    func createToken(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        let o = try JSONBody.object(try await readBody(request), allowed: ["name", "expires_in_days"])
        guard let name = try JSONBody.string(o, "name") else { throw MeshError.invalidArgument(field: "name", message: "name is required") }
        var ttl: UInt32 = 0
        if let days = try JSONBody.int(o, "expires_in_days") {
            guard (1...365).contains(days) else { throw MeshError.invalidArgument(field: "expires_in_days", message: "expires_in_days must be 1 to 365") }
            ttl = UInt32(days * 86400)
        }
        var rng = SystemRandomNumberGenerator()
        let token = APITokenFormat.make(using: &rng)
        let stored = try await provision.createAPIToken(caller: caller, name: name, hash: SignInSecrets.tokenHash(token),
                                                        prefix: APITokenFormat.displayPrefix(token), ttlSeconds: ttl)
        return JSONBody.response(APITokenJSON(token: stored, secret: token), status: .created,
                                 headers: [.cacheControl: "no-store", .location: "/api/mesh/tokens/\(stored.id)"])
    }

    /// `DELETE /api/mesh/tokens/:id`: revokes one of the caller's tokens (admins: any of the tenant's);
    /// it fails on its next request.
    func revokeToken(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let caller = try await user(request, context)
        guard let id = UUID(text: context.parameters.get("id") ?? "") else { throw MeshError.notFound("no such API token") }
        try await provision.revokeAPIToken(caller: caller, tokenID: id.lowercasedText)
        return Response(status: .noContent)
    }
}

import Foundation
import MeshDomain
import MeshProto

/// The Pritunl walk-through and one-time config links (ProvisionSvc, `migration.proto`).
extension ProvisionClient {
    /// Every user of the caller's tenant with their devices, checklist and pending links (admins).
    public func migrationStatus(caller: Mesh_V1_Caller) async throws(MeshError) -> [Mesh_V1_MigrationUser] {
        var r = Mesh_V1_MigrationStatusRequest()
        r.caller = caller
        let resp: Mesh_V1_MigrationStatusResponse = try await call(MeshSubjects.migrationStatus, r, caller.requestID.nilIfEmpty)
        return resp.users
    }

    /// Sets a user's "Pritunl access revoked" item (admins).
    public func setMigrationCheck(caller: Mesh_V1_Caller, userID: String, pritunlRevoked: Bool) async throws(MeshError) -> Mesh_V1_MigrationUser {
        var r = Mesh_V1_SetMigrationCheckRequest()
        r.caller = caller
        r.userID = userID
        r.pritunlRevoked = pritunlRevoked
        let resp: Mesh_V1_SetMigrationCheckResponse = try await call(MeshSubjects.migrationCheck, r, caller.requestID.nilIfEmpty)
        return resp.user
    }

    /// Records a one-time config link by its token's SHA-256 (the caller keeps the token).
    public func createConfigLink(caller: Mesh_V1_Caller, userID: String, label: String, type: Mesh_V1_DeviceType,
                                 ttlSeconds: UInt32, tokenHash: [UInt8]) async throws(MeshError) -> Mesh_V1_ConfigLink {
        var r = Mesh_V1_CreateConfigLinkRequest()
        r.caller = caller
        r.userID = userID
        r.label = label
        r.type = type
        r.ttlSeconds = ttlSeconds
        r.tokenHash = Data(tokenHash)
        let resp: Mesh_V1_CreateConfigLinkResponse = try await call(MeshSubjects.linkCreate, r, caller.requestID.nilIfEmpty)
        return resp.link
    }

    /// Opens a link by its token's SHA-256: the device and its config, once.
    public func openConfigLink(tokenHash: [UInt8], requestID: String?) async throws(MeshError) -> Mesh_V1_OpenConfigLinkResponse {
        var r = Mesh_V1_OpenConfigLinkRequest()
        r.tokenHash = Data(tokenHash)
        return try await call(MeshSubjects.linkOpen, r, requestID)
    }
}

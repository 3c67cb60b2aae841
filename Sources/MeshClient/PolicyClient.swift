import MeshBus
import MeshDomain
import MeshProto

extension ProvisionClient {
    /// The tenant's access policy (admins).
    public func policy(caller: Mesh_V1_Caller) async throws(MeshError) -> Mesh_V1_Policy {
        var r = Mesh_V1_GetPolicyRequest()
        r.caller = caller
        let resp: Mesh_V1_GetPolicyResponse = try await call(MeshSubjects.policyGet, r, caller.requestID.nilIfEmpty)
        return resp.policy
    }

    /// One edit of the tenant's access policy (admins).
    public func updatePolicy(caller: Mesh_V1_Caller, _ edit: Mesh_V1_UpdatePolicyRequest.OneOf_Edit) async throws(MeshError) -> Mesh_V1_UpdatePolicyResponse {
        var r = Mesh_V1_UpdatePolicyRequest()
        r.caller = caller
        r.edit = edit
        return try await call(MeshSubjects.policyUpdate, r, caller.requestID.nilIfEmpty)
    }

    /// A dry run: may `from` reach `to` on `proto`/`port`, and by which rule (admins).
    public func checkPolicy(caller: Mesh_V1_Caller, from: String, to: String, proto: Mesh_V1_PolicyProtocol,
                            port: UInt32) async throws(MeshError) -> Mesh_V1_CheckPolicyResponse {
        var r = Mesh_V1_CheckPolicyRequest()
        r.caller = caller
        r.from = from
        r.to = to
        r.protocol = proto
        r.port = port
        return try await call(MeshSubjects.policyCheck, r, caller.requestID.nilIfEmpty)
    }

    /// Gives a device or a node its tags (admins).
    public func setTags(caller: Mesh_V1_Caller, kind: Mesh_V1_PeerKind, memberID: String, tags: [String]) async throws(MeshError) -> Mesh_V1_SetTagsResponse {
        var r = Mesh_V1_SetTagsRequest()
        r.caller = caller
        r.kind = kind
        r.memberID = memberID
        r.tags = tags
        return try await call(MeshSubjects.tagsSet, r, caller.requestID.nilIfEmpty)
    }
}

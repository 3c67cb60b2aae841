import Foundation
import Logging
import MeshBus
import MeshCore
import MeshNet
import MeshProto
import SwiftProtobuf

/// ProvisionSvc on the bus (queue group "q" for everything, so replicas share the load).
public enum ProvisionService {
    public static func endpoints(_ p: Provisioner) -> [ServiceEndpoint] {
        @Sendable func rid(_ caller: Mesh_V1_Caller, _ raw: BusRequest) -> String {
            caller.requestID.nilIfEmpty ?? raw.requestID ?? UUID().lowercasedText
        }
        return [
            .proto("tenant-create", subject: MeshSubjects.tenantCreate) { (r: Mesh_V1_CreateTenantRequest, raw) in
                var resp = Mesh_V1_CreateTenantResponse()
                resp.tenant = try await p.createTenant(r, requestID: raw.requestID ?? UUID().lowercasedText)
                return resp
            },
            .proto("tenant-update", subject: MeshSubjects.tenantUpdate) { (r: Mesh_V1_UpdateTenantRequest, raw) in
                var resp = Mesh_V1_UpdateTenantResponse()
                resp.tenant = try await p.updateTenant(r, requestID: raw.requestID ?? "")
                return resp
            },
            .proto("tenant-get", subject: MeshSubjects.tenantGet) { (r: Mesh_V1_GetTenantRequest, _) in
                var resp = Mesh_V1_GetTenantResponse()
                resp.tenant = try await p.tenant(try Validate.uuid(r.tenantID, field: "tenant_id"))
                return resp
            },
            .proto("tenant-list", subject: MeshSubjects.tenantList) { (_: Mesh_V1_ListTenantsRequest, _) in
                var resp = Mesh_V1_ListTenantsResponse()
                resp.tenants = try await p.listTenants()
                return resp
            },
            .proto("user-create", subject: MeshSubjects.userCreate) { (r: Mesh_V1_CreateUserRequest, raw) in
                var resp = Mesh_V1_CreateUserResponse()
                resp.user = try await p.createUser(r, requestID: raw.requestID ?? "")
                return resp
            },
            .proto("user-get", subject: MeshSubjects.userGet) { (r: Mesh_V1_GetUserRequest, _) in
                var resp = Mesh_V1_GetUserResponse()
                resp.user = try await p.user(tenant: r.tenantID, id: r.userID)
                return resp
            },
            .proto("user-list", subject: MeshSubjects.userList) { (r: Mesh_V1_ListUsersRequest, _) in
                var resp = Mesh_V1_ListUsersResponse()
                resp.users = try await p.listUsers(tenant: r.tenantID)
                return resp
            },
            .proto("device-create", subject: MeshSubjects.deviceCreate) { (r: Mesh_V1_CreateDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.createDevice(req)
            },
            .proto("device-delete", subject: MeshSubjects.deviceDelete) { (r: Mesh_V1_DeleteDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.deleteDevice(req)
            },
            .proto("device-rename", subject: MeshSubjects.deviceRename) { (r: Mesh_V1_RenameDeviceRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.renameDevice(req)
            },
            .proto("device-list", subject: MeshSubjects.deviceList) { (r: Mesh_V1_ListDevicesRequest, _) in
                var resp = Mesh_V1_ListDevicesResponse()
                resp.devices = try await p.listDevices(r)
                return resp
            },
            .proto("enrollment-create", subject: MeshSubjects.enrollmentCreate) { (r: Mesh_V1_CreateEnrollmentTokenRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.createEnrollmentToken(req)
            },
            .proto("node-register", subject: MeshSubjects.nodeRegister) { (r: Mesh_V1_RegisterNodeRequest, raw) in
                try await p.registerNode(r, requestID: raw.requestID ?? UUID().lowercasedText)
            },
            .proto("node-deregister", subject: MeshSubjects.nodeDeregister) { (r: Mesh_V1_DeregisterNodeRequest, raw) in
                var req = r
                req.caller.requestID = rid(r.caller, raw)
                return try await p.deregisterNode(req)
            },
            .proto("node-list", subject: MeshSubjects.nodeList) { (r: Mesh_V1_ListNodesRequest, _) in
                var resp = Mesh_V1_ListNodesResponse()
                resp.nodes = try await p.listNodes(r)
                return resp
            },
            .proto("node-get", subject: MeshSubjects.nodeGet) { (r: Mesh_V1_GetNodeRequest, _) in
                var resp = Mesh_V1_GetNodeResponse()
                resp.node = try await p.node(r)
                return resp
            },
            .proto("license-get", subject: MeshSubjects.licenseGet) { (r: Mesh_V1_GetLicenseRequest, _) in
                var resp = Mesh_V1_GetLicenseResponse()
                resp.meshVpn = try await p.license(caller: r.caller)
                return resp
            },
            .proto("audit-list", subject: MeshSubjects.auditList) { (r: Mesh_V1_ListAuditRequest, _) in
                try await p.audit(r)
            },
            .proto("handshake-report", subject: MeshSubjects.handshakeReportWildcard) { (r: Mesh_V1_HandshakeReport, raw) in
                try await p.applyReport(r, subject: raw.subject)
                return Google_Protobuf_Empty()
            },
        ]
    }
}

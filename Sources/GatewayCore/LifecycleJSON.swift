import Foundation
import MeshDomain
import MeshProto

/// A node as `GET /api/mesh/nodes` lists it (and `PATCH /api/mesh/nodes/:id` answers it): what the
/// control plane keeps, and what the node itself said when asked (`online`, `backend`, `revision`,
/// `last_sync_at`; null when it was not asked or did not answer).
public struct NodeJSON: JSONEncodable {
    var node: Mesh_V1_Node

    /// From the protobuf form.
    public init(_ n: Mesh_V1_Node) { node = n }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let n = node
        let answered = n.live && n.stateError.isEmpty
        w.object { w in
            w.key("id"); w.string(n.id)
            w.key("name"); w.string(n.name)
            w.key("slug"); w.string(n.slug)
            w.key("dns_name"); w.string(n.dnsName)
            w.key("mesh_ips"); w.array([n.ipv4, n.ipv6].filter { !$0.isEmpty })
            w.key("endpoint"); w.string(n.endpoint)
            w.key("listen_port"); w.uint(UInt64(n.listenPort))
            w.key("public_key"); w.string(n.publicKey)
            w.key("hub"); w.bool(n.hub)
            w.key("tags"); w.array(n.tags)
            w.key("created_at"); w.string(Timestamp.iso(ms: n.createdAtMs))
            w.key("last_seen_at"); w.string(Timestamp.isoOrNil(ms: n.lastSeenAtMs))
            w.key("online")
            if n.live { w.bool(n.online) } else { w.null() }
            w.key("backend"); w.string(answered ? n.backend.nilIfEmpty : nil)
            w.key("revision")
            if answered { w.uint(n.appliedRevision) } else { w.null() }
            w.key("last_sync_at"); w.string(answered ? Timestamp.isoOrNil(ms: n.lastSyncAtMs) : nil)
            w.key("state_error"); w.string(n.stateError.nilIfEmpty)
        }
    }
}

/// `GET /api/mesh/nodes`.
public struct NodeListJSON: JSONEncodable {
    var nodes: [NodeJSON]

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("nodes"); w.array(nodes)
        }
    }
}

/// `POST /api/mesh/enrollment-tokens` (201): the token, shown once.
public struct EnrollmentTokenJSON: JSONEncodable {
    var token: String
    var expiresAt: String
    var uses: UInt32

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("token"); w.string(token)
            w.key("expires_at"); w.string(expiresAt)
            w.key("uses"); w.uint(UInt64(uses))
        }
    }
}

/// `GET` and `PATCH /api/mesh/settings`.
public struct TenantSettingsJSON: JSONEncodable {
    var settings: Mesh_V1_TenantAdminSettings

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("mesh_enabled"); w.bool(settings.meshEnabled)
            w.key("device_lifetime_seconds")
            if settings.deviceLifetimeSeconds > 0 { w.uint(UInt64(settings.deviceLifetimeSeconds)) } else { w.null() }
        }
    }
}

/// One audit entry, as the audit page and the JSON-lines export write it.
struct AuditEntryJSON: JSONEncodable {
    var entry: Mesh_V1_AuditEntry

    func encode(to w: inout JSONWriter) {
        let e = entry
        w.object { w in
            w.key("id"); w.int(e.id)
            w.key("actor"); w.string(e.actor)
            w.key("action"); w.string(e.action)
            w.key("target_id"); w.string(e.targetID)
            w.key("request_id"); w.string(e.requestID)
            w.key("at"); w.string(Timestamp.iso(ms: e.atMs))
            w.key("detail"); w.string(e.detail)
        }
    }
}

/// The audit log's export formats.
enum AuditExport: String {
    case csv, jsonl

    var contentType: String { self == .csv ? "text/csv; charset=utf-8" : "application/x-ndjson; charset=utf-8" }

    /// The CSV header line (RFC 4180, CRLF line ends).
    static let csvHeader = "id,at,actor,action,target_id,request_id,detail\r\n"

    /// One entry as a line of the format.
    func line(_ e: Mesh_V1_AuditEntry) -> [UInt8] {
        switch self {
        case .jsonl:
            var w = JSONWriter(capacity: 256)
            AuditEntryJSON(entry: e).encode(to: &w)
            return w.bytes + [0x0A]
        case .csv:
            let fields = [String(e.id), Timestamp.iso(ms: e.atMs), e.actor, e.action, e.targetID, e.requestID, e.detail]
            return Array((fields.map(Self.csvField).joined(separator: ",") + "\r\n").utf8)
        }
    }

    /// A CSV field: quoted when it holds a comma, a quote or a line break (quotes doubled), and
    /// with a leading `'` when it starts like a spreadsheet formula (`=`, `+`, `-`, `@`, tab, CR), so
    /// that a device label cannot become a formula in whoever opens the file.
    static func csvField(_ s: String) -> String {
        var v = s
        if let first = v.unicodeScalars.first, ["=", "+", "-", "@", "\t", "\r"].contains(first) { v = "'" + v }
        guard v.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return v }
        return "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

import Foundation
import Hummingbird
import MeshCore
import MeshProto
import NIOCore

/// Writing and strictly reading JSON bodies.
public enum JSONBody {
    /// One encoder for every response (snake_case keys come from the models' property names).
    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// Encodes `value` as the body of a response.
    public static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let data: Data
        do {
            data = try encoder.encode(value)
        } catch {
            data = Data(#"{"error":{"code":"internal","message":"internal error"}}"#.utf8)
            return Response(status: .internalServerError, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        var h = headers
        h[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Parses a request body as one JSON object whose keys are all in `allowed`. Anything else —
    /// not JSON, not an object, an unknown key — is `invalidArgument`, so typos never pass silently.
    public static func object(_ body: ByteBuffer, allowed: Set<String>) throws(MeshError) -> [String: Any] {
        guard body.readableBytes > 0 else { throw .invalidArgument(field: "", message: "request body must be a JSON object") }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [])
        } catch {
            throw .invalidArgument(field: "", message: "request body is not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw .invalidArgument(field: "", message: "request body must be a JSON object") }
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw .invalidArgument(field: unknown, message: "unknown field \"\(unknown)\"")
        }
        return object
    }

    /// A string member; nil when absent or null.
    public static func string(_ object: [String: Any], _ key: String) throws(MeshError) -> String? {
        guard let v = object[key], !(v is NSNull) else { return nil }
        guard let s = v as? String else { throw .invalidArgument(field: key, message: "\(key) must be a string") }
        return s
    }
}

/// A value that encodes as JSON `null` when absent (synthesized `Encodable` would leave the key out).
public struct Nullable<Wrapped: Encodable & Sendable>: Encodable, Sendable {
    public var value: Wrapped?
    public init(_ value: Wrapped?) { self.value = value }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let value { try c.encode(value) } else { try c.encodeNil() }
    }
}

/// Timestamps in responses: ISO 8601, UTC, with milliseconds.
public enum Timestamp {
    private static let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    /// The ISO 8601 form of milliseconds since the epoch.
    public static func iso(ms: Int64) -> String { style.format(Date(unixMilliseconds: ms)) }

    /// nil for 0 ("never").
    public static func isoOrNil(ms: Int64) -> String? { ms > 0 ? iso(ms: ms) : nil }
}

// MARK: Response models

/// A device as `GET /api/mesh/devices` lists it.
public struct DeviceJSON: Encodable, Sendable {
    public var id: String
    public var label: String
    public var slug: String
    public var dnsName: String
    public var type: String
    public var meshIps: [String]
    public var createdAt: String
    public var lastHandshakeAt: Nullable<String>
    public var online: Bool
    public var rxBytes: UInt64
    public var txBytes: UInt64
    public var endpoint: Nullable<String>
    public var ownerUserId: String

    public init(_ d: Mesh_V1_Device) {
        id = d.id
        label = d.label
        slug = d.slug
        dnsName = d.dnsName
        type = d.type.key
        meshIps = [d.ipv4, d.ipv6].filter { !$0.isEmpty }
        createdAt = Timestamp.iso(ms: d.createdAtMs)
        lastHandshakeAt = Nullable(Timestamp.isoOrNil(ms: d.lastHandshakeAtMs))
        online = d.online
        rxBytes = d.rxBytes
        txBytes = d.txBytes
        endpoint = Nullable(d.endpoint.nilIfEmpty)
        ownerUserId = d.ownerUserID
    }
}

/// `GET /api/mesh/devices`.
public struct DeviceListJSON: Encodable, Sendable {
    public var devices: [DeviceJSON]
}

/// `POST /api/mesh/devices` (201): the device, its config and QR code, shown once.
public struct CreatedDeviceJSON: Encodable, Sendable {
    public var id: String
    public var label: String
    public var slug: String
    public var dnsName: String
    public var type: String
    public var meshIps: [String]
    public var createdAt: String
    public var config: String
    public var qrSvg: String
    public var privateKeyNotice: String

    /// What the client is told about the key it just received.
    public static let notice = "This config holds the device's only copy of its private key. It is not stored and will not be shown again."

    public init(_ r: Mesh_V1_CreateDeviceResponse) {
        let d = DeviceJSON(r.device)
        id = d.id
        label = d.label
        slug = d.slug
        dnsName = d.dnsName
        type = d.type
        meshIps = d.meshIps
        createdAt = d.createdAt
        config = r.config
        qrSvg = r.qrSvg
        privateKeyNotice = Self.notice
    }
}

/// The mesh DNS resolver's status on a node.
public struct DNSStatusJSON: Encodable, Sendable {
    public var serving: Bool
    public var zone: String
    public var recordCount: UInt32
    public var lastUpdate: Nullable<String>
    public var listen: [String]
}

/// `GET /api/mesh/state`.
public struct StateJSON: Encodable, Sendable {
    public var active: Bool
    public var listenPort: UInt32
    public var peerCount: UInt32
    public var meshIp: String
    public var meshIpv6: String
    public var dnsStatus: DNSStatusJSON
    public var nodeId: String
    public var interfaceName: String
    public var backend: String
    public var revision: UInt64
    public var lastSyncAt: Nullable<String>

    public init(_ s: Mesh_V1_NodeState, nodeID: String) {
        active = s.active
        listenPort = s.listenPort
        peerCount = s.peerCount
        meshIp = s.meshIp
        meshIpv6 = s.meshIpv6
        dnsStatus = DNSStatusJSON(serving: s.dnsStatus.serving, zone: s.dnsStatus.zone, recordCount: s.dnsStatus.recordCount,
                                  lastUpdate: Nullable(Timestamp.isoOrNil(ms: s.dnsStatus.lastUpdateMs)), listen: s.dnsStatus.listen)
        nodeId = s.nodeID.nilIfEmpty ?? nodeID
        interfaceName = s.interfaceName
        backend = s.backend
        revision = s.revision
        lastSyncAt = Nullable(Timestamp.isoOrNil(ms: s.lastSyncMs))
    }
}

/// One peer of `GET /api/mesh/peers`. The stats fields are present only on plans with per-peer stats.
public struct PeerStatsJSON: Encodable, Sendable {
    public var publicKey: String
    public var allowedIps: [String]
    public var peerId: Nullable<String>
    public var dnsName: Nullable<String>
    public var persistentKeepalive: UInt32
    public var endpoint: Nullable<String>?
    public var lastHandshakeAt: Nullable<String>?
    public var rxBytes: UInt64?
    public var txBytes: UInt64?

    public init(_ p: Mesh_V1_PeerStats, withStats: Bool) {
        publicKey = p.publicKey
        allowedIps = p.allowedIps
        peerId = Nullable(p.peerID.nilIfEmpty)
        dnsName = Nullable(p.dnsName.nilIfEmpty)
        persistentKeepalive = p.persistentKeepalive
        if withStats {
            endpoint = Nullable(p.endpoint.nilIfEmpty)
            lastHandshakeAt = Nullable(Timestamp.isoOrNil(ms: p.lastHandshakeMs))
            rxBytes = p.rxBytes
            txBytes = p.txBytes
        }
    }
}

/// `GET /api/mesh/peers`.
public struct PeerDumpJSON: Encodable, Sendable {
    public var nodeId: String
    /// "basic_state" or "per_peer_stats".
    public var diagnostics: String
    public var readAt: Nullable<String>
    public var peers: [PeerStatsJSON]
}

/// One member of a tenant's mesh, as a node receives it.
public struct MeshPeerJSON: Encodable, Sendable {
    public var id: String
    public var kind: String
    public var publicKey: String
    public var meshIps: [String]
    public var allowedIps: [String]
    public var dnsName: String
    public var endpoint: Nullable<String>
    public var persistentKeepalive: UInt32
    public var hub: Bool

    public init(_ p: Mesh_V1_Peer) {
        id = p.id
        kind = p.kind.key
        publicKey = p.publicKey
        meshIps = p.meshIps
        allowedIps = p.allowedIps
        dnsName = p.dnsName
        endpoint = Nullable(p.endpoint.nilIfEmpty)
        persistentKeepalive = p.persistentKeepalive
        hub = p.hub
    }
}

/// `GET /cp/api/v1/mesh/peers/:node_id`.
public struct SyncJSON: Encodable, Sendable {
    public var tenantId: String
    public var nodeId: String
    public var revision: UInt64
    /// The requesting node itself (`self` in JSON).
    public var selfPeer: MeshPeerJSON
    public var peers: [MeshPeerJSON]
    public var ipv4Prefix: String
    public var ipv6Prefix: String

    enum CodingKeys: String, CodingKey {
        case tenantId, nodeId, revision, selfPeer = "self", peers, ipv4Prefix, ipv6Prefix
    }
}

/// The `mesh_vpn` license feature.
public struct MeshVPNFeatureJSON: Encodable, Sendable {
    public var enabled: Bool
    public var plan: String
    /// null when unlimited.
    public var cap: Nullable<Int>
    public var used: Int
    public var diagnostics: String
    public var requireSaml: Bool

    public init(_ f: Mesh_V1_MeshVpnFeature) {
        enabled = f.enabled
        plan = f.plan.key
        cap = Nullable(f.unlimited ? nil : Int(f.deviceCap))
        used = Int(f.devicesUsed)
        diagnostics = f.diagnostics.key
        requireSaml = f.requireSaml
    }
}

/// `GET /api/license/orbit-features`.
public struct OrbitFeaturesJSON: Encodable, Sendable {
    public var meshVpn: MeshVPNFeatureJSON
}

/// One audit log entry.
public struct AuditEntryJSON: Encodable, Sendable {
    public var id: Int64
    public var actor: String
    public var action: String
    public var targetId: String
    public var requestId: String
    public var at: String
    public var detail: String

    public init(_ e: Mesh_V1_AuditEntry) {
        id = e.id
        actor = e.actor
        action = e.action
        targetId = e.targetID
        requestId = e.requestID
        at = Timestamp.iso(ms: e.atMs)
        detail = e.detail
    }
}

/// `GET /api/mesh/audit`.
public struct AuditPageJSON: Encodable, Sendable {
    public var entries: [AuditEntryJSON]
    /// Pass as `before` for the next page; null on the last page.
    public var nextBefore: Nullable<Int64>
}

/// `GET /api/mesh/ui-config`: settings the web page needs before it calls anything else.
public struct UIConfigJSON: Encodable, Sendable {
    public var pritunlConfigured: Bool
    public var meshDomain: String
    public var deviceTypes: [String]
}

/// `GET /healthz`, `GET /readyz`.
public struct HealthJSON: Encodable, Sendable {
    public var status: String
    public var checks: [String: String]
}

extension Mesh_V1_DiagnosticsLevel {
    /// "basic_state", "per_peer_stats", "audit_log" or "saml_gated".
    public var key: String {
        switch self {
        case .basicState: "basic_state"
        case .perPeerStats: "per_peer_stats"
        case .auditLog: "audit_log"
        case .samlGated: "saml_gated"
        default: "unspecified"
        }
    }
}

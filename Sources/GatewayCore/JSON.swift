import Foundation
import Hummingbird
import MeshDomain
import MeshProto
import NIOCore

/// A value that writes itself as JSON.
///
/// Responses are written with ``JSONWriter`` rather than `JSONEncoder`: on the device list the
/// encoder (its key conversion and boxing) was more than half of the gateway's CPU time, and a
/// direct writer does the same job several times faster.
public protocol JSONEncodable: Sendable {
    func encode(to w: inout JSONWriter)
}

/// A streaming JSON writer: UTF-8 bytes, commas and colons handled, strings escaped (RFC 8259).
public struct JSONWriter {
    /// The JSON written so far.
    public private(set) var bytes: [UInt8] = []
    /// The next element is the first of its container (no comma before it).
    private var first = true
    /// A key was just written: the next value needs no comma.
    private var afterKey = false

    /// An empty writer with room for `capacity` bytes.
    public init(capacity: Int = 1024) { bytes.reserveCapacity(capacity) }

    private mutating func separate() {
        if afterKey {
            afterKey = false
        } else if !first {
            bytes.append(UInt8(ascii: ","))
        }
        first = false
    }

    /// Writes `{`, then `body`'s members, then `}`.
    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "{"))
        first = true
        body(&self)
        bytes.append(UInt8(ascii: "}"))
        first = false
    }

    /// Writes `[`, then `body`'s elements, then `]`.
    public mutating func array(_ body: (inout JSONWriter) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "["))
        first = true
        body(&self)
        bytes.append(UInt8(ascii: "]"))
        first = false
    }

    /// An array of encodable values.
    public mutating func array(_ values: [some JSONEncodable]) {
        array { w in for v in values { v.encode(to: &w) } }
    }

    /// An array of strings.
    public mutating func array(_ values: [String]) {
        array { w in for v in values { w.string(v) } }
    }

    /// A member name inside an object.
    public mutating func key(_ k: String) {
        separate()
        writeQuoted(k)
        bytes.append(UInt8(ascii: ":"))
        afterKey = true
    }

    /// A string value.
    public mutating func string(_ s: String) {
        separate()
        writeQuoted(s)
    }

    /// A string, or `null` for nil.
    public mutating func string(_ s: String?) {
        if let s { string(s) } else { null() }
    }

    /// An integer value.
    public mutating func int(_ v: Int64) {
        separate()
        bytes.append(contentsOf: String(v).utf8)
    }

    /// An integer value.
    public mutating func int(_ v: Int) { int(Int64(v)) }

    /// An unsigned integer value.
    public mutating func uint(_ v: UInt64) {
        separate()
        bytes.append(contentsOf: String(v).utf8)
    }

    /// `true` or `false`.
    public mutating func bool(_ v: Bool) {
        separate()
        bytes.append(contentsOf: (v ? "true" : "false").utf8)
    }

    /// `null`.
    public mutating func null() {
        separate()
        bytes.append(contentsOf: "null".utf8)
    }

    /// A nested value.
    public mutating func value(_ v: some JSONEncodable) { v.encode(to: &self) }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func writeQuoted(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        // Most strings (ids, names, addresses) need no escaping: copy them in one go.
        var plain = true
        var s = s
        s.withUTF8 { u in
            for c in u where c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
                plain = false
                break
            }
            if plain { bytes.append(contentsOf: u) }
        }
        if plain {
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0a: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0d: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                          Self.hex[Int(c >> 4)], Self.hex[Int(c & 0xf)]])
            default: bytes.append(c)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// Writing and strictly reading JSON bodies.
public enum JSONBody {
    /// `value` as the body of a response.
    public static func response(_ value: some JSONEncodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var w = JSONWriter()
        value.encode(to: &w)
        var h = headers
        h[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(bytes: w.bytes)))
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

    /// An integer member; nil when absent. `null`, booleans and fractions are refused, naming the field.
    public static func int(_ object: [String: Any], _ key: String) throws(MeshError) -> Int? {
        guard let v = object[key] else { return nil }
        // JSONSerialization gives booleans as an NSNumber subclass; its type tells them from 0 and 1.
        guard let n = v as? NSNumber, !String(describing: type(of: v)).contains("Boolean"), let i = Int(exactly: n.doubleValue) else {
            throw .invalidArgument(field: key, message: "\(key) must be an integer")
        }
        return i
    }

    /// A boolean member; nil when absent or null. Numbers and strings are refused.
    public static func bool(_ object: [String: Any], _ key: String) throws(MeshError) -> Bool? {
        guard let v = object[key], !(v is NSNull) else { return nil }
        guard let n = v as? NSNumber, String(describing: type(of: v)).contains("Boolean") else {
            throw .invalidArgument(field: key, message: "\(key) must be true or false")
        }
        return n.boolValue
    }

    /// A string member; nil when absent. `null` is not a string: like any other wrong type it is
    /// refused, naming the field.
    public static func string(_ object: [String: Any], _ key: String) throws(MeshError) -> String? {
        guard let v = object[key] else { return nil }
        guard let s = v as? String else { throw .invalidArgument(field: key, message: "\(key) must be a string") }
        return s
    }

    /// The body decoded strictly into `T` (after ``object(_:allowed:)`` checked its members): a
    /// member of the wrong type is `invalidArgument` naming it (`true` is no number, `1` no boolean).
    public static func decode<T: Decodable>(_ body: ByteBuffer, as type: T.Type) throws(MeshError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch let DecodingError.typeMismatch(expected, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw .invalidArgument(field: field, message: "\(field) must be \(Self.kind(expected))")
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw .invalidArgument(field: field, message: field.isEmpty ? "request body is not valid JSON" : "\(field) is not valid")
        } catch {
            throw .invalidArgument(field: "", message: "request body does not have the expected shape")
        }
    }

    static func kind(_ t: Any.Type) -> String {
        switch t {
        case is Bool.Type: "true or false"
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type, is UInt32.Type, is UInt64.Type: "an integer"
        default: "of another type"
        }
    }

    /// An RFC 3339 timestamp member (`"2026-05-01T12:00:00Z"`) as Unix milliseconds; nil when absent
    /// or null.
    public static func timestamp(_ object: [String: Any], _ key: String) throws(MeshError) -> Int64? {
        // A time may be null ("never"), unlike a string member.
        if object[key] is NSNull { return nil }
        guard let text = try string(object, key) else { return nil }
        guard let ms = Timestamp.parseRFC3339(text), ms > 0 else {
            throw .invalidArgument(field: key, message: "\(key) must be an RFC 3339 time such as 2026-05-01T12:00:00Z")
        }
        return ms
    }
}


// MARK: Response models

/// A device as `GET /api/mesh/devices` lists it. `endpoint`, `rx_bytes` and `tx_bytes` are written
/// only when the tenant's plan includes per-peer stats (ProvisionSvc decides: `per_peer_stats`).
public struct DeviceJSON: JSONEncodable {
    /// The protobuf form, written field by field (no copy of its strings in between: a page of
    /// devices is most of the list's work).
    let d: Mesh_V1_Device

    /// From the protobuf form.
    public init(_ d: Mesh_V1_Device) { self.d = d }

    var createdAt: String { Timestamp.iso(ms: d.createdAtMs) }
    var expiresAt: String? { Timestamp.isoOrNil(ms: d.expiresAtMs) }
    var status: String { d.status == .unspecified ? "active" : d.status.key }

    /// `mesh_ips`: the IPv4 and IPv6 addresses it has.
    func meshIPs(to w: inout JSONWriter) {
        w.array { w in
            if !d.ipv4.isEmpty { w.string(d.ipv4) }
            if !d.ipv6.isEmpty { w.string(d.ipv6) }
        }
    }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("id"); w.string(d.id)
            w.key("label"); w.string(d.label)
            w.key("slug"); w.string(d.slug)
            w.key("dns_name"); w.string(d.dnsName)
            w.key("type"); w.string(d.type.key)
            w.key("mesh_ips"); meshIPs(to: &w)
            w.key("created_at"); w.string(createdAt)
            w.key("last_handshake_at"); w.string(Timestamp.isoOrNil(ms: d.lastHandshakeAtMs))
            w.key("online"); w.bool(d.online)
            if d.perPeerStats {
                w.key("rx_bytes"); w.uint(d.rxBytes)
                w.key("tx_bytes"); w.uint(d.txBytes)
                w.key("endpoint"); w.string(d.endpoint.nilIfEmpty)
            }
            w.key("owner_user_id"); w.string(d.ownerUserID)
            w.key("owner_name"); w.string(d.ownerName)
            w.key("status"); w.string(status)
            w.key("suspend_reason"); w.string(d.suspendReason == .unspecified ? nil : d.suspendReason.key)
            w.key("suspended_at"); w.string(Timestamp.isoOrNil(ms: d.suspendedAtMs))
            w.key("expires_at"); w.string(expiresAt)
            w.key("config_outdated"); w.bool(d.configOutdated)
            w.key("config_outdated_reason"); w.string(d.configOutdatedReason.nilIfEmpty)
            w.key("tags"); w.array(d.tags)
        }
    }
}

/// `GET /api/mesh/devices`: one page.
public struct DeviceListJSON: JSONEncodable {
    var devices: [DeviceJSON]
    /// Pass as `cursor` for the next page; null on the last page.
    var nextCursor: String? = nil
    /// Whether the devices carry endpoint and traffic (the plan includes per-peer stats).
    var perPeerStats: Bool = true

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("devices"); w.array(devices)
            w.key("next_cursor"); w.string(nextCursor)
            w.key("per_peer_stats"); w.bool(perPeerStats)
        }
    }
}

/// `POST /api/mesh/devices` (201): the device, its config and QR code, shown once.
public struct CreatedDeviceJSON: JSONEncodable {
    var device: DeviceJSON
    var config: String
    var qrSvg: String
    var qrUnavailableReason: String?
    /// A pairing's fallback: the nodes' HTTPS URLs over the mesh and the tenant CA.
    var fallback: Mesh_V1_PhoneFallback?

    /// What the client is told about the key it just received.
    public static let notice = "This config holds the device's only copy of its private key. It is not stored and will not be shown again."

    /// From the protobuf form.
    public init(_ r: Mesh_V1_CreateDeviceResponse) {
        device = DeviceJSON(r.device)
        config = r.config
        qrSvg = r.qrSvg
        qrUnavailableReason = r.qrUnavailableReason.nilIfEmpty
        fallback = r.hasFallback ? r.fallback : nil
    }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("id"); w.string(device.d.id)
            w.key("label"); w.string(device.d.label)
            w.key("slug"); w.string(device.d.slug)
            w.key("dns_name"); w.string(device.d.dnsName)
            w.key("type"); w.string(device.d.type.key)
            w.key("mesh_ips"); device.meshIPs(to: &w)
            w.key("created_at"); w.string(device.createdAt)
            w.key("status"); w.string(device.status)
            w.key("expires_at"); w.string(device.expiresAt)
            w.key("config"); w.string(config)
            w.key("qr_svg"); w.string(qrSvg)
            w.key("qr_unavailable_reason"); w.string(qrUnavailableReason)
            w.key("private_key_notice"); w.string(Self.notice)
            if let fallback {
                w.key("fallback")
                w.object { w in
                    w.key("urls"); w.array(fallback.nodes.map(\.url))
                    w.key("nodes")
                    w.array { w in
                        for n in fallback.nodes {
                            w.object { w in
                                w.key("node_id"); w.string(n.nodeID)
                                w.key("dns_name"); w.string(n.dnsName)
                                w.key("url"); w.string(n.url)
                                w.key("mesh_ips"); w.array([n.ipv4, n.ipv6].filter { !$0.isEmpty })
                            }
                        }
                    }
                    w.key("ca_certificate_pem"); w.string(fallback.caCertificatePem)
                }
            }
        }
    }
}

/// `GET /api/mesh/state`: a node's interface and DNS status.
public struct StateJSON: JSONEncodable {
    var state: Mesh_V1_NodeState
    /// The node asked about (used when the node leaves its id out).
    var nodeID: String

    /// From the protobuf form.
    public init(_ s: Mesh_V1_NodeState, nodeID: String) {
        state = s
        self.nodeID = nodeID
    }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let s = state
        w.object { w in
            w.key("active"); w.bool(s.active)
            w.key("listen_port"); w.uint(UInt64(s.listenPort))
            w.key("peer_count"); w.uint(UInt64(s.peerCount))
            w.key("mesh_ip"); w.string(s.meshIp)
            w.key("mesh_ipv6"); w.string(s.meshIpv6)
            w.key("dns_status"); w.object { w in
                w.key("serving"); w.bool(s.dnsStatus.serving)
                w.key("zone"); w.string(s.dnsStatus.zone)
                w.key("record_count"); w.uint(UInt64(s.dnsStatus.recordCount))
                w.key("last_update"); w.string(Timestamp.isoOrNil(ms: s.dnsStatus.lastUpdateMs))
                w.key("listen"); w.array(s.dnsStatus.listen)
            }
            w.key("node_id"); w.string(s.nodeID.nilIfEmpty ?? nodeID)
            w.key("interface_name"); w.string(s.interfaceName)
            w.key("backend"); w.string(s.backend)
            w.key("revision"); w.uint(s.revision)
            w.key("last_sync_at"); w.string(Timestamp.isoOrNil(ms: s.lastSyncMs))
        }
    }
}

/// One peer of `GET /api/mesh/peers`. The stats members are written only on plans with per-peer stats.
public struct PeerStatsJSON: JSONEncodable {
    var peer: Mesh_V1_PeerStats
    var withStats: Bool

    /// From the protobuf form.
    public init(_ p: Mesh_V1_PeerStats, withStats: Bool) {
        peer = p
        self.withStats = withStats
    }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let p = peer, stats = withStats
        w.object { w in
            w.key("public_key"); w.string(p.publicKey)
            w.key("allowed_ips"); w.array(p.allowedIps)
            w.key("peer_id"); w.string(p.peerID.nilIfEmpty)
            w.key("dns_name"); w.string(p.dnsName.nilIfEmpty)
            w.key("persistent_keepalive"); w.uint(UInt64(p.persistentKeepalive))
            if stats {
                w.key("endpoint"); w.string(p.endpoint.nilIfEmpty)
                w.key("last_handshake_at"); w.string(Timestamp.isoOrNil(ms: p.lastHandshakeMs))
                w.key("rx_bytes"); w.uint(p.rxBytes)
                w.key("tx_bytes"); w.uint(p.txBytes)
            }
        }
    }
}

/// `GET /api/mesh/peers`.
public struct PeerDumpJSON: JSONEncodable {
    var nodeId: String
    /// "basic_state" or "per_peer_stats".
    var diagnostics: String
    var readAt: String?
    var peers: [PeerStatsJSON]

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("node_id"); w.string(nodeId)
            w.key("diagnostics"); w.string(diagnostics)
            w.key("read_at"); w.string(readAt)
            w.key("peers"); w.array(peers)
        }
    }
}

/// One member of a tenant's mesh, as a node receives it.
public struct MeshPeerJSON: JSONEncodable {
    var peer: Mesh_V1_Peer

    /// From the protobuf form.
    public init(_ p: Mesh_V1_Peer) { peer = p }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let p = peer
        w.object { w in
            w.key("id"); w.string(p.id)
            w.key("kind"); w.string(p.kind.key)
            w.key("public_key"); w.string(p.publicKey)
            w.key("mesh_ips"); w.array(p.meshIps)
            w.key("allowed_ips"); w.array(p.allowedIps)
            w.key("dns_name"); w.string(p.dnsName)
            w.key("endpoint"); w.string(p.endpoint.nilIfEmpty)
            w.key("persistent_keepalive"); w.uint(UInt64(p.persistentKeepalive))
            w.key("hub"); w.bool(p.hub)
        }
    }
}

/// `GET /cp/api/v1/mesh/peers/:node_id`.
public struct SyncJSON: JSONEncodable {
    var tenantId: String
    var nodeId: String
    var revision: UInt64
    /// The requesting node itself (`self` in JSON).
    var selfPeer: MeshPeerJSON
    var peers: [MeshPeerJSON]
    var ipv4Prefix: String
    var ipv6Prefix: String

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("tenant_id"); w.string(tenantId)
            w.key("node_id"); w.string(nodeId)
            w.key("revision"); w.uint(revision)
            w.key("self"); w.value(selfPeer)
            w.key("peers"); w.array(peers)
            w.key("ipv4_prefix"); w.string(ipv4Prefix)
            w.key("ipv6_prefix"); w.string(ipv6Prefix)
        }
    }
}

/// `GET /api/license/orbit-features`: `{"mesh_vpn": {...}}`.
public struct OrbitFeaturesJSON: JSONEncodable {
    var meshVpn: Mesh_V1_MeshVpnFeature

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let f = meshVpn
        w.object { w in
            w.key("mesh_vpn"); w.object { w in
                w.key("enabled"); w.bool(f.enabled)
                w.key("plan"); w.string(f.plan.key)
                // null when unlimited (Enterprise).
                w.key("cap")
                if f.unlimited { w.null() } else { w.uint(UInt64(f.deviceCap)) }
                w.key("used"); w.uint(UInt64(f.devicesUsed))
                w.key("diagnostics"); w.string(f.diagnostics.key)
                w.key("require_saml"); w.bool(f.requireSaml)
            }
        }
    }
}

/// `GET /api/mesh/audit`.
public struct AuditPageJSON: JSONEncodable {
    var entries: [Mesh_V1_AuditEntry]
    /// Pass as `before` for the next page; null on the last page.
    var nextBefore: Int64?

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("entries"); w.array { w in
                for e in entries {
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
            w.key("next_before")
            if let nextBefore { w.int(nextBefore) } else { w.null() }
        }
    }
}

/// `GET /api/mesh/ui-config`: settings the web page needs before it calls anything else.
public struct UIConfigJSON: JSONEncodable {
    var pritunlConfigured: Bool
    var meshDomain: String
    var deviceTypes: [String]
    /// The identity providers people can sign in with (id, button text); empty: tokens only.
    var providers: [(id: String, name: String)] = []

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("pritunl_configured"); w.bool(pritunlConfigured)
            w.key("mesh_domain"); w.string(meshDomain)
            w.key("device_types"); w.array(deviceTypes)
            w.key("sign_in"); w.object { w in
                w.key("providers"); w.array { w in
                    for p in providers {
                        w.object { w in
                            w.key("id"); w.string(p.id)
                            w.key("name"); w.string(p.name)
                            w.key("login_url"); w.string("/api/auth/login?provider=\(p.id)")
                        }
                    }
                }
                w.key("token"); w.bool(true)
            }
        }
    }
}

/// A user as the admin's list shows them.
public struct UserJSON: JSONEncodable {
    var user: Mesh_V1_User

    public init(_ u: Mesh_V1_User) { user = u }

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let u = user
        w.object { w in
            w.key("id"); w.string(u.id)
            w.key("name"); w.string(u.name)
            w.key("email"); w.string(u.email.nilIfEmpty)
            w.key("role"); w.string(u.role.key)
            w.key("status"); w.string(u.status.key)
            w.key("identity")
            if u.status == .active && !u.identitySubject.isEmpty {
                w.object { w in
                    w.key("issuer"); w.string(u.identityIssuer)
                    w.key("subject"); w.string(u.identitySubject)
                }
            } else {
                w.null()
            }
            w.key("invited_subject"); w.string(u.status == .invited ? u.identitySubject.nilIfEmpty : nil)
            w.key("created_at"); w.string(Timestamp.iso(ms: u.createdAtMs))
            w.key("last_sign_in_at"); w.string(Timestamp.isoOrNil(ms: u.lastSignInAtMs))
            w.key("invite_expires_at"); w.string(Timestamp.isoOrNil(ms: u.inviteExpiresAtMs))
        }
    }
}

/// `GET /api/mesh/users`.
public struct UserListJSON: JSONEncodable {
    var users: [UserJSON]

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in w.key("users"); w.array(users) }
    }
}

/// `DELETE /api/mesh/users/:id`.
public struct UserRemovalJSON: JSONEncodable {
    var removal: Mesh_V1_DeleteUserResponse

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("devices_deleted"); w.uint(UInt64(removal.devicesDeleted))
            w.key("devices_reassigned"); w.uint(UInt64(removal.devicesReassigned))
        }
    }
}

/// A personal API token as listed (never the token itself).
public struct APITokenJSON: JSONEncodable {
    var token: Mesh_V1_ApiToken
    /// Set only in the answer that creates it.
    var secret: String?

    /// What the client is told about the token it just received.
    public static let notice = "This is the only time the token is shown. Store it now; only its hash is kept."

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let t = token
        w.object { w in
            w.key("id"); w.string(t.id)
            w.key("name"); w.string(t.name)
            w.key("prefix"); w.string(t.prefix)
            w.key("created_at"); w.string(Timestamp.iso(ms: t.createdAtMs))
            w.key("expires_at"); w.string(Timestamp.iso(ms: t.expiresAtMs))
            w.key("last_used_at"); w.string(Timestamp.isoOrNil(ms: t.lastUsedAtMs))
            if let secret {
                w.key("token"); w.string(secret)
                w.key("notice"); w.string(Self.notice)
            }
        }
    }
}

/// `GET /api/mesh/tokens`.
public struct APITokenListJSON: JSONEncodable {
    var tokens: [APITokenJSON]

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in w.key("tokens"); w.array(tokens) }
    }
}

/// `GET /api/auth/session`: who the caller is and how they signed in.
public struct SessionInfoJSON: JSONEncodable {
    var identity: Mesh_V1_IdentifyResponse
    var tenantID: String
    /// "session", "api_token" or "bearer".
    var credential: String
    /// The session cookie's idle end (sessions only).
    var idleExpires: Int64?

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        let i = identity
        w.object { w in
            w.key("user"); UserJSON(i.user).encode(to: &w)
            w.key("tenant"); w.object { w in
                w.key("id"); w.string(tenantID)
                w.key("name"); w.string(i.tenantName)
                w.key("plan"); w.string(i.plan.key)
            }
            w.key("credential"); w.string(credential)
            w.key("session")
            if credential == "session" {
                w.object { w in
                    w.key("provider"); w.string(i.sessionProvider)
                    w.key("amr"); w.array(i.sessionAmr)
                    w.key("expires_at"); w.string(Timestamp.isoOrNil(ms: i.sessionExpiresAtMs))
                    w.key("idle_expires_at"); w.string(idleExpires.map { Timestamp.iso(ms: $0 * 1000) })
                }
            } else {
                w.null()
            }
        }
    }
}

/// `GET /healthz`, `GET /readyz`.
public struct HealthJSON: JSONEncodable {
    var status: String
    var checks: [String: String]

    /// Writes the JSON form.
    public func encode(to w: inout JSONWriter) {
        w.object { w in
            w.key("status"); w.string(status)
            w.key("checks"); w.object { w in
                for (k, v) in checks.sorted(by: { $0.key < $1.key }) {
                    w.key(k); w.string(v)
                }
            }
        }
    }
}

extension Mesh_V1_DiagnosticsLevel {
    /// "basic_state", "per_peer_stats", "audit_log" or "saml_gated".
    var key: String {
        switch self {
        case .basicState: "basic_state"
        case .perPeerStats: "per_peer_stats"
        case .auditLog: "audit_log"
        case .samlGated: "saml_gated"
        default: "unspecified"
        }
    }
}

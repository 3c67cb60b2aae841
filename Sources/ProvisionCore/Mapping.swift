import Foundation
import MeshCore
import MeshNet
import MeshProto
import MeshStore

/// Rows to protobuf messages.
enum Mapping {
    static func tenant(_ row: Row) throws(MeshError) -> Mesh_V1_Tenant {
        do {
            var t = Mesh_V1_Tenant()
            t.id = try row.decode("id", as: UUID.self).lowercased
            t.name = try row.decode("name")
            t.plan = Mesh_V1_Plan(key: try row.decode("plan")) ?? .unspecified
            t.requireSaml = try row.decode("require_saml")
            t.revision = UInt64(try row.decode("revision", as: Int64.self))
            t.ipv4Prefix = try row.decode("ipv4_prefix")
            t.ipv6Prefix = try row.decode("ipv6_prefix")
            t.createdAtMs = try row.decode("created_ms")
            return t
        } catch {
            throw .internal("corrupt tenant row")
        }
    }

    static func user(_ row: Row) throws(MeshError) -> Mesh_V1_User {
        do {
            var u = Mesh_V1_User()
            u.id = try row.decode("id", as: UUID.self).lowercased
            u.tenantID = try row.decode("tenant_id", as: UUID.self).lowercased
            u.name = try row.decode("name")
            u.role = Mesh_V1_Role(key: try row.decode("role")) ?? .unspecified
            u.createdAtMs = try row.decode("created_ms")
            return u
        } catch {
            throw .internal("corrupt user row")
        }
    }

    /// Columns: id, tenant_id, owner_user_id, label, slug, type, ipv4, ipv6, public_key, created_ms,
    /// handshake_ms (nullable), online, rx_bytes, tx_bytes, endpoint (nullable).
    static func device(_ row: Row, domain: String) throws(MeshError) -> Mesh_V1_Device {
        do {
            var d = Mesh_V1_Device()
            d.id = try row.decode("id", as: UUID.self).lowercased
            d.tenantID = try row.decode("tenant_id", as: UUID.self).lowercased
            d.ownerUserID = try row.decode("owner_user_id", as: UUID.self).lowercased
            d.label = try row.decode("label")
            d.slug = try row.decode("slug")
            d.dnsName = "\(d.slug).\(domain)"
            d.type = Mesh_V1_DeviceType(key: try row.decode("type")) ?? .other
            d.ipv4 = try row.decode("ipv4")
            d.ipv6 = try row.decode("ipv6")
            d.publicKey = try row.decode("public_key")
            d.createdAtMs = try row.decode("created_ms")
            d.lastHandshakeAtMs = try row.decodeIfPresent("handshake_ms", as: Int64.self) ?? 0
            d.online = try row.decode("online")
            d.rxBytes = UInt64(max(0, try row.decode("rx_bytes", as: Int64.self)))
            d.txBytes = UInt64(max(0, try row.decode("tx_bytes", as: Int64.self)))
            d.endpoint = try row.decodeIfPresent("endpoint", as: String.self) ?? ""
            return d
        } catch {
            throw .internal("corrupt device row")
        }
    }

    /// Columns: id, tenant_id, name, slug, public_key, endpoint, listen_port, ipv4, ipv6, created_ms,
    /// seen_ms (nullable), hub.
    static func node(_ row: Row, domain: String) throws(MeshError) -> Mesh_V1_Node {
        do {
            var n = Mesh_V1_Node()
            n.id = try row.decode("id", as: UUID.self).lowercased
            n.tenantID = try row.decode("tenant_id", as: UUID.self).lowercased
            n.name = try row.decode("name")
            n.slug = try row.decode("slug")
            n.dnsName = "\(n.slug).\(domain)"
            n.publicKey = try row.decode("public_key")
            n.endpoint = try row.decode("endpoint")
            n.listenPort = UInt32(try row.decode("listen_port", as: Int.self))
            n.ipv4 = try row.decode("ipv4")
            n.ipv6 = try row.decode("ipv6")
            n.createdAtMs = try row.decode("created_ms")
            n.lastSeenAtMs = try row.decodeIfPresent("seen_ms", as: Int64.self) ?? 0
            n.hub = try row.decode("hub")
            return n
        } catch {
            throw .internal("corrupt node row")
        }
    }

    static func audit(_ row: Row) throws(MeshError) -> Mesh_V1_AuditEntry {
        do {
            var a = Mesh_V1_AuditEntry()
            a.id = try row.decode("id")
            a.tenantID = try row.decode("tenant_id", as: UUID.self).lowercased
            a.actor = try row.decode("actor")
            a.action = try row.decode("action")
            a.targetID = try row.decode("target_id")
            a.requestID = try row.decode("request_id")
            a.detail = try row.decode("detail")
            a.atMs = try row.decode("at_ms")
            return a
        } catch {
            throw .internal("corrupt audit row")
        }
    }

    /// The peer a node sees for a device.
    static func devicePeer(id: UUID, publicKey: String, ipv4: String, ipv6: String, slug: String, domain: String) -> Mesh_V1_Peer {
        var p = Mesh_V1_Peer()
        p.id = id.lowercased
        p.kind = .device
        p.publicKey = publicKey
        p.meshIps = [ipv4, ipv6]
        p.allowedIps = ["\(ipv4)/32", "\(ipv6)/128"]
        p.dnsName = "\(slug).\(domain)"
        return p
    }

    /// The peer a node sees for another node.
    static func nodePeer(id: UUID, publicKey: String, ipv4: String, ipv6: String, slug: String, endpoint: String,
                         keepalive: Int, hub: Bool, domain: String) -> Mesh_V1_Peer {
        var p = Mesh_V1_Peer()
        p.id = id.lowercased
        p.kind = .node
        p.publicKey = publicKey
        p.meshIps = [ipv4, ipv6]
        p.allowedIps = ["\(ipv4)/32", "\(ipv6)/128"]
        p.dnsName = "\(slug).\(domain)"
        p.endpoint = endpoint
        p.persistentKeepalive = UInt32(keepalive)
        p.hub = hub
        return p
    }
}

/// The change outbox: every peer change is a row numbered by the tenant's revision, written in the
/// transaction that makes the change. The tenant row is locked by that transaction, so revisions
/// rise by exactly one, with no gap and no duplicate, whatever the number of replicas.
enum Outbox {
    /// Bumps the tenant's revision, writes the change, and wakes FanoutSvc (NOTIFY is delivered at
    /// commit). One round trip; the tenant row must already be locked by the transaction.
    @discardableResult
    static func append(_ tx: borrowing Transaction, tenant: UUID, op: String, peer: Mesh_V1_Peer) throws -> UInt64 {
        try revision(try tx.batch(statements(tenant: tenant, op: op, peer: peer)))
    }

    /// The statements of ``append(_:tenant:op:peer:)``, for a caller that sends them in a larger
    /// ``Transaction/batch(_:)``: the revision bump, the change row that takes the new revision
    /// (it runs after the bump and sees it), and the NOTIFY.
    static func statements(tenant: UUID, op: String, peer: Mesh_V1_Peer) throws -> [Statement] {
        [
            Statement("UPDATE tenants SET revision = revision + 1 WHERE id = $1", tenant),
            Statement("""
                INSERT INTO peer_changes (tenant_id, revision, op, peer_id, payload)
                SELECT id, revision, $2, $3, $4 FROM tenants WHERE id = $1
                RETURNING revision
                """, tenant, op, UUID(text: peer.id)!, ByteA(try peer.serializedBytes())),
            Statement("SELECT pg_notify($1, $2)", MeshOutbox.channel, tenant.lowercased),
        ]
    }

    /// The revision written, from the results of ``statements(tenant:op:peer:)`` (exactly those three).
    static func revision(_ results: some Collection<QueryResult>) throws -> UInt64 {
        let inserted = results[results.index(results.startIndex, offsetBy: 1)]
        guard let row = inserted.rows.first else { throw MeshError.notFound("unknown tenant") }
        return UInt64(try row.decode("revision", as: Int64.self))
    }
}

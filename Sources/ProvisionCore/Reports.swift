import Foundation
import MeshCore
import MeshProto
import MeshStore

extension Provisioner {
    /// Applies a node's handshake report: per-peer raw counters (so totals survive a counter reset
    /// on either side), the newest handshake, and the endpoint. The status is visible to the next
    /// device list as soon as this commits.
    public func applyReport(_ report: Mesh_V1_HandshakeReport, subject: String) async throws(MeshError) {
        // The subject names the sender's tenant and node; it must match what the message says.
        let parts = subject.split(separator: ".")
        guard parts.count == 6, String(parts[3]) == report.tenantID.lowercased(), String(parts[4]) == report.nodeID.lowercased() else {
            throw .permissionDenied("report subject does not match its tenant and node")
        }
        let tenant = try Validate.uuid(report.tenantID, field: "tenant_id"), node = try Validate.uuid(report.nodeID, field: "node_id")
        let peers = report.peers
        // A handshake time is a moment a node saw: after 2000 and not in the future (an hour's grace
        // for clock skew). Anything else is a broken or hostile report, refused before it is stored.
        let latest = Date().addingTimeInterval(3600).unixMilliseconds
        for (i, p) in peers.enumerated() where p.lastHandshakeMs != 0 && !(946_684_800_000...latest).contains(p.lastHandshakeMs) {
            throw .invalidArgument(field: "peers[\(i)].last_handshake_ms", message: "last_handshake_ms must be a time after 2000 and not in the future")
        }
        let updated: Int = try await run { tx in
            guard try tx.execute("UPDATE nodes SET last_seen_at = now() WHERE id = $1 AND tenant_id = $2", node, tenant) == 1 else {
                throw MeshError.notFound("unknown node")
            }
            var devices = 0
            for p in peers where !p.publicKey.isEmpty {
                let prev = try tx.queryFirst("SELECT rx_raw, tx_raw FROM peer_stats WHERE node_id = $1 AND public_key = $2 FOR UPDATE", node, p.publicKey)
                let lastRx = try prev?.decode("rx_raw", as: Int64.self) ?? 0, lastTx = try prev?.decode("tx_raw", as: Int64.self) ?? 0
                let rx = Int64(clamping: p.rxBytes), txb = Int64(clamping: p.txBytes)
                // A raw counter that went down was reset (interface or peer re-created): count from zero.
                let dRx = rx >= lastRx ? rx - lastRx : rx, dTx = txb >= lastTx ? txb - lastTx : txb
                let handshake: Date? = p.lastHandshakeMs > 0 ? Date(unixMilliseconds: p.lastHandshakeMs) : nil
                let endpoint: String? = p.endpoint.isEmpty ? nil : p.endpoint
                try tx.execute("""
                    INSERT INTO peer_stats (node_id, public_key, rx_raw, tx_raw, last_handshake_at, endpoint, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, now())
                    ON CONFLICT (node_id, public_key) DO UPDATE SET rx_raw = $3, tx_raw = $4,
                      last_handshake_at = coalesce($5, peer_stats.last_handshake_at), endpoint = coalesce($6, peer_stats.endpoint), updated_at = now()
                    """, node, p.publicKey, rx, txb, handshake, endpoint)
                devices += try tx.execute("""
                    UPDATE devices SET rx_bytes = rx_bytes + $3, tx_bytes = tx_bytes + $4,
                      last_handshake_at = greatest(last_handshake_at, $5), endpoint = coalesce($6, endpoint)
                    WHERE tenant_id = $1 AND public_key = $2
                    """, tenant, p.publicKey, dRx, dTx, handshake, endpoint)
            }
            return devices
        }
        logger.debug("handshake report applied", metadata: ["node.id": "\(node.lowercased)", "peers": "\(peers.count)", "devices": "\(updated)",
                                                           "keys": "\(peers.map { "\($0.publicKey.prefix(8)):\($0.lastHandshakeMs)" })"])
    }
}

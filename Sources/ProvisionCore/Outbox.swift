import Foundation
import MeshDomain
import MeshProto
import MeshStore

/// The change outbox: every change of a tenant's mesh is a row numbered by the tenant's revision,
/// written in the transaction that makes the change. The tenant row is locked by that transaction,
/// so revisions rise by exactly one, with no gap and no duplicate, whatever the number of replicas.
/// ``OutboxRelay`` hands the rows to FanoutSvc.
enum Outbox {
    /// Bumps the tenant's revision and writes the change (one round trip). The tenant row must
    /// already be locked by the transaction.
    @discardableResult
    static func append(_ tx: borrowing Transaction, tenant: UUID, change: Mesh_V1_PeersUpdated.OneOf_Change) throws -> UInt64 {
        try revision(try tx.batch(statements(tenant: tenant, change: change)))
    }

    /// The statements of ``append(_:tenant:change:)``, for a caller that sends them in a larger
    /// ``Transaction/batch(_:)``: one statement that bumps the revision and writes the row with the
    /// revision the bump returned (the insert cannot read the bump from the table: a statement sees
    /// the snapshot it started with).
    static func statements(tenant: UUID, change: Mesh_V1_PeersUpdated.OneOf_Change) throws -> [Statement] {
        var u = Mesh_V1_PeersUpdated()
        u.tenantID = tenant.lowercased
        u.change = change
        return [
            Statement("""
                WITH bumped AS (UPDATE tenants SET revision = revision + 1 WHERE id = $1 RETURNING id, revision)
                INSERT INTO outbox (tenant_id, revision, payload) SELECT id, revision, $2 FROM bumped
                RETURNING revision
                """, tenant, ByteA(try u.serializedBytes())),
        ]
    }

    /// The number of statements ``statements(tenant:change:)`` returns.
    static let statementCount = 1

    /// The revision written, from the results of ``statements(tenant:change:)`` (exactly those).
    static func revision(_ results: some Collection<QueryResult>) throws -> UInt64 {
        guard let inserted = results.first else { throw MeshError.internal("no outbox result") }
        guard let row = inserted.rows.first else { throw MeshError.notFound("unknown tenant") }
        return UInt64(try row.decode("revision", as: Int64.self))
    }
}

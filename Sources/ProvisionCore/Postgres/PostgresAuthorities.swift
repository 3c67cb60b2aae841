import Foundation
import MeshDomain
import MeshStore

extension PostgresProvisionStore: AuthorityRepository {
    public func authority(tenant: UUID) async throws(MeshError) -> StoredAuthority? {
        let rows = try await query("SELECT certificate_pem, private_key, key_sealed, not_after FROM tenant_authorities WHERE tenant_id = $1", tenant)
        do {
            return try rows.first.map(Self.authority)
        } catch {
            throw map(error)
        }
    }

    public func insertAuthority(tenant: UUID, _ a: StoredAuthority) async throws(MeshError) -> StoredAuthority {
        try await write { tx in
            _ = try tx.execute("""
                INSERT INTO tenant_authorities (tenant_id, certificate_pem, private_key, key_sealed, not_after)
                SELECT id, $2, $3, $4, $5 FROM tenants WHERE id = $1
                ON CONFLICT (tenant_id) DO NOTHING
                """, tenant, a.certificatePEM, ByteA(a.privateKey), a.keySealed, a.notAfter)
            guard let row = try tx.queryFirst("SELECT certificate_pem, private_key, key_sealed, not_after FROM tenant_authorities WHERE tenant_id = $1",
                                              tenant) else { throw MeshError.notFound("unknown tenant") }
            return try Self.authority(row)
        }
    }

    static func authority(_ r: Row) throws -> StoredAuthority {
        StoredAuthority(certificatePEM: try r.decode("certificate_pem"), privateKey: (try r.decode("private_key", as: ByteA.self)).bytes,
                        keySealed: try r.decode("key_sealed"), notAfter: try r.decode("not_after"))
    }
}

import MeshStore

/// FanoutSvc's tables, in the PostgreSQL schema `fanout`: its own copy of every tenant's mesh, fed
/// only by ProvisionSvc's outbox relay over the bus (mesh.v1.fanout.ingest). SyncFromCP and the
/// catch-up of nodes are served from here. No other service reads or writes them.
public enum FanoutSchema {
    public static let schema = ServiceSchema(name: "fanout", migrations: [
        Migration(version: 1, name: "tenant views", sql: """
            -- Per tenant: the newest revision stored, the newest published to nodes, the settings
            -- (mesh.v1.TenantSettings), and whether a snapshot is being loaded (no sync meanwhile).
            CREATE TABLE tenant_views (
              tenant_id uuid PRIMARY KEY,
              revision bigint NOT NULL DEFAULT 0,
              published_revision bigint NOT NULL DEFAULT 0,
              settings bytea NOT NULL DEFAULT '',
              rebuilding boolean NOT NULL DEFAULT false
            );
            -- Every member (mesh.v1.Member) at the revision that last changed it.
            CREATE TABLE members (
              tenant_id uuid NOT NULL REFERENCES tenant_views (tenant_id) ON DELETE CASCADE,
              member_id uuid NOT NULL,
              revision bigint NOT NULL,
              payload bytea NOT NULL,
              PRIMARY KEY (tenant_id, member_id)
            );
            -- Every change (mesh.v1.PeersUpdated) kept for the catch-up of nodes, pruned after a retention.
            CREATE TABLE changes (
              tenant_id uuid NOT NULL REFERENCES tenant_views (tenant_id) ON DELETE CASCADE,
              revision bigint NOT NULL,
              payload bytea NOT NULL,
              stored_at timestamptz NOT NULL DEFAULT now(),
              PRIMARY KEY (tenant_id, revision)
            );
            CREATE INDEX changes_stored ON changes (stored_at);
            """),
        Migration(version: 2, name: "snapshot ids", sql: """
            -- The snapshot being loaded (IngestRequest.snapshot_id): a later page of any other snapshot
            -- is refused, so two senders never mix their pages.
            ALTER TABLE tenant_views ADD COLUMN rebuild_id text NOT NULL DEFAULT '';
            """),
        Migration(version: 3, name: "access policies", sql: """
            -- The tenant's access policy (mesh.v1.PolicySet), as its last policy change set it.
            ALTER TABLE tenant_views ADD COLUMN policy bytea NOT NULL DEFAULT '';
            """),
    ])
}

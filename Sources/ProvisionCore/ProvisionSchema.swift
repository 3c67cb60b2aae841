import MeshStore

/// ProvisionSvc's tables, in the PostgreSQL schema `provision`: tenants and their settings, users,
/// devices, nodes, names, enrollment, the audit log, the rate limit's window, bus revocations, the
/// change outbox, the lease tasks, and access-policy rules and tags. No other service reads or writes them (docs/architecture.md).
public enum ProvisionSchema {
    public static let schema = ServiceSchema(name: "provision", migrations: [
        Migration(version: 1, name: "tenancy", sql: """
            CREATE TABLE tenants (
              id uuid PRIMARY KEY,
              name text NOT NULL,
              plan text NOT NULL CHECK (plan IN ('free', 'pro', 'team', 'enterprise')),
              require_saml boolean NOT NULL DEFAULT false,
              -- copied from AllocatorSvc at creation; fixed for the tenant's life
              ipv4_prefix text NOT NULL,
              ipv6_prefix text NOT NULL,
              -- the tenant's settings (TenantDefaults at creation); nodes get them as TenantSettings
              domain text NOT NULL,
              node_keepalive int NOT NULL CHECK (node_keepalive BETWEEN 0 AND 65535),
              device_keepalive int NOT NULL CHECK (device_keepalive BETWEEN 0 AND 65535),
              device_mtu int NOT NULL CHECK (device_mtu BETWEEN 1280 AND 9000),
              config_max_nodes int NOT NULL CHECK (config_max_nodes >= 1),
              dns_resolvers int NOT NULL CHECK (dns_resolvers >= 0),
              -- the node that carries the tenant prefix for devices and the other nodes (docs/routing.md)
              hub_node_id uuid,
              mesh_enabled boolean NOT NULL DEFAULT true,
              -- the last change revision written (outbox); bumped by exactly one per change
              revision bigint NOT NULL DEFAULT 0,
              created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE users (
              id uuid PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              name text NOT NULL,
              role text NOT NULL CHECK (role IN ('owner', 'admin')),
              created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX users_tenant ON users (tenant_id);
            """),
        Migration(version: 2, name: "devices and nodes", sql: """
            -- DNS names are shared by devices and nodes: <slug>.<mesh domain> must be unique per tenant.
            CREATE TABLE mesh_names (
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              slug text NOT NULL,
              owner_id uuid NOT NULL,
              PRIMARY KEY (tenant_id, slug)
            );
            CREATE TABLE devices (
              id uuid PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              owner_user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
              label text NOT NULL,
              slug text NOT NULL,
              type text NOT NULL CHECK (type IN ('iphone', 'android', 'laptop', 'other')),
              public_key text NOT NULL UNIQUE,
              ipv4 text NOT NULL,
              ipv6 text NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(),
              last_handshake_at timestamptz,
              rx_bytes bigint NOT NULL DEFAULT 0,
              tx_bytes bigint NOT NULL DEFAULT 0,
              endpoint text,
              -- what the device's wg-quick config lists: its hub and every node with the endpoint and
              -- key it was given (JSON array of PeerCatalog.ListedNode), and, once the mesh moved on,
              -- why the config is outdated
              config_hub_id uuid,
              config_nodes jsonb NOT NULL DEFAULT '[]',
              config_outdated text,
              UNIQUE (tenant_id, slug)
            );
            CREATE INDEX devices_owner ON devices (tenant_id, owner_user_id);
            CREATE TABLE nodes (
              id uuid PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              name text NOT NULL,
              slug text NOT NULL,
              public_key text NOT NULL UNIQUE,
              endpoint text NOT NULL,
              listen_port int NOT NULL CHECK (listen_port BETWEEN 1 AND 65535),
              ipv4 text NOT NULL,
              ipv6 text NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(),
              last_seen_at timestamptz,
              UNIQUE (tenant_id, slug)
            );
            CREATE INDEX nodes_tenant ON nodes (tenant_id, created_at, id);

            -- Raw counters per (node, peer), so device totals survive counter resets on either side.
            CREATE TABLE peer_stats (
              node_id uuid NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
              public_key text NOT NULL,
              rx_raw bigint NOT NULL DEFAULT 0,
              tx_raw bigint NOT NULL DEFAULT 0,
              last_handshake_at timestamptz,
              endpoint text,
              updated_at timestamptz NOT NULL DEFAULT now(),
              PRIMARY KEY (node_id, public_key)
            );

            -- Node enrollment: a node registers with a token an admin created; only its hash is kept.
            CREATE TABLE enrollment_tokens (
              token_hash bytea PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              created_by text NOT NULL,
              expires_at timestamptz NOT NULL,
              uses_left int NOT NULL CHECK (uses_left >= 0)
            );
            """),
        Migration(version: 3, name: "outbox, lease tasks, audit, rate limit", sql: """
            -- The change outbox: one row per change of a tenant's mesh (a mesh.v1.PeersUpdated), written in
            -- the same transaction as the change and numbered by the tenant's revision. The relay hands
            -- rows to FanoutSvc over the bus in revision order and marks them delivered.
            CREATE TABLE outbox (
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              revision bigint NOT NULL,
              payload bytea NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(),
              delivered_at timestamptz,
              PRIMARY KEY (tenant_id, revision)
            );
            CREATE INDEX outbox_undelivered ON outbox (tenant_id, revision) WHERE delivered_at IS NULL;

            -- Addresses asked of AllocatorSvc that must go back unless their owner's row commits:
            -- 'pending' is written before the allocation and deleted by the transaction that commits the
            -- owner; 'release' is written by the transaction that deletes an owner. The lease keeper sends
            -- the due ones back (mesh.v1.allocator.release) until AllocatorSvc confirms.
            CREATE TABLE lease_tasks (
              owner_id uuid PRIMARY KEY,
              tenant_id uuid NOT NULL,
              op text NOT NULL CHECK (op IN ('pending', 'release')),
              -- true for an allocation whose owner never committed: released without quarantine
              never_published boolean NOT NULL,
              due_at timestamptz NOT NULL
            );
            CREATE INDEX lease_tasks_due ON lease_tasks (due_at);

            CREATE TABLE audit_log (
              id bigserial PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              actor text NOT NULL,
              action text NOT NULL,
              target_id text NOT NULL DEFAULT '',
              request_id text NOT NULL DEFAULT '',
              at timestamptz NOT NULL DEFAULT now(),
              detail text NOT NULL DEFAULT ''
            );
            CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id DESC);

            -- Sliding-window log of device creations per user (rate limit), shared by all replicas.
            CREATE TABLE provision_events (
              user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
              at timestamptz NOT NULL
            );
            CREATE INDEX provision_events_user ON provision_events (user_id, at);
            """),
        Migration(version: 4, name: "bus identities", sql: """
            -- A node's own NATS user key (made on the node) and when the newest JWT issued for it expires.
            ALTER TABLE nodes ADD COLUMN bus_public_key text;
            ALTER TABLE nodes ADD COLUMN bus_jwt_expires_at timestamptz;
            CREATE UNIQUE INDEX nodes_bus_public_key ON nodes (bus_public_key) WHERE bus_public_key IS NOT NULL;

            -- Revoked node user keys. The mesh account JWT carries them to nats-server, which then
            -- refuses every JWT issued for the key up to revoked_at. An entry may go once no JWT for
            -- the key can still be valid (prune_after); NULL keeps it.
            CREATE TABLE bus_revocations (
              user_key text PRIMARY KEY,
              node_id uuid NOT NULL,
              revoked_at timestamptz NOT NULL DEFAULT now(),
              prune_after timestamptz
            );
            """),
        Migration(version: 5, name: "sign-in, sessions, API tokens, invitations", sql: """
            -- People sign in through an OpenID Connect provider; a user is keyed by the provider's issuer and
            -- subject. An invited user (status 'invited') names the person by email, or by subject (and
            -- optionally issuer) in identity_subject / identity_issuer; the first matching sign-in binds it.
            ALTER TABLE users ADD COLUMN email text;
            ALTER TABLE users ADD COLUMN identity_issuer text;
            ALTER TABLE users ADD COLUMN identity_subject text;
            ALTER TABLE users ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'invited'));
            ALTER TABLE users ADD COLUMN invite_expires_at timestamptz;
            ALTER TABLE users ADD COLUMN last_sign_in_at timestamptz;
            CREATE UNIQUE INDEX users_identity ON users (identity_issuer, identity_subject) WHERE status = 'active' AND identity_subject IS NOT NULL;
            CREATE INDEX users_invited_email ON users (email) WHERE status = 'invited';
            CREATE INDEX users_invited_subject ON users (identity_subject) WHERE status = 'invited';

            -- Sign-in attempts (the SHA-256 of their state): recorded when a gateway starts one, consumed
            -- once by whichever gateway gets the callback, refused after expires_at.
            CREATE TABLE signin_attempts (
              id bytea PRIMARY KEY,
              provider text NOT NULL,
              expires_at timestamptz NOT NULL,
              used_at timestamptz
            );
            CREATE INDEX signin_attempts_expiry ON signin_attempts (expires_at);

            -- Browser sessions. The gateway holds the session in a sealed cookie; every request is checked
            -- here, so an ended session (logout) or a removed user (cascade) is refused at once.
            CREATE TABLE sessions (
              id uuid PRIMARY KEY,
              user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              provider text NOT NULL,
              -- how the provider authenticated the person (space-separated amr values; "saml" for the gate)
              amr text NOT NULL DEFAULT '',
              acr text NOT NULL DEFAULT '',
              created_at timestamptz NOT NULL DEFAULT now(),
              expires_at timestamptz NOT NULL,
              ended_at timestamptz
            );
            CREATE INDEX sessions_user ON sessions (user_id);
            CREATE INDEX sessions_expiry ON sessions (expires_at);

            -- Personal API tokens: only the SHA-256 of the token is kept, with a display prefix.
            CREATE TABLE api_tokens (
              id uuid PRIMARY KEY,
              user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              name text NOT NULL,
              token_hash bytea NOT NULL UNIQUE,
              prefix text NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(),
              expires_at timestamptz NOT NULL,
              last_used_at timestamptz,
              revoked_at timestamptz
            );
            CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);
            """),
        Migration(version: 6, name: "the token a node registered with", sql: """
            -- A node whose registration committed but whose answer was lost retries with the same
            -- single-use token; the token it spent identifies the retry.
            ALTER TABLE nodes ADD COLUMN enrolled_with bytea;
            """),
        Migration(version: 7, name: "device lifecycle", sql: """
            -- Suspension and expiry (MeshDomain.DeviceLifecycle). A suspended device keeps its row, name and
            -- addresses; its member is published with active = false.
            ALTER TABLE devices ADD COLUMN suspended_at timestamptz;
            ALTER TABLE devices ADD COLUMN suspend_reason text CHECK (suspend_reason IN ('user', 'admin', 'expired'));
            ALTER TABLE devices ADD COLUMN expires_at timestamptz;
            ALTER TABLE devices ADD CONSTRAINT devices_suspension CHECK ((suspended_at IS NULL) = (suspend_reason IS NULL));
            -- The expiry sweeper's candidates, and the device list's order (and cursor).
            CREATE INDEX devices_due ON devices (expires_at) WHERE suspended_at IS NULL AND expires_at IS NOT NULL;
            CREATE INDEX devices_tenant_created ON devices (tenant_id, created_at, id);
            -- A new device's default lifetime (NULL: off), set by the tenant's admins.
            ALTER TABLE tenants ADD COLUMN device_lifetime_seconds int CHECK (device_lifetime_seconds > 0);
            """),
        Migration(version: 8, name: "device count and name indexes", sql: """
            -- The reads a device creation makes under the tenant row lock cost the same at 100 and at
            -- 50,000 devices: the count is kept on the tenant row (by trigger, so no path that adds or
            -- removes devices can forget it), and the slug prefix, owner and oldest-node lookups use
            -- indexes.
            ALTER TABLE tenants ADD COLUMN device_count bigint NOT NULL DEFAULT 0;
            UPDATE tenants t SET device_count = (SELECT count(*) FROM devices d WHERE d.tenant_id = t.id);
            CREATE FUNCTION devices_count() RETURNS trigger
            LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
            BEGIN
              IF TG_OP = 'INSERT' THEN
                UPDATE tenants SET device_count = device_count + 1 WHERE id = NEW.tenant_id;
              ELSE
                UPDATE tenants SET device_count = device_count - 1 WHERE id = OLD.tenant_id;
              END IF;
              RETURN NULL;
            END $$;
            CREATE TRIGGER devices_count AFTER INSERT OR DELETE ON devices
              FOR EACH ROW EXECUTE FUNCTION devices_count();
            CREATE INDEX mesh_names_slug_prefix ON mesh_names (tenant_id, slug text_pattern_ops);
            CREATE INDEX mesh_names_owner ON mesh_names (owner_id);
            CREATE INDEX nodes_tenant_age ON nodes (tenant_id, created_at, id);
            """),
        Migration(version: 9, name: "tenant certificate authorities", sql: """
            -- Each tenant's certificate authority for the nodes' HTTPS fronts (docs/fallback.md). Made on
            -- first use; the first replica to insert wins. The private key is never served: it is sealed
            -- (AES-GCM, key_sealed) when ProvisionSvc has a sealing key, and only signs node certificates.
            CREATE TABLE tenant_authorities (
              tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
              certificate_pem text NOT NULL,
              private_key bytea NOT NULL,
              key_sealed boolean NOT NULL,
              not_after timestamptz NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now()
            );
            """),
        Migration(version: 10, name: "Pritunl walk-through checklist, one-time config links", sql: """
            -- The walk-through from the legacy Pritunl VPN: per user, whether an admin marked the user's
            -- Pritunl access revoked, when and by whom. No row: not checked yet.
            CREATE TABLE migration_checklist (
              user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              pritunl_revoked boolean NOT NULL,
              checked_at timestamptz NOT NULL DEFAULT now(),
              checked_by text NOT NULL
            );
            CREATE INDEX migration_checklist_tenant ON migration_checklist (tenant_id);

            -- One-time config links: only the SHA-256 of the token is kept. The link names the device to
            -- make (label, type, owner); the device and its key are made when the link is opened, which
            -- sets used_at (once; a failed creation clears it again) and then device_id.
            CREATE TABLE config_links (
              id uuid PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
              token_hash bytea NOT NULL UNIQUE,
              label text NOT NULL,
              type text NOT NULL,
              created_by text NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(),
              expires_at timestamptz NOT NULL,
              used_at timestamptz,
              device_id uuid
            );
            CREATE INDEX config_links_pending ON config_links (tenant_id, expires_at) WHERE used_at IS NULL;
            """),
        Migration(version: 11, name: "access policies", sql: """
            -- Access policies (docs/policies.md): the tenant's rules in order, the policy version nodes
            -- report, the DNS filter, and the tags admins give devices and nodes (JSON arrays of strings).
            ALTER TABLE tenants ADD COLUMN dns_filtered boolean NOT NULL DEFAULT false;
            ALTER TABLE tenants ADD COLUMN policy_version bigint NOT NULL DEFAULT 0;
            ALTER TABLE devices ADD COLUMN tags jsonb NOT NULL DEFAULT '[]';
            ALTER TABLE nodes ADD COLUMN tags jsonb NOT NULL DEFAULT '[]';
            CREATE TABLE policy_rules (
              id uuid PRIMARY KEY,
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              position int NOT NULL,
              name text NOT NULL,
              -- mesh.v1.PolicyRule, as validated (PolicyValidation.rule)
              rule bytea NOT NULL,
              updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX policy_rules_tenant ON policy_rules (tenant_id, position);
            """),
        Migration(version: 12, name: "config node ids and tags as arrays", sql: """
            -- Every read of a device or node takes the ids of the nodes a device's config lists and
            -- the tags as text arrays. They are generated from the JSON columns, so a reader need not
            -- open the JSON and no writer can let them drift from it.
            CREATE FUNCTION json_ids(j jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
              RETURN ARRAY(SELECT e.v ->> 'id' FROM jsonb_array_elements(j) WITH ORDINALITY e(v, n) ORDER BY e.n);
            CREATE FUNCTION json_texts(j jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
              RETURN ARRAY(SELECT e.v FROM jsonb_array_elements_text(j) WITH ORDINALITY e(v, n) ORDER BY e.n);
            ALTER TABLE devices ADD COLUMN config_node_ids text[] GENERATED ALWAYS AS (json_ids(config_nodes)) STORED,
                                ADD COLUMN tag_list text[] GENERATED ALWAYS AS (json_texts(tags)) STORED;
            ALTER TABLE nodes ADD COLUMN tag_list text[] GENERATED ALWAYS AS (json_texts(tags)) STORED;
            """),
    ])
}

import MeshStore

/// The control plane's one database schema. PostgreSQL is the single source of truth: every
/// replica of every service is stateless and meets the others here. Each service applies these
/// migrations at start-up under an advisory lock (``Store/migrate(_:)``), so replicas can start at
/// once. docs/architecture.md describes every table.
public enum MeshSchema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "tenancy", sql: """
            CREATE TABLE tenants (
              id uuid PRIMARY KEY,
              name text NOT NULL,
              plan text NOT NULL CHECK (plan IN ('free', 'pro', 'team', 'enterprise')),
              require_saml boolean NOT NULL DEFAULT false,
              -- copied from AllocatorSvc at creation; fixed for the tenant's life
              ipv4_prefix text NOT NULL,
              ipv6_prefix text NOT NULL,
              device_ranges text NOT NULL,
              -- the last peer-change revision written (outbox); bumped by exactly one per change
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

        Migration(version: 2, name: "allocator", sql: """
            -- A tenant's prefixes, fixed for its life. Host numbers are offsets inside the IPv4 prefix;
            -- the IPv6 address of host h is <v6 prefix>::h, so one number names both addresses.
            CREATE TABLE tenant_prefixes (
              tenant_id uuid PRIMARY KEY,
              v4_network bigint NOT NULL,
              v4_length int NOT NULL CHECK (v4_length BETWEEN 8 AND 30),
              v6_prefix text NOT NULL UNIQUE,
              -- hosts [1, node_block) are for nodes, [node_block, size-1) for devices
              node_block int NOT NULL,
              next_node_host int NOT NULL DEFAULT 1,
              next_device_host int NOT NULL,
              slot bigint NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE SEQUENCE tenant_slot_seq MINVALUE 0 START 0;

            -- Who holds which address. Uniqueness is the database's job: one owner per address and
            -- one address per owner, per tenant.
            CREATE TABLE leases (
              tenant_id uuid NOT NULL REFERENCES tenant_prefixes (tenant_id) ON DELETE CASCADE,
              host int NOT NULL,
              owner_id uuid NOT NULL,
              kind text NOT NULL CHECK (kind IN ('device', 'node')),
              -- set in the same transaction that commits the owner's row; unconfirmed leases are swept
              confirmed boolean NOT NULL DEFAULT false,
              created_at timestamptz NOT NULL DEFAULT now(),
              PRIMARY KEY (tenant_id, host),
              UNIQUE (tenant_id, owner_id)
            );
            CREATE INDEX leases_unconfirmed ON leases (created_at) WHERE NOT confirmed;

            -- Released addresses: reusable from available_at on (quarantine for published leases).
            CREATE TABLE free_hosts (
              tenant_id uuid NOT NULL REFERENCES tenant_prefixes (tenant_id) ON DELETE CASCADE,
              host int NOT NULL,
              kind text NOT NULL,
              available_at timestamptz NOT NULL,
              PRIMARY KEY (tenant_id, host)
            );
            CREATE INDEX free_hosts_next ON free_hosts (tenant_id, kind, available_at);

            -- Allocate: one round trip, O(log n) whatever the fill. Errors use SQLSTATE class MA:
            --   MA001 pool exhausted, MA002 address taken, MA003 address outside range,
            --   MA004 unknown tenant, MA005 owner holds a lease of the other kind, MA006 quarantined.
            CREATE FUNCTION mesh_allocate(p_tenant uuid, p_owner uuid, p_kind text, p_requested int)
            RETURNS TABLE (host int, existing boolean, confirmed boolean, created_at timestamptz)
            LANGUAGE plpgsql AS $$
            #variable_conflict use_column
            DECLARE
              tp tenant_prefixes%ROWTYPE;
              l leases%ROWTYPE;
              size int;
              lo int;
              hi int;
              h int;
              q free_hosts%ROWTYPE;
            BEGIN
              SELECT * INTO l FROM leases WHERE leases.tenant_id = p_tenant AND owner_id = p_owner;
              IF FOUND THEN
                IF l.kind <> p_kind THEN
                  RAISE EXCEPTION 'owner already holds a % address', l.kind USING ERRCODE = 'MA005';
                END IF;
                RETURN QUERY SELECT l.host, true, l.confirmed, l.created_at;
                RETURN;
              END IF;
              SELECT * INTO tp FROM tenant_prefixes WHERE tenant_prefixes.tenant_id = p_tenant;
              IF NOT FOUND THEN
                RAISE EXCEPTION 'unknown tenant' USING ERRCODE = 'MA004';
              END IF;
              size := 1 << (32 - tp.v4_length);
              IF p_kind = 'node' THEN lo := 1; hi := tp.node_block - 1;
              ELSE lo := tp.node_block; hi := size - 2; END IF;

              IF p_requested IS NOT NULL THEN
                IF p_requested < lo OR p_requested > hi THEN
                  RAISE EXCEPTION 'address outside the % range', p_kind USING ERRCODE = 'MA003';
                END IF;
                SELECT * INTO q FROM free_hosts WHERE free_hosts.tenant_id = p_tenant AND free_hosts.host = p_requested FOR UPDATE;
                IF FOUND THEN
                  IF q.available_at > now() THEN
                    RAISE EXCEPTION 'address quarantined until %', q.available_at USING ERRCODE = 'MA006';
                  END IF;
                  DELETE FROM free_hosts WHERE free_hosts.tenant_id = p_tenant AND free_hosts.host = p_requested;
                END IF;
                BEGIN
                  INSERT INTO leases (tenant_id, host, owner_id, kind) VALUES (p_tenant, p_requested, p_owner, p_kind);
                EXCEPTION WHEN unique_violation THEN
                  -- the owner raced itself (retry): return what it holds; otherwise the address is taken
                  SELECT * INTO l FROM leases WHERE leases.tenant_id = p_tenant AND owner_id = p_owner;
                  IF FOUND THEN
                    RETURN QUERY SELECT l.host, true, l.confirmed, l.created_at;
                    RETURN;
                  END IF;
                  RAISE EXCEPTION 'address already in use' USING ERRCODE = 'MA002';
                END;
                RETURN QUERY SELECT p_requested, false, false, now();
                RETURN;
              END IF;

              -- 1) a released address whose quarantine is over
              DELETE FROM free_hosts f
               WHERE (f.tenant_id, f.host) = (
                 SELECT f2.tenant_id, f2.host FROM free_hosts f2
                  WHERE f2.tenant_id = p_tenant AND f2.kind = p_kind AND f2.available_at <= now()
                  ORDER BY f2.available_at LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING f.host INTO h;
              -- 2) otherwise the next never-used address (the bump pointer only moves forward)
              LOOP
                EXIT WHEN h IS NOT NULL;
                IF p_kind = 'node' THEN
                  UPDATE tenant_prefixes SET next_node_host = next_node_host + 1
                   WHERE tenant_prefixes.tenant_id = p_tenant AND next_node_host <= hi
                  RETURNING next_node_host - 1 INTO h;
                ELSE
                  UPDATE tenant_prefixes SET next_device_host = next_device_host + 1
                   WHERE tenant_prefixes.tenant_id = p_tenant AND next_device_host <= hi
                  RETURNING next_device_host - 1 INTO h;
                END IF;
                IF h IS NULL THEN
                  RAISE EXCEPTION 'no free % address in the tenant prefix', p_kind USING ERRCODE = 'MA001';
                END IF;
                -- skip an address someone requested explicitly ahead of the pointer
                IF EXISTS (SELECT 1 FROM leases WHERE leases.tenant_id = p_tenant AND leases.host = h) THEN
                  h := NULL;
                END IF;
              END LOOP;
              BEGIN
                INSERT INTO leases (tenant_id, host, owner_id, kind) VALUES (p_tenant, h, p_owner, p_kind);
              EXCEPTION WHEN unique_violation THEN
                SELECT * INTO l FROM leases WHERE leases.tenant_id = p_tenant AND owner_id = p_owner;
                IF FOUND THEN
                  -- a concurrent retry for the same owner won; give this address back at once
                  INSERT INTO free_hosts (tenant_id, host, kind, available_at) VALUES (p_tenant, h, p_kind, now())
                    ON CONFLICT (tenant_id, host) DO NOTHING;
                  RETURN QUERY SELECT l.host, true, l.confirmed, l.created_at;
                  RETURN;
                END IF;
                RAISE;
              END;
              RETURN QUERY SELECT h, false, false, now();
            END;
            $$;

            -- Release: published (confirmed) addresses wait out the quarantine; unconfirmed ones were
            -- never seen by any node and are free at once.
            CREATE FUNCTION mesh_release(p_tenant uuid, p_owner uuid, p_quarantine interval)
            RETURNS TABLE (host int, quarantined boolean, available_at timestamptz)
            LANGUAGE plpgsql AS $$
            #variable_conflict use_column
            DECLARE
              l leases%ROWTYPE;
              at timestamptz;
            BEGIN
              DELETE FROM leases WHERE leases.tenant_id = p_tenant AND owner_id = p_owner RETURNING * INTO l;
              IF NOT FOUND THEN RETURN; END IF;
              at := CASE WHEN l.confirmed THEN now() + p_quarantine ELSE now() END;
              INSERT INTO free_hosts (tenant_id, host, kind, available_at) VALUES (p_tenant, l.host, l.kind, at)
                ON CONFLICT (tenant_id, host) DO UPDATE SET available_at = EXCLUDED.available_at, kind = EXCLUDED.kind;
              RETURN QUERY SELECT l.host, l.confirmed, at;
            END;
            $$;
            """),

        Migration(version: 3, name: "devices and nodes", sql: """
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

        Migration(version: 4, name: "outbox, audit, rate limit", sql: """
            -- The change outbox: one row per peer change, written in the same transaction as the change,
            -- numbered by the tenant's revision. FanoutSvc publishes rows in revision order.
            CREATE TABLE peer_changes (
              tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
              revision bigint NOT NULL,
              op text NOT NULL CHECK (op IN ('added', 'changed', 'removed')),
              peer_id uuid NOT NULL,
              payload bytea NOT NULL,
              created_at timestamptz NOT NULL DEFAULT now(),
              published_at timestamptz,
              PRIMARY KEY (tenant_id, revision)
            );
            CREATE INDEX peer_changes_unpublished ON peer_changes (tenant_id, revision) WHERE published_at IS NULL;

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

        Migration(version: 5, name: "bus identities", sql: """
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
    ]
}

import MeshStore

/// AllocatorSvc's tables, in the PostgreSQL schema `allocator`: no other service reads or writes
/// them (docs/architecture.md, "Tables").
public enum AllocatorSchema {
    public static let schema = ServiceSchema(name: "allocator", migrations: [
        Migration(version: 1, name: "prefixes and leases", sql: """
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
              created_at timestamptz NOT NULL DEFAULT now(),
              PRIMARY KEY (tenant_id, host),
              UNIQUE (tenant_id, owner_id)
            );

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
            RETURNS TABLE (host int, existing boolean, created_at timestamptz)
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
                RETURN QUERY SELECT l.host, true, l.created_at;
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
                IF p_requested < lo OR p_requested > hi
                   OR (p_kind = 'device' AND (tp.v4_network + p_requested) % 256 IN (0, 255)) THEN
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
                    RETURN QUERY SELECT l.host, true, l.created_at;
                    RETURN;
                  END IF;
                  RAISE EXCEPTION 'address already in use' USING ERRCODE = 'MA002';
                END;
                RETURN QUERY SELECT p_requested, false, now();
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
                -- skip an address someone requested explicitly ahead of the pointer, and, for devices,
                -- addresses ending in .0 or .255 (valid inside the prefix, but some clients and people
                -- take them for network or broadcast addresses)
                IF EXISTS (SELECT 1 FROM leases WHERE leases.tenant_id = p_tenant AND leases.host = h)
                   OR (p_kind = 'device' AND (tp.v4_network + h) % 256 IN (0, 255)) THEN
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
                  RETURN QUERY SELECT l.host, true, l.created_at;
                  RETURN;
                END IF;
                RAISE;
              END;
              RETURN QUERY SELECT h, false, now();
            END;
            $$;

            -- Release: published addresses wait out the quarantine; ones the owner's service says were
            -- never published (its owner never committed) are free at once.
            CREATE FUNCTION mesh_release(p_tenant uuid, p_owner uuid, p_quarantine interval, p_never_published boolean)
            RETURNS TABLE (host int, quarantined boolean, available_at timestamptz)
            LANGUAGE plpgsql AS $$
            #variable_conflict use_column
            DECLARE
              l leases%ROWTYPE;
              at timestamptz;
            BEGIN
              DELETE FROM leases WHERE leases.tenant_id = p_tenant AND owner_id = p_owner RETURNING * INTO l;
              IF NOT FOUND THEN RETURN; END IF;
              at := CASE WHEN p_never_published THEN now() ELSE now() + p_quarantine END;
              INSERT INTO free_hosts (tenant_id, host, kind, available_at) VALUES (p_tenant, l.host, l.kind, at)
                ON CONFLICT (tenant_id, host) DO UPDATE SET available_at = EXCLUDED.available_at, kind = EXCLUDED.kind;
              RETURN QUERY SELECT l.host, NOT p_never_published, at;
            END;
            $$;
            """),
        Migration(version: 2, name: "nodes beyond the node block", sql: """
            -- The node block is 1/16 of the prefix (4,095 hosts of a /16); a tenant with more nodes
            -- takes their addresses from the device range once the block is full (same bump pointer
            -- as devices, skipping .0 and .255), so a /16 holds e.g. 10,000 nodes and 50,000 devices.
            CREATE OR REPLACE FUNCTION mesh_allocate(p_tenant uuid, p_owner uuid, p_kind text, p_requested int)
            RETURNS TABLE (host int, existing boolean, created_at timestamptz)
            LANGUAGE plpgsql AS $$
            #variable_conflict use_column
            DECLARE
              tp tenant_prefixes%ROWTYPE;
              l leases%ROWTYPE;
              size int;
              lo int;
              hi int;
              overflow boolean := false;
              h int;
              q free_hosts%ROWTYPE;
            BEGIN
              SELECT * INTO l FROM leases WHERE leases.tenant_id = p_tenant AND owner_id = p_owner;
              IF FOUND THEN
                IF l.kind <> p_kind THEN
                  RAISE EXCEPTION 'owner already holds a % address', l.kind USING ERRCODE = 'MA005';
                END IF;
                RETURN QUERY SELECT l.host, true, l.created_at;
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
                IF p_requested < lo OR p_requested > hi
                   OR (p_kind = 'device' AND (tp.v4_network + p_requested) % 256 IN (0, 255)) THEN
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
                    RETURN QUERY SELECT l.host, true, l.created_at;
                    RETURN;
                  END IF;
                  RAISE EXCEPTION 'address already in use' USING ERRCODE = 'MA002';
                END;
                RETURN QUERY SELECT p_requested, false, now();
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
                IF p_kind = 'node' AND NOT overflow THEN
                  UPDATE tenant_prefixes SET next_node_host = next_node_host + 1
                   WHERE tenant_prefixes.tenant_id = p_tenant AND next_node_host <= hi
                  RETURNING next_node_host - 1 INTO h;
                  IF h IS NULL THEN
                    -- the node block is full: further nodes take addresses from the device range
                    overflow := true;
                    CONTINUE;
                  END IF;
                ELSIF p_kind = 'node' THEN
                  UPDATE tenant_prefixes SET next_device_host = next_device_host + 1
                   WHERE tenant_prefixes.tenant_id = p_tenant AND next_device_host <= size - 2
                  RETURNING next_device_host - 1 INTO h;
                ELSE
                  UPDATE tenant_prefixes SET next_device_host = next_device_host + 1
                   WHERE tenant_prefixes.tenant_id = p_tenant AND next_device_host <= hi
                  RETURNING next_device_host - 1 INTO h;
                END IF;
                IF h IS NULL THEN
                  RAISE EXCEPTION 'no free % address in the tenant prefix', p_kind USING ERRCODE = 'MA001';
                END IF;
                -- skip an address someone requested explicitly ahead of the pointer, and, for devices,
                -- addresses ending in .0 or .255 (valid inside the prefix, but some clients and people
                -- take them for network or broadcast addresses)
                IF EXISTS (SELECT 1 FROM leases WHERE leases.tenant_id = p_tenant AND leases.host = h)
                   OR ((p_kind = 'device' OR overflow) AND (tp.v4_network + h) % 256 IN (0, 255)) THEN
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
                  RETURN QUERY SELECT l.host, true, l.created_at;
                  RETURN;
                END IF;
                RAISE;
              END;
              RETURN QUERY SELECT h, false, now();
            END;
            $$;
            """),
    ])
}

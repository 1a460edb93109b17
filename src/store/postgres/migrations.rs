//! Schema migrations, applied in order, with the same versions as SQLite's
//! (`store/sqlite/migrations.rs`): version N has the same tables and columns
//! in both (a test compares them). `inkan_schema` holds the count applied.
//! Types follow PostgreSQL: `BIGINT` for SQLite's integers, `BYTEA` for its
//! blobs, `BOOLEAN` for its 0/1 flags, identity columns for its row ids.
//! PostgreSQL alone has the tables that SQLite keeps in one process's memory
//! or in a file (pending logins, SADs, the auth epoch).

use tokio_postgres::Client;

use crate::seam::StoreError;

/// The advisory lock migrations take: "inkan" and 2 (the write lock is 1).
const MIGRATION_LOCK: i64 = 0x696e_6b61_6e00_0002;

/// Each entry moves the schema one version forward. Never edit a released
/// entry: append a new one, here and in SQLite's list.
const MIGRATIONS: &[&str] = &[
    // 1: users, keys, audit (and the state several nodes share)
    r#"
    CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        qualification TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
        created_at    BIGINT NOT NULL
    );

    CREATE TABLE keys (
        user_id      TEXT NOT NULL REFERENCES users(id),
        generation   BIGINT NOT NULL CHECK (generation > 0),
        algorithm    TEXT NOT NULL CHECK (algorithm IN ('rsa2048', 'rsa3072', 'p256')),
        token_id     BYTEA NOT NULL UNIQUE,
        public_key   BYTEA NOT NULL,
        csr          BYTEA NOT NULL,
        certificate  BYTEA,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
        created_at   BIGINT NOT NULL,
        activated_at BIGINT,
        retired_at   BIGINT,
        PRIMARY KEY (user_id, generation),
        CHECK (state != 'active' OR certificate IS NOT NULL)
    );
    CREATE UNIQUE INDEX keys_one_active ON keys(user_id) WHERE state = 'active';
    CREATE UNIQUE INDEX keys_one_pending ON keys(user_id) WHERE state = 'pending';

    CREATE TABLE audit (
        seq        BIGINT PRIMARY KEY,
        at         BIGINT NOT NULL,
        actor      TEXT NOT NULL,
        event      TEXT NOT NULL,
        user_id    TEXT,
        generation BIGINT,
        digest     TEXT,
        outcome    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        prev_hash  BYTEA NOT NULL,
        hash       BYTEA NOT NULL
    );
    CREATE INDEX audit_user ON audit(user_id, seq);
    CREATE FUNCTION inkan_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit log is append-only'; END
    $$;
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_append_only_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION inkan_audit_append_only();

    -- the last row's seq and hash, updated with every append: a deleted tail
    -- shows. Its one row exists from the start, so that appenders on every
    -- node can lock it (SELECT ... FOR UPDATE) before reading it.
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  BIGINT NOT NULL,
        hash BYTEA NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

    -- PostgreSQL only: bumped (with a NOTIFY) after every change of the auth state
    CREATE TABLE auth_epoch (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO auth_epoch (id, version) VALUES (1, 0);

    -- PostgreSQL only: short-lived state (SQLite keeps it in the process),
    -- not WAL-logged: a crash of the database forgets logins in flight
    CREATE UNLOGGED TABLE oidc_requests (
        id         TEXT PRIMARY KEY,
        request    TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX oidc_requests_expiry ON oidc_requests(expires_at);
    CREATE UNLOGGED TABLE oidc_codes (
        code_hash  BYTEA PRIMARY KEY,
        code       TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX oidc_codes_expiry ON oidc_codes(expires_at);
    CREATE UNLOGGED TABLE sads (
        sad_hash   BYTEA PRIMARY KEY,
        sad        TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX sads_expiry ON sads(expires_at);
    "#,
    // 2: the HTTPS service: signing clients, auth sessions, card mappings
    r#"
    CREATE TABLE clients (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        secret_hash   BYTEA NOT NULL,
        redirect_uris TEXT NOT NULL,
        created_at    BIGINT NOT NULL
    );

    CREATE TABLE sessions (
        token_hash BYTEA PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id),
        method     TEXT NOT NULL CHECK (method IN ('hpki', 'jpki', 'fido')),
        client_id  TEXT NOT NULL,
        scope      TEXT NOT NULL,
        auth_time  BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);

    CREATE TABLE hpki_mappings (
        issuer     BYTEA NOT NULL,
        serial     BYTEA NOT NULL,
        user_id    TEXT NOT NULL REFERENCES users(id),
        subject    TEXT NOT NULL,
        not_after  BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, serial)
    );
    CREATE INDEX hpki_mappings_user ON hpki_mappings(user_id);

    CREATE TABLE jpki_links (
        issuer      BYTEA NOT NULL,
        serial      BYTEA NOT NULL,
        spki_sha256 BYTEA NOT NULL,
        user_id     TEXT NOT NULL REFERENCES users(id),
        subject     TEXT NOT NULL,
        not_after   BIGINT NOT NULL,
        created_at  BIGINT NOT NULL,
        PRIMARY KEY (issuer, serial)
    );
    CREATE INDEX jpki_links_spki ON jpki_links(spki_sha256);
    CREATE INDEX jpki_links_user ON jpki_links(user_id);

    -- PostgreSQL only: a change of what a cached auth session depends on (the
    -- session, its user's status, the user's keys) moves the auth epoch in the
    -- same transaction, whatever made it (a node, the CLI, a hand edit): every
    -- node hears of it when it commits.
    CREATE FUNCTION inkan_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE v BIGINT;
        BEGIN
            IF EXISTS (SELECT 1 FROM changed) THEN
                UPDATE auth_epoch SET version = version + 1 WHERE id = 1 RETURNING version INTO v;
                PERFORM pg_notify('inkan_auth_epoch', v::TEXT);
            END IF;
            RETURN NULL;
        END
    $$;
    CREATE TRIGGER sessions_updated_auth AFTER UPDATE ON sessions
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION inkan_auth_changed();
    CREATE TRIGGER sessions_deleted_auth AFTER DELETE ON sessions
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION inkan_auth_changed();
    CREATE TRIGGER users_updated_auth AFTER UPDATE ON users
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION inkan_auth_changed();
    CREATE TRIGGER users_deleted_auth AFTER DELETE ON users
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION inkan_auth_changed();
    CREATE TRIGGER keys_updated_auth AFTER UPDATE ON keys
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION inkan_auth_changed();
    CREATE TRIGGER keys_deleted_auth AFTER DELETE ON keys
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION inkan_auth_changed();
    "#,
    // 3: FIDO2 phones, QR tickets, registration codes
    r#"
    CREATE TABLE devices (
        user_id       TEXT PRIMARY KEY REFERENCES users(id),
        credential_id BYTEA NOT NULL UNIQUE,
        passkey       TEXT NOT NULL,
        counter       BIGINT NOT NULL CHECK (counter >= 0),
        label         TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        last_used_at  BIGINT
    );

    CREATE TABLE tickets (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        phone_hash BYTEA UNIQUE,
        pc_hash    BYTEA UNIQUE,
        pc_claimed BOOLEAN NOT NULL,
        phase      BIGINT NOT NULL DEFAULT 0,
        replace_ok BOOLEAN NOT NULL DEFAULT FALSE,
        purpose    TEXT NOT NULL CHECK (purpose IN ('login', 'enroll', 'change', 'verify', 'link')),
        via        TEXT NOT NULL CHECK (via IN ('hpki', 'jpki', 'fido', 'regcode')),
        user_id    TEXT NOT NULL REFERENCES users(id),
        oidc_req   TEXT,
        regcode_id BIGINT,
        action     TEXT NOT NULL CHECK (action IN ('authenticate', 'register', 'none')),
        step       TEXT NOT NULL CHECK (step IN ('confirm', 'waiting', 'ceremony', 'done', 'collected', 'cancelled')),
        ceremony   TEXT,
        error      TEXT,
        labelled   BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        CHECK (step = 'ceremony' OR ceremony IS NULL)
    );
    CREATE INDEX tickets_user ON tickets(user_id);
    CREATE INDEX tickets_expiry ON tickets(expires_at);

    CREATE TABLE regcodes (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        code_hash     BYTEA NOT NULL UNIQUE,
        user_id       TEXT NOT NULL REFERENCES users(id),
        password_hash TEXT NOT NULL,
        failures      BIGINT NOT NULL DEFAULT 0,
        status        TEXT NOT NULL CHECK (status IN ('active', 'locked', 'revoked', 'replaced', 'used')),
        created_at    BIGINT NOT NULL,
        expires_at    BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX regcodes_one_active ON regcodes(user_id) WHERE status = 'active';

    CREATE TABLE hpki_subject_mappings (
        issuer     BYTEA NOT NULL,
        attribute  TEXT NOT NULL CHECK (attribute IN ('serialNumber')),
        value      TEXT NOT NULL,
        user_id    TEXT NOT NULL REFERENCES users(id),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, attribute, value)
    );
    CREATE INDEX hpki_subject_mappings_user ON hpki_subject_mappings(user_id);
    "#,
    // 4: phones that were replaced or removed
    r#"
    CREATE TABLE retired_devices (
        credential_id BYTEA PRIMARY KEY,
        user_id       TEXT NOT NULL REFERENCES users(id),
        passkey       TEXT NOT NULL,
        label         TEXT NOT NULL,
        registered_at BIGINT NOT NULL,
        retired_at    BIGINT NOT NULL,
        reason        TEXT NOT NULL CHECK (reason IN ('replaced', 'removed'))
    );
    CREATE INDEX retired_devices_user ON retired_devices(user_id, retired_at);
    "#,
    // 5: SADs counted per auth session (a cap on what one session holds);
    // pending authorization requests in a ring of slots (a cap on how many
    // wait, the oldest overwritten; in-flight logins are started again)
    r#"
    ALTER TABLE sads ADD COLUMN session BYTEA;
    CREATE INDEX sads_session ON sads(session, expires_at);
    DELETE FROM oidc_requests;
    ALTER TABLE oidc_requests ADD COLUMN slot BIGINT;
    CREATE UNIQUE INDEX oidc_requests_slot ON oidc_requests(slot);
    CREATE SEQUENCE oidc_request_slots;
    "#,
    // 6: seals of the audit chain: the HMAC, by a key in the token, of the
    // hash of the row named and of the previous seal (append-only, as the rows)
    r#"
    CREATE TABLE audit_seals (
        seq  BIGINT PRIMARY KEY,
        hash BYTEA NOT NULL,
        prev BYTEA NOT NULL,
        mac  BYTEA NOT NULL,
        at   BIGINT NOT NULL
    );
    CREATE TRIGGER audit_seals_append_only_update BEFORE UPDATE ON audit_seals
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_seals_append_only_delete BEFORE DELETE ON audit_seals
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_seals_append_only_truncate BEFORE TRUNCATE ON audit_seals
        FOR EACH STATEMENT EXECUTE FUNCTION inkan_audit_append_only();
    "#,
    // 7: the PC that started a ticket (address, browser, signing system, the
    // secret of its confirmation numbers), shown on the phone
    "ALTER TABLE tickets ADD COLUMN pc_info TEXT;",
    // 8: decoy tickets: a QR code for an ID without a usable phone (unknown,
    // disabled, none registered) looks like any other, so that the start
    // pages do not tell which IDs exist; such a row names the typed ID in
    // decoy_for instead of a user
    r#"
    ALTER TABLE tickets ALTER COLUMN user_id DROP NOT NULL;
    ALTER TABLE tickets ADD COLUMN decoy_for TEXT;
    ALTER TABLE tickets ADD CONSTRAINT tickets_one_user CHECK ((user_id IS NULL) <> (decoy_for IS NULL));
    ALTER TABLE tickets ADD CONSTRAINT tickets_decoy_flows
        CHECK (decoy_for IS NULL OR (purpose IN ('login', 'change') AND via = 'fido'));
    CREATE INDEX tickets_decoy ON tickets(decoy_for);
    "#,
    // 9: time-stamps of the audit chain (RFC 3161 tokens over a sealed
    // row's hash; append-only, as the rows)
    r#"
    CREATE TABLE audit_timestamps (
        seq   BIGINT PRIMARY KEY,
        hash  BYTEA NOT NULL,
        token BYTEA NOT NULL,
        at    BIGINT NOT NULL
    );
    CREATE TRIGGER audit_timestamps_append_only_update BEFORE UPDATE ON audit_timestamps
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_timestamps_append_only_delete BEFORE DELETE ON audit_timestamps
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    "#,
    // 10: archived segments of the audit chain (`inkan audit archive`): the
    // rows through `seq` moved out to a segment file whose SHA-256 is kept,
    // the record MACed by the token's seal key and chained to the one
    // before; the live chain goes on from `hash`. Rows, seals and
    // time-stamps may be deleted through the last archived row only.
    r#"
    CREATE TABLE audit_archive (
        seq      BIGINT PRIMARY KEY,
        first    BIGINT NOT NULL,
        hash     BYTEA NOT NULL,
        seal_mac BYTEA NOT NULL,
        segment  BYTEA NOT NULL,
        file     TEXT NOT NULL,
        at       BIGINT NOT NULL,
        prev_mac BYTEA NOT NULL,
        mac      BYTEA NOT NULL
    );
    CREATE TRIGGER audit_archive_append_only_update BEFORE UPDATE ON audit_archive
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_archive_append_only_delete BEFORE DELETE ON audit_archive
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_append_only();
    CREATE TRIGGER audit_archive_append_only_truncate BEFORE TRUNCATE ON audit_archive
        FOR EACH STATEMENT EXECUTE FUNCTION inkan_audit_append_only();
    CREATE FUNCTION inkan_audit_archived_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.seq > (SELECT coalesce(max(seq), 0) FROM audit_archive) THEN
                RAISE EXCEPTION 'the audit log is append-only';
            END IF;
            RETURN OLD;
        END
    $$;
    DROP TRIGGER audit_append_only_delete ON audit;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_archived_only();
    DROP TRIGGER audit_seals_append_only_delete ON audit_seals;
    CREATE TRIGGER audit_seals_append_only_delete BEFORE DELETE ON audit_seals
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_archived_only();
    DROP TRIGGER audit_timestamps_append_only_delete ON audit_timestamps;
    CREATE TRIGGER audit_timestamps_append_only_delete BEFORE DELETE ON audit_timestamps
        FOR EACH ROW EXECUTE FUNCTION inkan_audit_archived_only();
    "#,
    // 11: the login methods are the code's to list (`auth::Method`), not the
    // schema's: a new method needs no migration.
    r#"
    ALTER TABLE sessions DROP CONSTRAINT sessions_method_check;
    ALTER TABLE tickets DROP CONSTRAINT tickets_via_check;
    "#,
];

/// Applies the missing migrations in one transaction, under an advisory lock:
/// nodes that start at the same moment migrate once, one after the other.
pub(super) async fn migrate(conn: &mut Client) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS inkan_schema (
             id      INTEGER PRIMARY KEY CHECK (id = 1),
             version BIGINT NOT NULL
         );
         INSERT INTO inkan_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
    )
    .await?;
    let current: i64 = tx.query_one("SELECT version FROM inkan_schema WHERE id = 1", &[]).await?.get(0);
    if current > known {
        return Err(StoreError::TooNew { found: current, known });
    }
    if current == known {
        // Nothing to do: release the lock at once.
        tx.rollback().await?;
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE inkan_schema SET version = $1 WHERE id = 1", &[&(i as i64 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(())
}

//! Schema migrations, applied in order; `PRAGMA user_version` is the count applied.

use rusqlite::Connection;

use crate::seam::StoreError;

/// Each entry moves the schema one version forward. Never edit a released entry:
/// append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: users, keys, audit
    r#"
    CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        qualification TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
        created_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE keys (
        user_id      TEXT NOT NULL REFERENCES users(id),
        generation   INTEGER NOT NULL CHECK (generation > 0),
        algorithm    TEXT NOT NULL CHECK (algorithm IN ('rsa2048', 'rsa3072', 'p256')),
        token_id     BLOB NOT NULL UNIQUE,
        public_key   BLOB NOT NULL,
        csr          BLOB NOT NULL,
        certificate  BLOB,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
        created_at   INTEGER NOT NULL,
        activated_at INTEGER,
        retired_at   INTEGER,
        PRIMARY KEY (user_id, generation),
        CHECK (state != 'active' OR certificate IS NOT NULL)
    ) STRICT;
    -- exactly one active key per user at most
    CREATE UNIQUE INDEX keys_one_active ON keys(user_id) WHERE state = 'active';
    -- at most one key waiting for its certificate
    CREATE UNIQUE INDEX keys_one_pending ON keys(user_id) WHERE state = 'pending';

    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        event      TEXT NOT NULL,
        user_id    TEXT,
        generation INTEGER,
        digest     TEXT,
        outcome    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        prev_hash  BLOB NOT NULL,
        hash       BLOB NOT NULL
    ) STRICT;
    CREATE INDEX audit_user ON audit(user_id, seq);
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    -- the last row's seq and hash, updated with every append: a deleted tail shows
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash BLOB NOT NULL
    ) STRICT;
    "#,
    // 2: the HTTPS service: signing clients, auth sessions, card mappings
    r#"
    CREATE TABLE clients (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        secret_hash   BLOB NOT NULL,
        redirect_uris TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    ) STRICT;

    -- an auth session = an access token (stored as its SHA-256)
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id),
        method     TEXT NOT NULL CHECK (method IN ('hpki', 'jpki', 'fido')),
        client_id  TEXT NOT NULL,
        scope      TEXT NOT NULL,
        auth_time  INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sessions_user ON sessions(user_id);

    -- HPKI card certificate (issuer, serial) -> user, maintained by operators
    CREATE TABLE hpki_mappings (
        issuer     BLOB NOT NULL,
        serial     BLOB NOT NULL,
        user_id    TEXT NOT NULL REFERENCES users(id),
        subject    TEXT NOT NULL,
        not_after  INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, serial)
    ) STRICT;
    CREATE INDEX hpki_mappings_user ON hpki_mappings(user_id);

    -- My Number card certificate -> user; also found by public key
    CREATE TABLE jpki_links (
        issuer      BLOB NOT NULL,
        serial      BLOB NOT NULL,
        spki_sha256 BLOB NOT NULL,
        user_id     TEXT NOT NULL REFERENCES users(id),
        subject     TEXT NOT NULL,
        not_after   INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (issuer, serial)
    ) STRICT;
    CREATE INDEX jpki_links_spki ON jpki_links(spki_sha256);
    CREATE INDEX jpki_links_user ON jpki_links(user_id);
    "#,
    // 3: FIDO2 phones, QR tickets, registration codes
    r#"
    -- one registered phone (passkey) per user
    CREATE TABLE devices (
        user_id       TEXT PRIMARY KEY REFERENCES users(id),
        credential_id BLOB NOT NULL UNIQUE,
        passkey       TEXT NOT NULL,
        counter       INTEGER NOT NULL CHECK (counter >= 0),
        label         TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        last_used_at  INTEGER
    ) STRICT;

    -- a QR ticket: one PC flow (login, enrollment, device change, card link) as a state machine
    CREATE TABLE tickets (
        id         INTEGER PRIMARY KEY,
        phone_hash BLOB UNIQUE,
        pc_hash    BLOB UNIQUE,
        pc_claimed INTEGER NOT NULL CHECK (pc_claimed IN (0, 1)),
        phase      INTEGER NOT NULL DEFAULT 0,
        replace_ok INTEGER NOT NULL DEFAULT 0 CHECK (replace_ok IN (0, 1)),
        purpose    TEXT NOT NULL CHECK (purpose IN ('login', 'enroll', 'change', 'verify', 'link')),
        via        TEXT NOT NULL CHECK (via IN ('hpki', 'jpki', 'fido', 'regcode')),
        user_id    TEXT NOT NULL REFERENCES users(id),
        oidc_req   TEXT,
        regcode_id INTEGER,
        action     TEXT NOT NULL CHECK (action IN ('authenticate', 'register', 'none')),
        step       TEXT NOT NULL CHECK (step IN ('confirm', 'waiting', 'ceremony', 'done', 'collected', 'cancelled')),
        ceremony   TEXT,
        error      TEXT,
        labelled   INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        CHECK (step = 'ceremony' OR ceremony IS NULL)
    ) STRICT;
    CREATE INDEX tickets_user ON tickets(user_id);
    CREATE INDEX tickets_expiry ON tickets(expires_at);

    -- printed initial-registration codes (URL + password)
    CREATE TABLE regcodes (
        id            INTEGER PRIMARY KEY,
        code_hash     BLOB NOT NULL UNIQUE,
        user_id       TEXT NOT NULL REFERENCES users(id),
        password_hash TEXT NOT NULL,
        failures      INTEGER NOT NULL DEFAULT 0,
        status        TEXT NOT NULL CHECK (status IN ('active', 'locked', 'revoked', 'replaced', 'used')),
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL
    ) STRICT;
    -- issuing a new code replaces the old one
    CREATE UNIQUE INDEX regcodes_one_active ON regcodes(user_id) WHERE status = 'active';

    -- HPKI cards mapped by a subject attribute (serialNumber: the registry number),
    -- so that a renewed card of the same holder maps without an operator
    CREATE TABLE hpki_subject_mappings (
        issuer     BLOB NOT NULL,
        attribute  TEXT NOT NULL CHECK (attribute IN ('serialNumber')),
        value      TEXT NOT NULL,
        user_id    TEXT NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, attribute, value)
    ) STRICT;
    CREATE INDEX hpki_subject_mappings_user ON hpki_subject_mappings(user_id);
    "#,
    // 4: phones that were replaced or removed, kept a while so that a phone
    // still holding its old passkey can be told why it no longer signs in
    r#"
    CREATE TABLE retired_devices (
        credential_id BLOB PRIMARY KEY,
        user_id       TEXT NOT NULL REFERENCES users(id),
        passkey       TEXT NOT NULL,
        label         TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        retired_at    INTEGER NOT NULL,
        reason        TEXT NOT NULL CHECK (reason IN ('replaced', 'removed'))
    ) STRICT;
    CREATE INDEX retired_devices_user ON retired_devices(user_id, retired_at);
    "#,
    // 5: nothing here (PostgreSQL counts SADs per session in its table; one
    // node keeps SADs in memory): the versions of both backends stay equal.
    "",
    // 6: seals of the audit chain: the HMAC, by a key in the token, of the
    // hash of the row named and of the previous seal (append-only, as the rows)
    r#"
    CREATE TABLE audit_seals (
        seq  INTEGER PRIMARY KEY,
        hash BLOB NOT NULL,
        prev BLOB NOT NULL,
        mac  BLOB NOT NULL,
        at   INTEGER NOT NULL
    ) STRICT;
    CREATE TRIGGER audit_seals_append_only_update BEFORE UPDATE ON audit_seals
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_seals_append_only_delete BEFORE DELETE ON audit_seals
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    "#,
    // 7: the PC that started a ticket (address, browser, signing system, the
    // secret of its confirmation numbers), shown on the phone
    "ALTER TABLE tickets ADD COLUMN pc_info TEXT;",
    // 8: decoy tickets: a QR code for an ID without a usable phone (unknown,
    // disabled, none registered) looks like any other, so that the start
    // pages do not tell which IDs exist; such a row names the typed ID in
    // decoy_for instead of a user. SQLite cannot drop NOT NULL: the table is
    // copied (nothing refers to it).
    r#"
    CREATE TABLE tickets_v8 (
        id         INTEGER PRIMARY KEY,
        phone_hash BLOB UNIQUE,
        pc_hash    BLOB UNIQUE,
        pc_claimed INTEGER NOT NULL CHECK (pc_claimed IN (0, 1)),
        phase      INTEGER NOT NULL DEFAULT 0,
        replace_ok INTEGER NOT NULL DEFAULT 0 CHECK (replace_ok IN (0, 1)),
        purpose    TEXT NOT NULL CHECK (purpose IN ('login', 'enroll', 'change', 'verify', 'link')),
        via        TEXT NOT NULL CHECK (via IN ('hpki', 'jpki', 'fido', 'regcode')),
        user_id    TEXT REFERENCES users(id),
        oidc_req   TEXT,
        regcode_id INTEGER,
        action     TEXT NOT NULL CHECK (action IN ('authenticate', 'register', 'none')),
        step       TEXT NOT NULL CHECK (step IN ('confirm', 'waiting', 'ceremony', 'done', 'collected', 'cancelled')),
        ceremony   TEXT,
        error      TEXT,
        labelled   INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        pc_info    TEXT,
        decoy_for  TEXT,
        CHECK (step = 'ceremony' OR ceremony IS NULL),
        CHECK ((user_id IS NULL) <> (decoy_for IS NULL)),
        CHECK (decoy_for IS NULL OR (purpose IN ('login', 'change') AND via = 'fido'))
    ) STRICT;
    INSERT INTO tickets_v8 (id, phone_hash, pc_hash, pc_claimed, phase, replace_ok, purpose, via, user_id, oidc_req,
                            regcode_id, action, step, ceremony, error, labelled, created_at, expires_at, pc_info)
        SELECT id, phone_hash, pc_hash, pc_claimed, phase, replace_ok, purpose, via, user_id, oidc_req,
               regcode_id, action, step, ceremony, error, labelled, created_at, expires_at, pc_info
        FROM tickets;
    DROP TABLE tickets;
    ALTER TABLE tickets_v8 RENAME TO tickets;
    CREATE INDEX tickets_user ON tickets(user_id);
    CREATE INDEX tickets_decoy ON tickets(decoy_for);
    CREATE INDEX tickets_expiry ON tickets(expires_at);
    "#,
    // 9: time-stamps of the audit chain (RFC 3161 tokens over a sealed
    // row's hash; append-only, as the rows)
    r#"
    CREATE TABLE audit_timestamps (
        seq   INTEGER PRIMARY KEY,
        hash  BLOB NOT NULL,
        token BLOB NOT NULL,
        at    INTEGER NOT NULL
    ) STRICT;
    CREATE TRIGGER audit_timestamps_append_only_update BEFORE UPDATE ON audit_timestamps
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_timestamps_append_only_delete BEFORE DELETE ON audit_timestamps
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    "#,
    // 10: archived segments of the audit chain (`inkan audit archive`): the
    // rows through `seq` moved out to a segment file whose SHA-256 is kept,
    // the record MACed by the token's seal key and chained to the one
    // before; the live chain goes on from `hash`. Rows, seals and
    // time-stamps may be deleted through the last archived row only.
    r#"
    CREATE TABLE audit_archive (
        seq      INTEGER PRIMARY KEY,
        first    INTEGER NOT NULL,
        hash     BLOB NOT NULL,
        seal_mac BLOB NOT NULL,
        segment  BLOB NOT NULL,
        file     TEXT NOT NULL,
        at       INTEGER NOT NULL,
        prev_mac BLOB NOT NULL,
        mac      BLOB NOT NULL
    ) STRICT;
    CREATE TRIGGER audit_archive_append_only_update BEFORE UPDATE ON audit_archive
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_archive_append_only_delete BEFORE DELETE ON audit_archive
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    DROP TRIGGER audit_append_only_delete;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        WHEN old.seq > (SELECT coalesce(max(seq), 0) FROM audit_archive)
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    DROP TRIGGER audit_seals_append_only_delete;
    CREATE TRIGGER audit_seals_append_only_delete BEFORE DELETE ON audit_seals
        WHEN old.seq > (SELECT coalesce(max(seq), 0) FROM audit_archive)
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    DROP TRIGGER audit_timestamps_append_only_delete;
    CREATE TRIGGER audit_timestamps_append_only_delete BEFORE DELETE ON audit_timestamps
        WHEN old.seq > (SELECT coalesce(max(seq), 0) FROM audit_archive)
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    "#,
    // 11: the login methods are the code's to list (`auth::Method`), not the
    // schema's: a new method needs no migration. SQLite cannot drop a CHECK:
    // sessions and tickets are copied (nothing refers to them).
    r#"
    CREATE TABLE sessions_v11 (
        token_hash BLOB PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users(id),
        method     TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        scope      TEXT NOT NULL,
        auth_time  INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    INSERT INTO sessions_v11 SELECT token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at
        FROM sessions;
    DROP TABLE sessions;
    ALTER TABLE sessions_v11 RENAME TO sessions;
    CREATE INDEX sessions_user ON sessions(user_id);

    CREATE TABLE tickets_v11 (
        id         INTEGER PRIMARY KEY,
        phone_hash BLOB UNIQUE,
        pc_hash    BLOB UNIQUE,
        pc_claimed INTEGER NOT NULL CHECK (pc_claimed IN (0, 1)),
        phase      INTEGER NOT NULL DEFAULT 0,
        replace_ok INTEGER NOT NULL DEFAULT 0 CHECK (replace_ok IN (0, 1)),
        purpose    TEXT NOT NULL CHECK (purpose IN ('login', 'enroll', 'change', 'verify', 'link')),
        via        TEXT NOT NULL,
        user_id    TEXT REFERENCES users(id),
        oidc_req   TEXT,
        regcode_id INTEGER,
        action     TEXT NOT NULL CHECK (action IN ('authenticate', 'register', 'none')),
        step       TEXT NOT NULL CHECK (step IN ('confirm', 'waiting', 'ceremony', 'done', 'collected', 'cancelled')),
        ceremony   TEXT,
        error      TEXT,
        labelled   INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        pc_info    TEXT,
        decoy_for  TEXT,
        CHECK (step = 'ceremony' OR ceremony IS NULL),
        CHECK ((user_id IS NULL) <> (decoy_for IS NULL)),
        CHECK (decoy_for IS NULL OR (purpose IN ('login', 'change') AND via = 'fido'))
    ) STRICT;
    INSERT INTO tickets_v11 SELECT id, phone_hash, pc_hash, pc_claimed, phase, replace_ok, purpose, via, user_id,
        oidc_req, regcode_id, action, step, ceremony, error, labelled, created_at, expires_at, pc_info, decoy_for
        FROM tickets;
    DROP TABLE tickets;
    ALTER TABLE tickets_v11 RENAME TO tickets;
    CREATE INDEX tickets_user ON tickets(user_id);
    CREATE INDEX tickets_decoy ON tickets(decoy_for);
    CREATE INDEX tickets_expiry ON tickets(expires_at);
    "#,
];

/// Applies the missing migrations, each in its own transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > known {
        return Err(StoreError::TooNew { found: current, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        // Another process may have migrated meanwhile.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session of schema 10 is kept by schema 11, which takes a login
    /// method the schema never listed (the code decides which it knows).
    #[test]
    fn schema_11_keeps_sessions_and_leaves_the_methods_to_the_code() {
        let mut conn = Connection::open_in_memory().expect("sqlite");
        conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
        for sql in &MIGRATIONS[..10] {
            conn.execute_batch(sql).expect("migration");
        }
        conn.pragma_update(None, "user_version", 10).expect("version");
        conn.execute_batch(
            "INSERT INTO users (id, name, qualification, status, created_at) VALUES ('u1', 'n', 'doctor', 'active', 1);
             INSERT INTO sessions (token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at)
                 VALUES (x'01', 'u1', 'jpki', 'c', 'openid sign', 1, 2, 3);",
        )
        .expect("rows of schema 10");
        let refused = conn.execute(
            "INSERT INTO sessions (token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at)
             VALUES (x'02', 'u1', 'passkey', 'c', 'openid', 1, 2, 3)",
            [],
        );
        assert!(refused.is_err(), "schema 10 listed the methods");
        migrate(&mut conn).expect("migrate");
        let kept: String =
            conn.query_row("SELECT method FROM sessions WHERE token_hash = x'01'", [], |r| r.get(0)).expect("kept");
        assert_eq!(kept, "jpki");
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at)
             VALUES (x'02', 'u1', 'passkey', 'c', 'openid', 1, 2, 3)",
            [],
        )
        .expect("a method the schema never listed");
    }

    /// A database of schema 7 with a user and a ticket in it: migrated, the
    /// ticket reads back as it was, and a decoy row fits the new table.
    #[test]
    fn schema_8_keeps_the_tickets_of_schema_7_and_takes_decoys() {
        let mut conn = Connection::open_in_memory().expect("sqlite");
        conn.pragma_update(None, "foreign_keys", "ON").expect("foreign keys");
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).expect("migration");
        }
        conn.pragma_update(None, "user_version", 7).expect("version");
        conn.execute_batch(
            "INSERT INTO users (id, name, qualification, status, created_at) VALUES ('u1', 'n', 'doctor', 'active', 1);
             INSERT INTO tickets (phone_hash, pc_hash, pc_claimed, phase, replace_ok, purpose, via, user_id, action,
                                  step, error, labelled, created_at, expires_at, pc_info)
                 VALUES (x'01', x'02', 1, 1, 1, 'change', 'fido', 'u1', 'register', 'waiting', 'no_device', 0, 5, 9, '{}');",
        )
        .expect("rows of schema 7");
        migrate(&mut conn).expect("migrate");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let row: (String, i64, i64, String, String, Option<String>, String) = conn
            .query_row(
                "SELECT user_id, phase, replace_ok, step, error, decoy_for, pc_info FROM tickets WHERE pc_hash = x'02'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .expect("the ticket is kept");
        assert_eq!(row, ("u1".into(), 1, 1, "waiting".into(), "no_device".into(), None, "{}".into()));
        let insert = |user: Option<&str>, decoy: Option<&str>, purpose: &str| {
            conn.execute(
                "INSERT INTO tickets (pc_claimed, purpose, via, user_id, decoy_for, action, step, created_at, expires_at)
                 VALUES (1, ?1, 'fido', ?2, ?3, 'authenticate', 'waiting', 1, 2)",
                rusqlite::params![purpose, user, decoy],
            )
        };
        assert!(insert(None, Some("nobody"), "login").is_ok(), "a decoy names no user");
        assert!(insert(Some("u1"), Some("u1"), "login").is_err(), "a row is a user's or a decoy, not both");
        assert!(insert(None, None, "login").is_err());
        assert!(insert(None, Some("nobody"), "link").is_err(), "decoys are phone logins and changes only");
        assert!(insert(Some("nobody"), None, "login").is_err(), "a real ticket's user exists");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tickets' AND sql IS NOT NULL ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("indexes");
        assert_eq!(indexes, ["tickets_decoy", "tickets_expiry", "tickets_user"]);
    }
}

-- Thingport host schema, version 1.
-- Portable SQL: the PostgreSQL migration (migrations/postgres) differs only in column types
-- (BIGINT/JSONB/BIGSERIAL); the queries in src/store are shared.

-- Every entity of the model, one row each; `body` is the entity's JSON form.
CREATE TABLE entities (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (kind, name)
);

-- The grants on one entity or collection (design time, run time, visibility) as JSON.
CREATE TABLE acls (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (kind, name)
);

-- Persistent property values of Things.
CREATE TABLE property_values (
    thing       TEXT    NOT NULL,
    property    TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (thing, property)
);

-- The audit trail: append-only.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          BIGINT  NOT NULL,
    principal   TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    entity      TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    source_ip   TEXT    NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_category_ts ON audit_log (category, ts);

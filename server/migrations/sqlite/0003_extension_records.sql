-- Records extensions keep (ABI 1.3: recordPut/Get/Query/Delete), e.g. RemoteAccessExtension's
-- sessions. Owned by the package: deleted with it, kept across upgrades.
CREATE TABLE extension_records (
    package     TEXT    NOT NULL,
    collection  TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (package, collection, key)
);

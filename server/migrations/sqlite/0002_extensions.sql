-- Installed extension packages. The package bytes live in <data-dir>/extensions/<sha256>.zip.
CREATE TABLE extension_packages (
    name          TEXT    NOT NULL PRIMARY KEY,
    version       TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    installed_at  BIGINT  NOT NULL,
    installed_by  TEXT    NOT NULL
);

//! The SQL migrations of both backends, embedded in the binary at compile time.
//!
//! `sqlx::migrate!` needs sqlx's `macros` feature, which the gateway does not enable; this
//! builds the same [`Migrator`] from `include_str!`: same version and description parsing
//! (`<version>_<description>.sql`) and same checksum, so switching to the macro later is
//! transparent to databases already migrated. `include_str!` also makes cargo rebuild when
//! a migration file changes. A test checks that every file of the directories is listed.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::StoreError;

/// (file name, contents) of `migrations/postgres`, oldest first.
pub(crate) const POSTGRES: &[(&str, &str)] = &[
    (
        "20261129000001_initial.sql",
        include_str!("../../../migrations/postgres/20261129000001_initial.sql"),
    ),
    (
        "20261129000002_hot_path_tuning.sql",
        include_str!("../../../migrations/postgres/20261129000002_hot_path_tuning.sql"),
    ),
    (
        "20261129000003_body_stored_once.sql",
        include_str!("../../../migrations/postgres/20261129000003_body_stored_once.sql"),
    ),
    (
        "20261202000001_headers_lz4.sql",
        include_str!("../../../migrations/postgres/20261202000001_headers_lz4.sql"),
    ),
    (
        "20261203000001_entry_state_apart.sql",
        include_str!("../../../migrations/postgres/20261203000001_entry_state_apart.sql"),
    ),
    (
        "20261204000001_entry_status_derived.sql",
        include_str!("../../../migrations/postgres/20261204000001_entry_status_derived.sql"),
    ),
    (
        "20261207000001_provenance.sql",
        include_str!("../../../migrations/postgres/20261207000001_provenance.sql"),
    ),
    (
        "20261207000002_replays.sql",
        include_str!("../../../migrations/postgres/20261207000002_replays.sql"),
    ),
];

/// (file name, contents) of `migrations/sqlite`, oldest first.
pub(crate) const SQLITE: &[(&str, &str)] = &[
    (
        "20261129000001_initial.sql",
        include_str!("../../../migrations/sqlite/20261129000001_initial.sql"),
    ),
    (
        "20261129000002_body_stored_once.sql",
        include_str!("../../../migrations/sqlite/20261129000002_body_stored_once.sql"),
    ),
    (
        "20261202000001_entry_state_apart.sql",
        include_str!("../../../migrations/sqlite/20261202000001_entry_state_apart.sql"),
    ),
    (
        "20261204000001_entry_status_derived.sql",
        include_str!("../../../migrations/sqlite/20261204000001_entry_status_derived.sql"),
    ),
    (
        "20261207000001_provenance.sql",
        include_str!("../../../migrations/sqlite/20261207000001_provenance.sql"),
    ),
    (
        "20261207000002_replays.sql",
        include_str!("../../../migrations/sqlite/20261207000002_replays.sql"),
    ),
];

/// A migrator over embedded files, parsed the way sqlx parses a migrations directory.
pub(crate) fn migrator(
    files: &'static [(&'static str, &'static str)],
) -> Result<Migrator, StoreError> {
    let mut migrations = Vec::with_capacity(files.len());
    for &(file_name, sql) in files {
        let bad = || StoreError::Internal(format!("bad migration file name {file_name:?}"));
        let (version, rest) = file_name.split_once('_').ok_or_else(bad)?;
        let version: i64 = version.parse().map_err(|_| bad())?;
        let description = rest.strip_suffix(".sql").ok_or_else(bad)?.replace('_', " ");
        migrations.push(Migration::new(
            version,
            Cow::Owned(description),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            sql.starts_with("-- no-transaction"),
        ));
    }
    Ok(Migrator::with_migrations(migrations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_on_disk(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .map(|entry| {
                entry
                    .expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_migration_file_is_embedded() {
        for (dir, embedded) in [("postgres", POSTGRES), ("sqlite", SQLITE)] {
            let listed: Vec<String> = embedded.iter().map(|(name, _)| name.to_string()).collect();
            assert_eq!(
                listed,
                files_on_disk(dir),
                "migrations/{dir} and the embedded list differ"
            );
        }
    }

    #[test]
    fn versions_and_descriptions_are_parsed_like_sqlx() {
        let m = migrator(POSTGRES).expect("migrator");
        let first = m.iter().next().expect("one migration");
        assert_eq!(first.version, 20261129000001);
        assert_eq!(first.description, "initial");
        assert!(!first.no_tx);
    }
}

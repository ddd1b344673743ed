//! Per-tenant secrets in `platform_configurations`: one row per (source, tenant) whose
//! `secrets` column holds the sealed secrets as a JSON list. Both backends read and write
//! the row in one transaction, so two concurrent additions both land.

use chrono::Utc;
use sqlx::{Postgres, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{SealedSecret, StoreError, TenantSecretsRow};

fn parse(text: &str) -> Result<Vec<SealedSecret>, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Internal(format!(
            "platform_configurations.secrets is not a secret list: {e}"
        ))
    })
}

fn render(secrets: &[SealedSecret]) -> Result<String, StoreError> {
    serde_json::to_string(secrets).map_err(|e| StoreError::Internal(e.to_string()))
}

/// `existing` with `added` appended.
fn with_added(existing: Option<&str>, added: &[SealedSecret]) -> Result<String, StoreError> {
    let mut secrets = existing.map(parse).transpose()?.unwrap_or_default();
    secrets.extend_from_slice(added);
    render(&secrets)
}

/// `existing` without the secret `id`, or none when it holds no such secret.
fn without(existing: &str, id: Uuid) -> Result<Option<String>, StoreError> {
    let mut secrets = parse(existing)?;
    let before = secrets.len();
    secrets.retain(|s| s.id != id);
    if secrets.len() == before {
        return Ok(None);
    }
    render(&secrets).map(Some)
}

fn rows(raw: Vec<(String, String, String)>) -> Result<Vec<TenantSecretsRow>, StoreError> {
    raw.into_iter()
        .map(|(source, tenant, secrets)| {
            Ok(TenantSecretsRow {
                source,
                tenant,
                secrets: parse(&secrets)?,
            })
        })
        .collect()
}

pub(crate) mod postgres {
    use super::*;

    pub async fn list(pool: &sqlx::PgPool) -> Result<Vec<TenantSecretsRow>, StoreError> {
        let raw: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT source, tenant, secrets FROM platform_configurations \
             WHERE tenant IS NOT NULL ORDER BY source, tenant",
        )
        .fetch_all(pool)
        .await
        .map_err(super::super::postgres::pg_error)?;
        rows(raw)
    }

    pub async fn version(pool: &sqlx::PgPool) -> Result<String, StoreError> {
        let row = sqlx::query(
            "SELECT count(*)::text || '/' || COALESCE(max(updated_at)::text, '') \
             FROM platform_configurations",
        )
        .fetch_one(pool)
        .await
        .map_err(super::super::postgres::pg_error)?;
        row.try_get(0).map_err(super::super::postgres::pg_error)
    }

    pub async fn add(
        mut tx: Transaction<'_, Postgres>,
        source: &str,
        tenant: &str,
        added: &[SealedSecret],
    ) -> Result<(), StoreError> {
        let err = super::super::postgres::pg_error;
        sqlx::query(
            "INSERT INTO platform_configurations (id, source, tenant) VALUES ($1, $2, $3) \
             ON CONFLICT (source, tenant) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(source)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        let existing: String = sqlx::query_scalar(
            "SELECT secrets FROM platform_configurations \
             WHERE source = $1 AND tenant = $2 FOR UPDATE",
        )
        .bind(source)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query(
            "UPDATE platform_configurations SET secrets = $3, updated_at = clock_timestamp() \
             WHERE source = $1 AND tenant = $2",
        )
        .bind(source)
        .bind(tenant)
        .bind(with_added(Some(&existing), added)?)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    pub async fn remove(
        mut tx: Transaction<'_, Postgres>,
        source: &str,
        tenant: &str,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let err = super::super::postgres::pg_error;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT secrets FROM platform_configurations \
             WHERE source = $1 AND tenant = $2 FOR UPDATE",
        )
        .bind(source)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let Some(remaining) = existing
            .as_deref()
            .map(|e| without(e, id))
            .transpose()?
            .flatten()
        else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE platform_configurations SET secrets = $3, updated_at = clock_timestamp() \
             WHERE source = $1 AND tenant = $2",
        )
        .bind(source)
        .bind(tenant)
        .bind(remaining)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }
}

pub(crate) mod sqlite {
    use super::*;

    pub async fn list(pool: &sqlx::SqlitePool) -> Result<Vec<TenantSecretsRow>, StoreError> {
        let raw: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT source, tenant, secrets FROM platform_configurations \
             WHERE tenant IS NOT NULL ORDER BY source, tenant",
        )
        .fetch_all(pool)
        .await
        .map_err(super::super::sqlite::sqlite_error)?;
        rows(raw)
    }

    pub async fn version(pool: &sqlx::SqlitePool) -> Result<String, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) || '/' || COALESCE(max(updated_at), '') FROM platform_configurations",
        )
        .fetch_one(pool)
        .await
        .map_err(super::super::sqlite::sqlite_error)?;
        row.try_get(0).map_err(super::super::sqlite::sqlite_error)
    }

    /// `updated_at` strictly after the row's last change, so the version moves even for
    /// two changes within one clock tick.
    const UPDATE_SECRETS: &str = "UPDATE platform_configurations \
        SET secrets = ?, updated_at = max(?, updated_at + 1) WHERE source = ? AND tenant = ?";

    pub async fn add(
        mut tx: Transaction<'static, Sqlite>,
        source: &str,
        tenant: &str,
        added: &[SealedSecret],
    ) -> Result<(), StoreError> {
        let err = super::super::sqlite::sqlite_error;
        let now = Utc::now().timestamp_micros();
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT secrets FROM platform_configurations WHERE source = ? AND tenant = ?",
        )
        .bind(source)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let secrets = with_added(existing.as_deref(), added)?;
        if existing.is_some() {
            sqlx::query(UPDATE_SECRETS)
                .bind(secrets)
                .bind(now)
                .bind(source)
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        } else {
            sqlx::query(
                "INSERT INTO platform_configurations \
                 (id, source, tenant, secrets, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(Uuid::now_v7())
            .bind(source)
            .bind(tenant)
            .bind(secrets)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    pub async fn remove(
        mut tx: Transaction<'static, Sqlite>,
        source: &str,
        tenant: &str,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let err = super::super::sqlite::sqlite_error;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT secrets FROM platform_configurations WHERE source = ? AND tenant = ?",
        )
        .bind(source)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let Some(remaining) = existing
            .as_deref()
            .map(|e| without(e, id))
            .transpose()?
            .flatten()
        else {
            return Ok(false);
        };
        sqlx::query(UPDATE_SECRETS)
            .bind(remaining)
            .bind(Utc::now().timestamp_micros())
            .bind(source)
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(true)
    }
}

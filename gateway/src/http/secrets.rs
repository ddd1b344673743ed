//! The admin API of per-tenant secrets: add (several at once = rotation), list, remove.
//! A secret's value goes in once and never comes out: listings show its id, fingerprint,
//! creation and last match.

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::State;
use super::error::{ApiError, HttpResponse, json_response};
use crate::secrets::seal_new;
use crate::store::StoreError;

/// Largest request body the secrets API reads.
const MAX_BODY: usize = 64 * 1024;
const MAX_SECRETS: usize = 16;
const MAX_SECRET_BYTES: usize = 4096;
const MAX_TENANT_CHARS: usize = 255;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSecrets {
    source: String,
    tenant: String,
    secrets: Vec<String>,
}

fn unavailable(error: &StoreError) -> ApiError {
    tracing::error!(%error, "tenant secrets: storage failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "storage is unavailable; nothing was changed",
    )
}

/// `POST /api/v1/admin/secrets` `{"source", "tenant", "secrets": [...]}`.
pub async fn add(state: &State, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let Some(key) = state.tenant_secrets.key() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secrets_key_missing",
            "tenant secrets need a sealing key: set HOOKGATE_SECRETS_KEY (32 bytes, base64 or hex) and restart",
        ));
    };
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body must be at most {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    let wanted: AddSecrets = serde_json::from_slice(&body).map_err(|e| {
        // serde's message names the field and position, never a value.
        ApiError::bad_request(format!(
            "expected {{\"source\": ..., \"tenant\": ..., \"secrets\": [...]}}: {e}"
        ))
    })?;
    if !state.pipeline.sources().contains_key(&wanted.source) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_source",
            format!("no enabled source is named \"{}\"", wanted.source),
        ));
    }
    let tenant = wanted.tenant.trim();
    if tenant.is_empty() || tenant.chars().count() > MAX_TENANT_CHARS {
        return Err(ApiError::bad_request(format!(
            "`tenant` must be 1 to {MAX_TENANT_CHARS} characters"
        )));
    }
    if wanted.secrets.is_empty() || wanted.secrets.len() > MAX_SECRETS {
        return Err(ApiError::bad_request(format!(
            "`secrets` must hold 1 to {MAX_SECRETS} secrets"
        )));
    }
    if let Some(i) = wanted
        .secrets
        .iter()
        .position(|s| s.is_empty() || s.len() > MAX_SECRET_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "secrets[{i}] must be 1 to {MAX_SECRET_BYTES} bytes"
        )));
    }
    let sealed: Vec<_> = wanted
        .secrets
        .iter()
        .map(|secret| seal_new(key, &wanted.source, tenant, secret.as_bytes()))
        .collect();
    state
        .store
        .add_tenant_secrets(&wanted.source, tenant, &sealed)
        .await
        .map_err(|e| unavailable(&e))?;
    refresh(state).await;
    tracing::info!(source = %wanted.source, tenant, added = sealed.len(), "tenant secrets added");
    let added: Vec<_> = sealed
        .iter()
        .map(|s| json!({ "id": s.id, "fingerprint": s.fingerprint, "created_at": s.created_at }))
        .collect();
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "source": wanted.source, "tenant": tenant, "added": added }),
    ))
}

/// `GET /api/v1/admin/secrets[?source=S][&tenant=T]`.
pub async fn list(state: &State, query: &[(String, String)]) -> Result<HttpResponse, ApiError> {
    let mut source = None;
    let mut tenant = None;
    for (key, value) in query {
        match key.as_str() {
            "source" => source = Some(value.as_str()),
            "tenant" => tenant = Some(value.as_str()),
            _ => return Err(ApiError::bad_request(format!("unknown parameter `{key}`"))),
        }
    }
    let rows = state
        .store
        .list_tenant_secrets()
        .await
        .map_err(|e| unavailable(&e))?;
    let listed: Vec<_> = rows
        .iter()
        .filter(|row| source.is_none_or(|s| s == row.source))
        .filter(|row| tenant.is_none_or(|t| t == row.tenant))
        .flat_map(|row| {
            row.secrets.iter().map(|secret| {
                let used = state.pipeline.secret_use(&row.source, &secret.fingerprint);
                json!({
                    "id": secret.id,
                    "source": row.source,
                    "tenant": row.tenant,
                    "fingerprint": secret.fingerprint,
                    "created_at": secret.created_at,
                    "matches": used.map_or(0, |u| u.matches),
                    "last_matched_at": used.map(|u| u.last_matched_at),
                })
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "secrets": listed })))
}

/// `DELETE /api/v1/admin/secrets/{source}/{tenant}/{id}`.
pub async fn remove(
    state: &State,
    source: &str,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let id = Uuid::parse_str(&decode(id))
        .map_err(|_| ApiError::bad_request("`id` is not a secret id"))?;
    let (source, tenant) = (decode(source), decode(tenant));
    let removed = state
        .store
        .remove_tenant_secret(&source, &tenant, id)
        .await
        .map_err(|e| unavailable(&e))?;
    if !removed {
        return Err(ApiError::not_found());
    }
    refresh(state).await;
    tracing::info!(%source, %tenant, %id, "tenant secret removed");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "removed": id, "source": source, "tenant": tenant }),
    ))
}

/// Makes a change serve at once on this instance; others see it on their next poll.
async fn refresh(state: &State) {
    if let Err(error) = state.tenant_secrets.refresh(true).await {
        tracing::warn!(%error, "tenant secrets changed but not reloaded yet; the next poll retries");
    }
}

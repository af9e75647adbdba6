//! The REST API (JSON under `/v1`, errors as `{"error": {"code", "message"}}`), plus
//! `/metrics`, `/healthz` and the OpenAPI document at `/v1/openapi.json`. Handlers are
//! thin: they parse, check the client's signature, and call the [`Tower`].

use crate::appointment::{self, Locator, LOCATOR_LEN, MAX_TAG_LEN};
use crate::msgs::*;
use crate::sig;
use crate::store::NewAppointment;
use crate::tower::{Tower, TowerError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::secp256k1::PublicKey;
use serde::Deserialize;
use std::sync::Arc;

/// The OpenAPI 3 document served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// An API error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<TowerError> for ApiError {
    fn from(e: TowerError) -> Self {
        use crate::gatekeeper::GateError;
        let (status, code) = match &e {
            TowerError::Gate(GateError::UnknownUser) => (StatusCode::UNAUTHORIZED, "unknown_user"),
            TowerError::Gate(GateError::Expired(_)) => {
                (StatusCode::FORBIDDEN, "subscription_expired")
            }
            TowerError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            TowerError::Triggered => (StatusCode::CONFLICT, "appointment_already_triggered"),
            TowerError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "tower_full"),
            TowerError::Counter(crate::gatekeeper::CounterError::Replayed(..)) => {
                (StatusCode::CONFLICT, "replayed_request")
            }
            TowerError::Counter(crate::gatekeeper::CounterError::OutOfWindow(..)) => {
                (StatusCode::BAD_REQUEST, "invalid_counter")
            }
            TowerError::Chain(_) => (StatusCode::SERVICE_UNAVAILABLE, "chain_unavailable"),
            TowerError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, code, e.to_string())
    }
}

/// The router.
pub fn router(tower: Arc<Tower>) -> Router {
    // Hex doubles the blob; leave room for the rest of the JSON.
    let body_limit = tower.config().max_blob_size * 2 + 16 * 1024;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/register", post(register))
        .route("/v1/appointments", post(add_appointment))
        .route("/v1/appointments/delete", post(delete))
        .route("/v1/appointments/{locator}", get(appointment_status))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(tower)
}

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(v)| v).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "blob_too_large",
            "request body too large",
        ),
        _ => ApiError::bad("invalid_body", e.body_text()),
    })
}

fn parse_user(s: &str) -> Result<PublicKey, ApiError> {
    let bytes = hex::decode(s).map_err(|_| {
        ApiError::bad(
            "invalid_user_id",
            "user_id must be a 33-byte compressed public key in hex",
        )
    })?;
    if bytes.len() != 33 {
        return Err(ApiError::bad(
            "invalid_user_id",
            "user_id must be a 33-byte compressed public key in hex",
        ));
    }
    PublicKey::from_slice(&bytes)
        .map_err(|_| ApiError::bad("invalid_user_id", "user_id is not a valid public key"))
}

fn parse_locator(s: &str) -> Result<Locator, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad(
            "invalid_locator",
            format!("locator must be {LOCATOR_LEN} bytes in hex"),
        )
    })
}

fn parse_tag(s: &str) -> Result<Vec<u8>, ApiError> {
    match hex::decode(s) {
        Ok(t) if !t.is_empty() && t.len() <= MAX_TAG_LEN => Ok(t),
        _ => Err(ApiError::bad(
            "invalid_tag",
            format!("tag must be 1 to {MAX_TAG_LEN} bytes in hex"),
        )),
    }
}

/// What a signed request changes, for [`verify_request`].
struct Signed<'a> {
    /// The request's own message.
    what: &'a [u8],
    counter: u64,
    signature: &'a str,
    /// A registration (the only request a key the tower does not know may make).
    registering: bool,
}

impl<'a> Signed<'a> {
    /// A request of a registered key.
    fn change(what: &'a [u8], counter: u64, signature: &'a str) -> Self {
        Signed {
            what,
            counter,
            signature,
            registering: false,
        }
    }
}

/// Checks a request that changes something: `user` signed the request message naming
/// this tower and the counter, and the counter is new.
fn verify_request(tower: &Tower, req: Signed<'_>, user: &PublicKey) -> Result<(), ApiError> {
    let message = appointment::request_message(&tower.id(), req.counter, req.what);
    verify(&message, req.signature, user)?;
    Ok(tower.accept_counter(user, req.counter, req.registering)?)
}

/// Checks that `user` signed `message`.
fn verify(message: &[u8], signature: &str, user: &PublicKey) -> Result<(), ApiError> {
    match sig::recover(message, signature) {
        Ok(pk) if pk == *user => Ok(()),
        Ok(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "signature is not by user_id over this request",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            e.to_string(),
        )),
    }
}

async fn metrics(State(tower): State<Arc<Tower>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        tower.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn info(State(tower): State<Arc<Tower>>) -> Json<TowerInfo> {
    let c = tower.config();
    Json(TowerInfo {
        tower_id: hex::encode(tower.id()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        block_height: tower.height(),
        confirmations: c.confirmations,
        max_appointments: c.max_appointments,
        subscription_blocks: c.subscription_blocks,
        max_blob_size: c.max_blob_size as u32,
        appointments: tower
            .metrics
            .appointments
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0) as u64,
    })
}

async fn register(
    State(tower): State<Arc<Tower>>,
    payload: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<Registration>, ApiError> {
    let req = body(payload)?;
    let user = parse_user(&req.user_id)?;
    verify_request(
        &tower,
        Signed {
            what: &appointment::register_message(),
            counter: req.counter,
            signature: &req.signature,
            registering: true,
        },
        &user,
    )?;
    let standing = tower.register(user).await?;
    tracing::info!(user = %user, expiry = standing.expiry_height, "user registered");
    Ok(Json(Registration {
        user_id: user.to_string(),
        available_slots: standing.available_slots,
        subscription_expiry: standing.expiry_height,
    }))
}

async fn add_appointment(
    State(tower): State<Arc<Tower>>,
    payload: Result<Json<AddAppointmentRequest>, JsonRejection>,
) -> Result<Json<AppointmentReceipt>, ApiError> {
    let req = body(payload)?;
    let user = parse_user(&req.user_id)?;
    let a = &req.appointment;
    let locator = parse_locator(&a.locator)?;
    let max = tower.config().max_blob_size;
    // Check the size before decoding so an oversized blob costs nothing.
    if a.encrypted_blob.len() > max * 2 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "blob_too_large",
            format!("encrypted_blob is larger than {max} bytes"),
        ));
    }
    let blob = hex::decode(&a.encrypted_blob)
        .map_err(|_| ApiError::bad("invalid_blob", "encrypted_blob must be hex"))?;
    // The smallest transaction (one input, one output) plus the AEAD tag.
    if blob.len() < 60 + appointment::AEAD_TAG_LEN {
        return Err(ApiError::bad(
            "invalid_blob",
            "encrypted_blob is too short to hold a transaction",
        ));
    }
    if a.to_self_delay > crate::tower::MAX_TO_SELF_DELAY {
        return Err(ApiError::bad(
            "invalid_to_self_delay",
            format!(
                "to_self_delay must be at most {}",
                crate::tower::MAX_TO_SELF_DELAY
            ),
        ));
    }
    let tag = a.tag.as_deref().map(parse_tag).transpose()?;
    let message =
        appointment::appointment_message(&locator, &blob, a.to_self_delay, tag.as_deref());
    verify_request(
        &tower,
        Signed::change(&message, req.counter, &req.signature),
        &user,
    )?;
    let (updated, standing) = tower
        .add_appointment(NewAppointment {
            user_id: user,
            locator,
            encrypted_blob: blob,
            to_self_delay: a.to_self_delay,
            tag,
            user_signature: req.signature.clone(),
            start_height: 0,
        })
        .await?;
    tracing::debug!(%user, %locator, updated, "appointment accepted");
    Ok(Json(AppointmentReceipt {
        locator: locator.to_string(),
        start_block: tower.height(),
        updated,
        available_slots: standing.available_slots,
        subscription_expiry: standing.expiry_height,
    }))
}

#[derive(Deserialize)]
struct StatusQuery {
    user_id: String,
    signature: String,
}

async fn appointment_status(
    State(tower): State<Arc<Tower>>,
    Path(locator): Path<String>,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AppointmentStatus>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let user = parse_user(&q.user_id)?;
    let locator = parse_locator(&locator)?;
    verify(&appointment::status_message(&locator), &q.signature, &user)?;
    if !tower.is_registered(&user) {
        return Err(TowerError::Gate(crate::gatekeeper::GateError::UnknownUser).into());
    }
    let Some(a) = tower.appointment(&user, &locator).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "appointment_not_found",
            "no appointment with this locator for this user",
        ));
    };
    Ok(Json(AppointmentStatus {
        locator: locator.to_string(),
        status: a.status.as_str().to_string(),
        start_block: a.appointment.start_height,
        breach_txid: a.breach_txid.map(|t| t.to_string()),
        breach_height: a.breach_height,
        penalty_txid: a.penalty_tx.as_ref().map(|t| t.compute_txid().to_string()),
        confirmations: a.confirmations,
        reason: a.reason,
    }))
}

async fn delete(
    State(tower): State<Arc<Tower>>,
    payload: Result<Json<DeleteRequest>, JsonRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let req = body(payload)?;
    let user = parse_user(&req.user_id)?;
    let (tag, locators, message) = match (&req.tag, &req.locators) {
        (Some(t), None) => {
            let tag = parse_tag(t)?;
            let m = appointment::delete_tag_message(&tag);
            (Some(tag), Vec::new(), m)
        }
        (None, Some(ls)) => {
            let locators = ls
                .iter()
                .map(|l| parse_locator(l))
                .collect::<Result<Vec<_>, _>>()?;
            let m = appointment::delete_locators_message(&locators);
            (None, locators, m)
        }
        _ => {
            return Err(ApiError::bad(
                "invalid_body",
                "give exactly one of tag and locators",
            ))
        }
    };
    verify_request(
        &tower,
        Signed::change(&message, req.counter, &req.signature),
        &user,
    )?;
    let (deleted, standing) = tower.delete(&user, tag.as_deref(), &locators).await?;
    tracing::info!(%user, deleted, "appointments deleted by the client");
    Ok(Json(Deleted {
        deleted,
        available_slots: standing.available_slots,
    }))
}

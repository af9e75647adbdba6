//! The node's REST API for its operator (JSON under `/v1`, errors as
//! `{"error": {"code": "...", "message": "..."}}`, `Authorization: Bearer <api key>`).

use crate::node::{ChannelSummary, Node, NodeError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use channel::{ChannelId, Msat};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Shared state of the handlers.
pub struct App {
    /// The node.
    pub node: Arc<Node>,
    /// SHA-256 of the operator's API key (the key itself is never stored).
    pub api_key_hash: [u8; 32],
}

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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let (status, code) = match &e {
            NodeError::UnknownChannel => (StatusCode::NOT_FOUND, "unknown_channel"),
            NodeError::NotConnected => (StatusCode::CONFLICT, "peer_not_connected"),
            NodeError::Invalid(_) => (StatusCode::CONFLICT, "invalid_state"),
            NodeError::Channel(_) => (StatusCode::UNPROCESSABLE_ENTITY, "channel_refused"),
            NodeError::Wallet(_) => (StatusCode::UNPROCESSABLE_ENTITY, "wallet"),
            NodeError::Peer(_) => (StatusCode::BAD_GATEWAY, "peer_unreachable"),
            NodeError::PaymentFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "payment_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer API key",
            )
        })?;
    if sha256::Hash::hash(key.as_bytes()).to_byte_array() != app.api_key_hash {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong API key",
        ));
    }
    Ok(())
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/info", get(info))
        .route("/v1/address", post(new_address))
        .route("/v1/peers", post(connect_peer))
        .route("/v1/channels", get(list_channels).post(open_channel))
        .route("/v1/channels/{id}", get(show_channel))
        .route("/v1/channels/{id}/close", post(close_channel))
        .route("/v1/channels/{id}/pay", post(pay))
        .route("/v1/preimages", post(add_preimage))
        .with_state(app)
}

#[derive(Serialize)]
struct ChannelJson {
    channel_id: String,
    peer_id: String,
    status: String,
    capacity_sat: u64,
    local_balance_msat: u64,
    remote_balance_msat: u64,
    htlcs: usize,
    closing_txid: Option<String>,
}

impl From<ChannelSummary> for ChannelJson {
    fn from(c: ChannelSummary) -> Self {
        ChannelJson {
            channel_id: c.channel_id.to_string(),
            peer_id: c.peer.to_string(),
            status: format!("{:?}", c.status).to_lowercase(),
            capacity_sat: c.capacity_sat,
            local_balance_msat: c.local.0,
            remote_balance_msat: c.remote.0,
            htlcs: c.htlcs,
            closing_txid: c.closing_tx.map(|t| t.compute_txid().to_string()),
        }
    }
}

fn parse_channel_id(s: &str) -> Result<ChannelId, ApiError> {
    let bytes = hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.map(ChannelId).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_channel_id",
            "channel id must be 64 hex characters",
        )
    })
}

fn body<T>(
    payload: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    payload
        .map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))
}

async fn info(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let tip = app
        .node
        .chain()
        .tip()
        .await
        .map_err(|e| ApiError::from(NodeError::Chain(e)))?;
    Ok(Json(json!({
        "node_id": app.node.node_id().to_string(),
        "listen": app.node.listen_addr().to_string(),
        "block_height": tip.height,
        "onchain_balance_sat": app.node.wallet_balance().await.to_sat(),
        "channels": app.node.list_channels().await.len(),
    })))
}

async fn new_address(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    Ok(Json(
        json!({"address": app.node.new_address().await?.to_string()}),
    ))
}

#[derive(Deserialize)]
struct ConnectRequest {
    node_id: String,
    address: String,
}

impl ConnectRequest {
    fn check(&self) -> Result<(PublicKey, SocketAddr), ApiError> {
        let node_id: PublicKey = self.node_id.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_node_id",
                "node_id must be a 33-byte hex public key",
            )
        })?;
        let addr = self.address.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_address",
                "address must be host:port",
            )
        })?;
        Ok((node_id, addr))
    }
}

async fn connect_peer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<ConnectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let (node_id, addr) = body(payload)?.check()?;
    app.node.connect_peer(node_id, addr).await?;
    Ok(Json(json!({"connected": true})))
}

#[derive(Deserialize)]
struct OpenRequest {
    peer_id: String,
    capacity_sat: u64,
    #[serde(default)]
    push_msat: u64,
}

impl OpenRequest {
    fn check(&self) -> Result<PublicKey, ApiError> {
        let peer: PublicKey = self.peer_id.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_node_id",
                "peer_id must be a 33-byte hex public key",
            )
        })?;
        if self.push_msat > self.capacity_sat.saturating_mul(1000) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_amount",
                "push_msat exceeds the capacity",
            ));
        }
        Ok(peer)
    }
}

async fn open_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<OpenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorize(&app, &headers)?;
    let req = body(payload)?;
    let peer = req.check()?;
    let id = app
        .node
        .open_channel(peer, req.capacity_sat, Msat(req.push_msat))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"channel_id": id.to_string()})),
    ))
}

async fn list_channels(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ChannelJson>>, ApiError> {
    authorize(&app, &headers)?;
    Ok(Json(
        app.node
            .list_channels()
            .await
            .into_iter()
            .map(ChannelJson::from)
            .collect(),
    ))
}

async fn show_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChannelJson>, ApiError> {
    authorize(&app, &headers)?;
    Ok(Json(
        app.node.channel(&parse_channel_id(&id)?).await?.into(),
    ))
}

#[derive(Deserialize, Default)]
struct CloseRequest {
    #[serde(default)]
    force: bool,
}

async fn close_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    payload: Option<Json<CloseRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let id = parse_channel_id(&id)?;
    let req = payload.map(|Json(r)| r).unwrap_or_default();
    if req.force {
        let txid = app.node.force_close(&id).await?;
        Ok(Json(
            json!({"closing": "force", "commitment_txid": txid.to_string()}),
        ))
    } else {
        app.node.close_channel(&id).await?;
        Ok(Json(json!({"closing": "cooperative"})))
    }
}

fn hex32(s: &str, code: &'static str) -> Result<[u8; 32], ApiError> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, code, "expected 64 hex characters"))
}

#[derive(Deserialize)]
struct PreimageRequest {
    preimage: String,
}

impl PreimageRequest {
    fn check(&self) -> Result<channel::PaymentPreimage, ApiError> {
        Ok(channel::PaymentPreimage(hex32(
            &self.preimage,
            "invalid_preimage",
        )?))
    }
}

/// Registers a payment preimage: HTLCs paying its hash are fulfilled. (Invoices will
/// wrap this.)
async fn add_preimage(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<PreimageRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let preimage = body(payload)?.check()?;
    let hash = app.node.add_preimage(preimage).await?;
    Ok(Json(json!({"payment_hash": hex::encode(hash.0)})))
}

#[derive(Deserialize)]
struct PayRequest {
    amount_msat: u64,
    payment_hash: String,
    /// Absolute expiry height; default: 40 blocks above the tip.
    cltv_expiry: Option<u32>,
}

impl PayRequest {
    fn check(&self) -> Result<channel::PaymentHash, ApiError> {
        let hash = channel::PaymentHash(hex32(&self.payment_hash, "invalid_payment_hash")?);
        if self.amount_msat == 0 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_amount",
                "amount_msat must be positive",
            ));
        }
        Ok(hash)
    }
}

/// Pays the channel's peer directly: an HTLC for `payment_hash`; returns the preimage.
async fn pay(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    payload: Result<Json<PayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let id = parse_channel_id(&id)?;
    let req = body(payload)?;
    let hash = req.check()?;
    let cltv = match req.cltv_expiry {
        Some(c) => c,
        None => {
            let tip = app
                .node
                .chain()
                .tip()
                .await
                .map_err(|e| ApiError::from(NodeError::Chain(e)))?;
            tip.height + 40
        }
    };
    let preimage = app.node.pay(&id, Msat(req.amount_msat), hash, cltv).await?;
    Ok(Json(json!({"payment_preimage": hex::encode(preimage.0)})))
}

/// The JSON bodies of the API's POST routes, named by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// `POST /v1/peers`.
    ConnectPeer,
    /// `POST /v1/channels`.
    OpenChannel,
    /// `POST /v1/channels/{id}/close`.
    CloseChannel,
    /// `POST /v1/preimages`.
    AddPreimage,
    /// `POST /v1/channels/{id}/pay`.
    Pay,
}

impl RequestBody {
    /// Every body, for tests and fuzzing.
    pub const ALL: [RequestBody; 5] = [
        RequestBody::ConnectPeer,
        RequestBody::OpenChannel,
        RequestBody::CloseChannel,
        RequestBody::AddPreimage,
        RequestBody::Pay,
    ];
}

/// Decodes `bytes` as the body of `kind` and runs the checks its handler makes before it
/// touches the node, with the same errors a client would get. The handlers do the same
/// through axum's `Json` extractor; this entry point exists so the decoding and checks can
/// be fuzzed without a server or a node.
pub fn check_body(kind: RequestBody, bytes: &[u8]) -> Result<(), ApiError> {
    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
    }
    match kind {
        RequestBody::ConnectPeer => decode::<ConnectRequest>(bytes)?.check().map(|_| ()),
        RequestBody::OpenChannel => decode::<OpenRequest>(bytes)?.check().map(|_| ()),
        RequestBody::CloseChannel => decode::<CloseRequest>(bytes).map(|_| ()),
        RequestBody::AddPreimage => decode::<PreimageRequest>(bytes)?.check().map(|_| ()),
        RequestBody::Pay => decode::<PayRequest>(bytes)?.check().map(|_| ()),
    }
}

/// Parses the `{id}` of a `/v1/channels/{id}` path as the handlers do.
pub fn check_channel_id(id: &str) -> Result<ChannelId, ApiError> {
    parse_channel_id(id)
}

//! The node's REST API (JSON under `/v1`, errors as
//! `{"error": {"code": "...", "message": "..."}}`, `Authorization: Bearer <api key>`).
//!
//! Two scopes: the operator's key (one per node) reaches everything; on a hub, a
//! merchant's key reaches only that merchant's channels, payments received and webhooks
//! (anything else is 404, so ids of others do not leak), and the merchant-facing actions:
//! asking for an inbound channel.

use crate::node::{
    ChannelSummary, ForwardRecord, InvoiceRecord, MerchantRecord, Node, NodeError, PaymentLimits,
    PaymentRecord, WebhookRecord,
};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use channel::{ChannelId, Msat};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Shared state of the handlers.
pub struct App {
    /// The node.
    pub node: Arc<Node>,
    /// SHA-256 of the operator's API key (the key itself is never stored).
    pub api_key_hash: [u8; 32],
    /// How many requests each merchant key may make.
    pub merchant_rate: RateLimit,
    /// Each merchant's request budget.
    pub buckets: std::sync::Mutex<std::collections::HashMap<String, Bucket>>,
}

impl App {
    /// The API of `node`, answering the operator's key of hash `api_key_hash`.
    pub fn new(node: Arc<Node>, api_key_hash: [u8; 32], merchant_rate: RateLimit) -> App {
        App {
            node,
            api_key_hash,
            merchant_rate,
            buckets: Default::default(),
        }
    }
}

/// Requests a merchant key may make: `per_sec` on average, `burst` at once.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Requests per second, on average.
    pub per_sec: u32,
    /// Requests at once after a quiet time.
    pub burst: u32,
}

/// The default of [`RateLimit::per_sec`].
pub const DEFAULT_MERCHANT_RATE_PER_SEC: u32 = 20;
/// The default of [`RateLimit::burst`].
pub const DEFAULT_MERCHANT_RATE_BURST: u32 = 100;

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: DEFAULT_MERCHANT_RATE_PER_SEC,
            burst: DEFAULT_MERCHANT_RATE_BURST,
        }
    }
}

/// A token bucket: `tokens` left, refilled at the rate's pace.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl RateLimit {
    /// Takes one request from `bucket`; `Err(seconds)` until one is available.
    fn take(&self, bucket: &mut Bucket, now: std::time::Instant) -> Result<(), u64> {
        let rate = f64::from(self.per_sec.max(1));
        let burst = f64::from(self.burst.max(1));
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
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
            NodeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            NodeError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            NodeError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            NodeError::NoRoute => (StatusCode::UNPROCESSABLE_ENTITY, "no_route"),
            NodeError::RouteOverLimit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "route_over_limit"),
            NodeError::InvoiceExpired => (StatusCode::UNPROCESSABLE_ENTITY, "invoice_expired"),
            NodeError::InsufficientCapacity(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity")
            }
            NodeError::UnknownChannel => (StatusCode::NOT_FOUND, "unknown_channel"),
            NodeError::NotConnected => (StatusCode::CONFLICT, "peer_not_connected"),
            NodeError::Invalid(_) => (StatusCode::CONFLICT, "invalid_state"),
            NodeError::WebhookTarget(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "webhook_url_refused")
            }
            NodeError::Channel(_) | NodeError::ChannelRefused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "channel_refused")
            }
            NodeError::Wallet(_) => (StatusCode::UNPROCESSABLE_ENTITY, "wallet"),
            NodeError::Peer(_) => (StatusCode::BAD_GATEWAY, "peer_unreachable"),
            NodeError::PaymentFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "payment_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// SHA-256 of an API key, hex: what is stored instead of the key.
pub fn key_hash_hex(key: &str) -> String {
    hex::encode(sha256::Hash::hash(key.as_bytes()).to_byte_array())
}

/// Who is calling.
enum Caller {
    Operator,
    Merchant(MerchantRecord),
}

impl Caller {
    /// The owner value of the caller's records (`""` for the operator).
    fn owner(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Merchant(m) => Some(&m.id),
        }
    }

    fn operator_only(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Merchant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs the operator's key",
            )),
        }
    }
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
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
    let hash = sha256::Hash::hash(key.as_bytes()).to_byte_array();
    if hash == app.api_key_hash {
        return Ok(Caller::Operator);
    }
    match app.node.merchant_by_key_hash(&hex::encode(hash)) {
        Some(m) => {
            let now = std::time::Instant::now();
            let mut buckets = app.buckets.lock().expect("buckets lock");
            let bucket = buckets.entry(m.id.clone()).or_insert(Bucket {
                tokens: f64::from(app.merchant_rate.burst.max(1)),
                at: now,
            });
            if let Err(wait) = app.merchant_rate.take(bucket, now) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "more than {} requests per second; try again in {wait} s",
                        app.merchant_rate.per_sec
                    ),
                ));
            }
            Ok(Caller::Merchant(m))
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong API key",
        )),
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/address", post(new_address))
        .route("/v1/peers", post(connect_peer))
        .route("/v1/channels", get(list_channels).post(open_channel))
        .route("/v1/channels/{id}", get(show_channel))
        .route("/v1/channels/{id}/close", post(close_channel))
        .route("/v1/channels/{id}/pay", post(pay))
        .route("/v1/channels/{id}/commitment", get(signed_commitment))
        .route("/v1/preimages", post(add_preimage))
        .route("/v1/invoices", get(list_invoices).post(create_invoice))
        .route("/v1/invoices/{hash}", get(show_invoice))
        .route("/v1/payments", get(list_payments).post(pay_invoice))
        .route("/v1/payments/{hash}", get(show_payment))
        .route("/v1/forwards", get(list_forwards))
        .route("/v1/webhooks", get(list_webhooks).post(add_webhook))
        .route("/v1/webhooks/{id}", delete(delete_webhook))
        .route("/v1/webhooks/{id}/test", post(test_webhook))
        .route("/v1/webhooks/deliveries", get(list_deliveries))
        .route("/v1/merchants", get(list_merchants).post(create_merchant))
        .route(
            "/v1/merchants/{id}/key",
            post(rotate_merchant_key).delete(revoke_merchant_key),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
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
    short_channel_id: Option<String>,
    funding_txid: String,
    funding_output_index: u32,
    peer_policy: Option<crate::node::ForwardingPolicy>,
    closing_txid: Option<String>,
    active: bool,
    channel_type: &'static str,
    public: bool,
    announced: bool,
    feerate_per_kw: u32,
}

impl From<ChannelSummary> for ChannelJson {
    fn from(c: ChannelSummary) -> Self {
        ChannelJson {
            channel_id: c.channel_id.to_string(),
            peer_id: c.peer.to_string(),
            status: c.status.as_str().into(),
            capacity_sat: c.capacity_sat,
            local_balance_msat: c.local.0,
            remote_balance_msat: c.remote.0,
            htlcs: c.htlcs,
            short_channel_id: c.short_channel_id.map(scid_string),
            funding_txid: c.funding_outpoint.txid.to_string(),
            funding_output_index: c.funding_outpoint.vout,
            peer_policy: c.peer_policy,
            closing_txid: c.closing_tx.map(|t| t.compute_txid().to_string()),
            active: c.active,
            public: c.public,
            announced: c.announced,
            feerate_per_kw: c.feerate_per_kw,
            channel_type: match c.channel_type {
                channel::channel_type::ChannelType::AnchorsZeroFeeHtlcTx => {
                    "anchors_zero_fee_htlc_tx"
                }
                channel::channel_type::ChannelType::StaticRemoteKey => "static_remotekey",
            },
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
    let caller = authorize(&app, &headers)?;
    let tip = app
        .node
        .chain()
        .tip()
        .await
        .map_err(|e| ApiError::from(NodeError::Chain(e)))?;
    let channels = visible_channels(&app, &caller).await;
    let local: u64 = channels
        .iter()
        .filter(|c| c.status != crate::node::ChannelStatus::Closed)
        .map(|c| c.local.0)
        .sum();
    let remote: u64 = channels
        .iter()
        .filter(|c| c.status != crate::node::ChannelStatus::Closed)
        .map(|c| c.remote.0)
        .sum();
    let mut v = json!({
        "node_id": app.node.node_id().to_string(),
        "alias": app.node.alias(),
        "listen": app.node.listen_addr().to_string(),
        "network": app.node.network().to_string(),
        "block_height": tip.height,
        "channels": channels.len(),
        "channel_local_balance_msat": local,
        "channel_remote_balance_msat": remote,
    });
    match &caller {
        Caller::Operator => {
            v["onchain_balance_sat"] = json!(app.node.wallet_balance().await.to_sat());
            v["tower_appointments_pending"] = json!(app.node.pending_appointments());
            v["towers"] = app
                .node
                .tower_status()
                .into_iter()
                .map(|(url, expiry, pending)| {
                    json!({"url": url, "subscription_expiry": expiry, "appointments_pending": pending})
                })
                .collect();
        }
        Caller::Merchant(m) => {
            v["merchant"] = merchant_json(m);
        }
    }
    Ok(Json(v))
}

async fn new_address(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    Ok(Json(
        json!({"address": app.node.new_address().await?.to_string()}),
    ))
}

#[derive(Deserialize)]
struct ConnectRequest {
    node_id: String,
    address: String,
}

async fn connect_peer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<ConnectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let req = body(payload)?;
    let node_id: PublicKey = req.node_id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_node_id",
            "node_id must be a 33-byte hex public key",
        )
    })?;
    let addr = req.address.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_address",
            "address must be host:port",
        )
    })?;
    app.node.connect_peer(node_id, addr).await?;
    Ok(Json(json!({"connected": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    /// The operator names the peer; a merchant's channel goes to its own node.
    peer_id: Option<String>,
    capacity_sat: u64,
    #[serde(default)]
    push_msat: u64,
    /// A public channel, announced to the network (operator only).
    #[serde(default)]
    announce: bool,
}

/// Smallest and largest channel the node opens.
const MIN_CAPACITY_SAT: u64 = 20_000;
const MAX_CAPACITY_SAT: u64 = 16_777_215;

async fn open_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<OpenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let caller = authorize(&app, &headers)?;
    let req = body(payload)?;
    let peer: PublicKey = match (&caller, &req.peer_id) {
        (Caller::Operator, Some(p)) => p.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_node_id",
                "peer_id must be a 33-byte hex public key",
            )
        })?,
        (Caller::Operator, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "peer_id is required",
            ))
        }
        (Caller::Merchant(m), None) => m.node_id,
        (Caller::Merchant(m), Some(p)) if p.parse::<PublicKey>().ok() == Some(m.node_id) => {
            m.node_id
        }
        (Caller::Merchant(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a merchant's channel goes to its own node: leave peer_id out",
            ))
        }
    };
    if !(MIN_CAPACITY_SAT..=MAX_CAPACITY_SAT).contains(&req.capacity_sat) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            format!("capacity_sat must be between {MIN_CAPACITY_SAT} and {MAX_CAPACITY_SAT}"),
        ));
    }
    if req.push_msat > req.capacity_sat.saturating_mul(1000) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "push_msat exceeds the capacity",
        ));
    }
    if matches!(caller, Caller::Merchant(_)) && req.push_msat > 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "a merchant cannot ask for pushed funds",
        ));
    }
    if matches!(caller, Caller::Merchant(_)) && req.announce {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a merchant's channels are not announced",
        ));
    }
    let id = match &caller {
        Caller::Merchant(m) => app.node.open_merchant_channel(m, req.capacity_sat).await?,
        Caller::Operator => {
            app.node
                .open_channel_with(peer, req.capacity_sat, Msat(req.push_msat), req.announce)
                .await?
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"channel_id": id.to_string()})),
    ))
}

/// The channels the caller may see.
async fn visible_channels(app: &App, caller: &Caller) -> Vec<ChannelSummary> {
    let all = app.node.list_channels().await;
    match caller {
        Caller::Operator => all,
        Caller::Merchant(m) => all.into_iter().filter(|c| c.peer == m.node_id).collect(),
    }
}

async fn list_channels(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ChannelJson>>, ApiError> {
    let caller = authorize(&app, &headers)?;
    Ok(Json(
        visible_channels(&app, &caller)
            .await
            .into_iter()
            .map(ChannelJson::from)
            .collect(),
    ))
}

/// A channel the caller may see, else 404.
async fn visible_channel(app: &App, caller: &Caller, id: &str) -> Result<ChannelSummary, ApiError> {
    let c = app.node.channel(&parse_channel_id(id)?).await?;
    match caller {
        Caller::Merchant(m) if c.peer != m.node_id => Err(NodeError::UnknownChannel.into()),
        _ => Ok(c),
    }
}

async fn show_channel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChannelJson>, ApiError> {
    let caller = authorize(&app, &headers)?;
    Ok(Json(visible_channel(&app, &caller, &id).await?.into()))
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
    payload: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&app, &headers)?;
    let id = visible_channel(&app, &caller, &id).await?.channel_id;
    // The body is optional: none means a cooperative close.
    let req: CloseRequest = if payload.iter().all(u8::is_ascii_whitespace) {
        CloseRequest::default()
    } else {
        serde_json::from_slice(&payload)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?
    };
    if req.force && matches!(caller, Caller::Merchant(_)) {
        // A force close costs the hub the fees and locks its funds for the delay: the
        // operator decides on one.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a force close needs the operator's key; a merchant may close cooperatively",
        ));
    }
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

/// Registers a payment preimage: HTLCs paying its hash are fulfilled. (Invoices will
/// wrap this.)
async fn add_preimage(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<PreimageRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let req = body(payload)?;
    let preimage = channel::PaymentPreimage(hex32(&req.preimage, "invalid_preimage")?);
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

/// Pays the channel's peer directly: an HTLC for `payment_hash`; returns the preimage.
async fn pay(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    payload: Result<Json<PayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let id = parse_channel_id(&id)?;
    let req = body(payload)?;
    let hash = channel::PaymentHash(hex32(&req.payment_hash, "invalid_payment_hash")?);
    if req.amount_msat == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "amount_msat must be positive",
        ));
    }
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

/// `block x tx x output`, the usual text form of a short channel id.
fn scid_string(scid: u64) -> String {
    format!(
        "{}x{}x{}",
        scid >> 40,
        (scid >> 16) & 0xff_ffff,
        scid & 0xffff
    )
}

fn merchant_json(m: &MerchantRecord) -> serde_json::Value {
    json!({
        "id": m.id,
        "name": m.name,
        "node_id": m.node_id.to_string(),
        "created_at": m.created_at,
        "key_active": !m.key_hash.is_empty(),
        "key_changed_at": m.key_changed_at,
    })
}

/// Our current commitment transaction, fully signed: what a force close would broadcast
/// (for an operator's own records or a manual recovery).
async fn signed_commitment(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let tx = app.node.signed_commitment(&parse_channel_id(&id)?).await?;
    Ok(Json(json!({
        "txid": tx.compute_txid().to_string(),
        "hex": bitcoin::consensus::encode::serialize_hex(&tx),
    })))
}

/// Prometheus metrics: balances and channel figures, so the operator's key only (a
/// scraper sends it as `Authorization: Bearer`).
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&app, &headers).and_then(|c| c.operator_only()) {
        return e.into_response();
    }
    let channels = app.node.list_channels().await;
    let wallet = app.node.wallet_balance().await.to_sat();
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(&channels, wallet),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [("content-type", "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

fn invoice_json(i: &InvoiceRecord) -> serde_json::Value {
    let status = if i.status == "open" && crate::store::unix_now() >= i.expires_at {
        "expired"
    } else {
        i.status.as_str()
    };
    json!({
        "payment_hash": hex::encode(i.payment_hash.0),
        "bolt11": i.bolt11,
        "amount_msat": i.amount_msat,
        "description": i.description,
        "status": status,
        "created_at": i.created_at,
        "expires_at": i.expires_at,
        "amount_received_msat": i.amount_received_msat,
        "paid_at": i.paid_at,
    })
}

fn payment_json(p: &PaymentRecord) -> serde_json::Value {
    json!({
        "payment_hash": hex::encode(p.payment_hash.0),
        "bolt11": p.bolt11,
        "payee": p.payee.map(|k| k.to_string()),
        "amount_msat": p.amount_msat,
        "fee_msat": p.fee_msat,
        "status": p.status,
        "preimage": p.preimage.map(|x| hex::encode(x.0)),
        "failure": p.failure,
        "failure_code": p.failure_code,
        "created_at": p.created_at,
        "completed_at": p.completed_at,
        "channel_id": p.channel_id.to_string(),
    })
}

/// A forward as the operator sees it.
fn forward_json(f: &ForwardRecord) -> serde_json::Value {
    let mut v = merchant_forward_json(f);
    v["in_channel_id"] = json!(f.in_channel.to_string());
    v
}

/// A forward into a merchant's channel as the merchant sees it: without the incoming
/// channel, which is another tenant's (its id is that tenant's funding outpoint).
fn merchant_forward_json(f: &ForwardRecord) -> serde_json::Value {
    json!({
        "payment_hash": hex::encode(f.payment_hash.0),
        "in_amount_msat": f.in_amount_msat,
        "out_channel_id": f.out_channel.to_string(),
        "out_amount_msat": f.out_amount_msat,
        "fee_msat": f.fee_msat(),
        "status": f.status,
        "failure": f.failure_reason,
        "created_at": f.created_at,
        "resolved_at": f.resolved_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoiceRequest {
    amount_msat: Option<u64>,
    #[serde(default)]
    description: String,
    expiry_secs: Option<u64>,
}

async fn create_invoice(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<InvoiceRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let req = body(payload)?;
    let i = app
        .node
        .create_invoice(
            req.amount_msat,
            &req.description,
            req.expiry_secs.unwrap_or(3600),
            "",
        )
        .await?;
    Ok((StatusCode::CREATED, Json(invoice_json(&i))))
}

async fn list_invoices(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    Ok(Json(
        app.node.invoices(None).iter().map(invoice_json).collect(),
    ))
}

async fn show_invoice(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(hash): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let hash = channel::PaymentHash(hex32(&hash, "invalid_payment_hash")?);
    let i = app
        .node
        .invoice(&hash, None)
        .ok_or(NodeError::NotFound("invoice"))?;
    Ok(Json(invoice_json(&i)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayInvoiceRequest {
    invoice: String,
    amount_msat: Option<u64>,
    /// Most the route may charge in fees (default: 1% of the amount plus 50 sat).
    max_fee_msat: Option<u64>,
    /// Most blocks the payment's HTLC may lock our funds (default 1008, at most 2016).
    max_cltv_expiry_delta: Option<u32>,
    /// Seconds to wait for the outcome before answering (default 30, at most 120).
    wait_secs: Option<u64>,
}

async fn pay_invoice(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<PayInvoiceRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let req = body(payload)?;
    let wait = std::time::Duration::from_secs(req.wait_secs.unwrap_or(30).min(120));
    let limits = PaymentLimits {
        max_fee_msat: req.max_fee_msat,
        max_cltv_expiry_delta: req.max_cltv_expiry_delta,
    };
    let p = app
        .node
        .pay_invoice_within(&req.invoice, req.amount_msat, limits, wait)
        .await?;
    let status = match p.status.as_str() {
        "succeeded" => StatusCode::OK,
        "pending" => StatusCode::ACCEPTED,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Ok((status, Json(payment_json(&p))).into_response())
}

async fn list_payments(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    match authorize(&app, &headers)? {
        Caller::Operator => Ok(Json(app.node.payments().iter().map(payment_json).collect())),
        // A merchant's payments are those the hub forwarded into its channels.
        Caller::Merchant(m) => Ok(Json(
            app.node
                .forwards(Some(&m.id))
                .iter()
                .map(merchant_forward_json)
                .collect(),
        )),
    }
}

async fn show_payment(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(hash): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&app, &headers)?;
    let hash = channel::PaymentHash(hex32(&hash, "invalid_payment_hash")?);
    match caller {
        Caller::Operator => {
            let p = app
                .node
                .payment(&hash)
                .ok_or(NodeError::NotFound("payment"))?;
            Ok(Json(payment_json(&p)))
        }
        Caller::Merchant(m) => {
            let f = app
                .node
                .forwards(Some(&m.id))
                .into_iter()
                .rev()
                .find(|f| f.payment_hash == hash)
                .ok_or(NodeError::NotFound("payment"))?;
            Ok(Json(merchant_forward_json(&f)))
        }
    }
}

async fn list_forwards(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let caller = authorize(&app, &headers)?;
    let view = match caller {
        Caller::Operator => forward_json,
        Caller::Merchant(_) => merchant_forward_json,
    };
    Ok(Json(
        app.node.forwards(caller.owner()).iter().map(view).collect(),
    ))
}

fn webhook_json(w: &WebhookRecord, with_secret: bool) -> serde_json::Value {
    let mut v = json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "created_at": w.created_at,
    });
    if with_secret {
        v["secret"] = json!(w.secret);
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRequest {
    url: String,
    #[serde(default)]
    events: Vec<String>,
}

async fn add_webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<WebhookRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let caller = authorize(&app, &headers)?;
    let req = body(payload)?;
    let owner = caller.owner().unwrap_or("");
    let w = app.node.add_webhook(owner, &req.url, req.events).await?;
    Ok((StatusCode::CREATED, Json(webhook_json(&w, true))))
}

async fn list_webhooks(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let caller = authorize(&app, &headers)?;
    let owner = caller.owner().unwrap_or("");
    Ok(Json(
        app.node
            .webhooks(owner)
            .iter()
            .map(|w| webhook_json(w, false))
            .collect(),
    ))
}

async fn delete_webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authorize(&app, &headers)?;
    app.node
        .delete_webhook(caller.owner().unwrap_or(""), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test_webhook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let caller = authorize(&app, &headers)?;
    let delivery = app
        .node
        .test_webhook(caller.owner().unwrap_or(""), &id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"delivery_id": delivery}))))
}

async fn list_deliveries(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let caller = authorize(&app, &headers)?;
    let owner = caller.owner().unwrap_or("");
    Ok(Json(
        app.node
            .deliveries(owner)
            .await?
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "webhook_id": d.webhook_id,
                    "event": d.event,
                    "status": d.status,
                    "attempts": d.attempts,
                    "next_attempt_at": d.next_attempt_at,
                    "last_error": d.last_error,
                    "created_at": d.created_at,
                })
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MerchantRequest {
    name: String,
    node_id: String,
}

async fn create_merchant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    payload: Result<Json<MerchantRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let req = body(payload)?;
    let node_id: PublicKey = req.node_id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_node_id",
            "node_id must be a 33-byte hex public key",
        )
    })?;
    let (m, key) = app.node.create_merchant(&req.name, node_id).await?;
    let mut v = merchant_json(&m);
    v["api_key"] = json!(key);
    Ok((StatusCode::CREATED, Json(v)))
}

/// Gives a merchant a new API key (shown once); the old one stops working at once.
async fn rotate_merchant_key(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    let (m, key) = app.node.rotate_merchant_key(&id).await?;
    let mut v = merchant_json(&m);
    v["api_key"] = json!(key);
    Ok(Json(v))
}

/// Revokes a merchant's API key; its channels and records stay.
async fn revoke_merchant_key(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    app.node.revoke_merchant_key(&id).await?;
    app.buckets.lock().expect("buckets lock").remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_merchants(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    authorize(&app, &headers)?.operator_only()?;
    Ok(Json(
        app.node.merchants().iter().map(merchant_json).collect(),
    ))
}

/// The JSON bodies the API accepts, for checking one without a running node (the fuzz
/// targets feed arbitrary bytes through [`check_body`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// `POST /v1/invoices`.
    CreateInvoice,
    /// `POST /v1/payments`.
    PayInvoice,
    /// `POST /v1/webhooks`.
    AddWebhook,
    /// `POST /v1/merchants`.
    CreateMerchant,
}

impl RequestBody {
    /// Every body.
    pub const ALL: [RequestBody; 9] = [
        RequestBody::ConnectPeer,
        RequestBody::OpenChannel,
        RequestBody::CloseChannel,
        RequestBody::AddPreimage,
        RequestBody::Pay,
        RequestBody::CreateInvoice,
        RequestBody::PayInvoice,
        RequestBody::AddWebhook,
        RequestBody::CreateMerchant,
    ];
}

/// Decodes `bytes` as the body `kind` the way its handler does, and runs the checks
/// that need no node (formats of ids, keys, hashes and invoices).
pub fn check_body(kind: RequestBody, bytes: &[u8]) -> Result<(), ApiError> {
    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
    }
    let key = |s: &str| {
        s.parse::<PublicKey>().map(|_| ()).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_node_id",
                "not a public key",
            )
        })
    };
    match kind {
        RequestBody::ConnectPeer => {
            let r: ConnectRequest = decode(bytes)?;
            key(&r.node_id)?;
            r.address
                .parse::<std::net::SocketAddr>()
                .map(|_| ())
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_address",
                        "address must be host:port",
                    )
                })
        }
        RequestBody::OpenChannel => {
            let r: OpenRequest = decode(bytes)?;
            r.peer_id.as_deref().map(key).transpose().map(|_| ())
        }
        RequestBody::CloseChannel => decode::<CloseRequest>(bytes).map(|_| ()),
        RequestBody::AddPreimage => {
            let r: PreimageRequest = decode(bytes)?;
            hex32(&r.preimage, "invalid_preimage").map(|_| ())
        }
        RequestBody::Pay => {
            let r: PayRequest = decode(bytes)?;
            hex32(&r.payment_hash, "invalid_payment_hash").map(|_| ())
        }
        RequestBody::CreateInvoice => decode::<InvoiceRequest>(bytes).map(|_| ()),
        RequestBody::PayInvoice => {
            let r: PayInvoiceRequest = decode(bytes)?;
            r.invoice
                .trim()
                .parse::<channel::invoice::Invoice>()
                .map(|_| ())
                .map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
                })
        }
        RequestBody::AddWebhook => decode::<WebhookRequest>(bytes).map(|_| ()),
        RequestBody::CreateMerchant => {
            let r: MerchantRequest = decode(bytes)?;
            key(&r.node_id)
        }
    }
}

/// Parses a channel id as the handlers do.
pub fn check_channel_id(id: &str) -> Result<ChannelId, ApiError> {
    parse_channel_id(id)
}

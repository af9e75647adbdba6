//! The devnet's JSON-RPC server (axum): HTTP basic auth, JSON-RPC 1.0 bodies and batches,
//! and Bitcoin Core's HTTP statuses (401 bad credentials, 404 unknown method, 400 invalid
//! request, 500 other errors; JSON-RPC 2.0 requests get 200 like in Core v28+).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::format::to_json_text;
use super::methods::dispatch;
use super::params::{codes, RpcError};
use crate::devnet::Devnet;

/// The `rpcuser` / `rpcpassword` pair the server accepts.
#[derive(Clone)]
pub struct RpcAuth {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for RpcAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Largest request body accepted (bytes).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

struct App {
    devnet: Devnet,
    expected_auth: Vec<u8>,
}

/// User name Bitcoin Core puts in its cookie file.
pub const COOKIE_USER: &str = "__cookie__";

impl RpcAuth {
    /// Creates fresh random credentials and writes them as Bitcoin Core does to
    /// `<dir>/.cookie` (`__cookie__:<hex>`, mode 0600), for clients on the same machine.
    pub fn write_cookie(dir: &Path) -> std::io::Result<Self> {
        use bitcoin::secp256k1::rand::RngCore;
        use std::io::Write;
        let mut secret = [0u8; 32];
        bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut secret);
        let auth = RpcAuth {
            user: COOKIE_USER.into(),
            password: hex::encode(secret),
        };
        let path = dir.join(".cookie");
        let tmp = dir.join(".cookie.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(format!("{}:{}", auth.user, auth.password).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(auth)
    }
}

/// A running server; dropping it does not stop it, call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Waits until the server ends (it runs until shut down).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// The axum router serving `devnet` with `auth`.
pub fn router(devnet: Devnet, auth: &RpcAuth) -> Router {
    let app = Arc::new(App {
        devnet,
        expected_auth: format!("{}:{}", auth.user, auth.password).into_bytes(),
    });
    Router::new()
        .route("/", post(handle))
        .route("/wallet/{name}", post(handle))
        // Room for a full 4 MWU block as hex in submitblock.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Binds `addr` (use port 0 in tests) and serves JSON-RPC for `devnet` until shut down.
pub async fn serve(
    devnet: Devnet,
    addr: SocketAddr,
    auth: RpcAuth,
) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(devnet, &auth);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "devnet JSON-RPC listening");
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        task,
    })
}

fn authorized(headers: &HeaderMap, expected: &[u8]) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    // Constant-time comparison, as Core's TimingResistantEqual.
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", to_json_text(&body)),
    )
        .into_response()
}

async fn handle(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers, &app.expected_auth) {
        tracing::warn!("JSON-RPC request with bad credentials");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"jsonrpc\"")],
            "",
        )
            .into_response();
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            let err = RpcError::new(codes::PARSE_ERROR, "Parse error");
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"result": null, "error": err.to_json(), "id": null}),
            );
        }
    };
    match parsed {
        Value::Object(_) => {
            let (status, reply) = execute(&app, parsed).await;
            json_response(status, reply)
        }
        Value::Array(requests) => {
            let mut replies = Vec::with_capacity(requests.len());
            for r in requests {
                replies.push(execute(&app, r).await.1);
            }
            json_response(StatusCode::OK, Value::Array(replies))
        }
        _ => {
            let err = RpcError::new(codes::PARSE_ERROR, "Top-level object parse error");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"result": null, "error": err.to_json(), "id": null}),
            )
        }
    }
}

/// Runs one request object; returns the HTTP status it would get alone and its reply.
async fn execute(app: &Arc<App>, request: Value) -> (StatusCode, Value) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let v2 = request.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let outcome = match request.get("method") {
        None => Err(RpcError::new(codes::INVALID_REQUEST, "Missing method")),
        Some(Value::String(method)) => {
            let method = method.clone();
            let params = request
                .get("params")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let devnet = app.devnet.clone();
            tracing::debug!(%method, "rpc call");
            // Validation and mining are CPU work; keep them off the async workers.
            let m = method.clone();
            match tokio::task::spawn_blocking(move || dispatch(&devnet, &m, &params)).await {
                Ok(Ok(Some(v))) => Ok(v),
                Ok(Ok(None)) => Err(RpcError::new(codes::METHOD_NOT_FOUND, "Method not found")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(RpcError::new(
                    codes::MISC_ERROR,
                    format!("internal error in {method}: {e}"),
                )),
            }
        }
        Some(_) => Err(RpcError::new(
            codes::INVALID_REQUEST,
            "Method must be a string",
        )),
    };
    match outcome {
        Ok(result) if v2 => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "result": result, "id": id}),
        ),
        Ok(result) => (
            StatusCode::OK,
            json!({"result": result, "error": null, "id": id}),
        ),
        Err(e) if v2 => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "error": e.to_json(), "id": id}),
        ),
        Err(e) => {
            let status = match e.code {
                codes::INVALID_REQUEST => StatusCode::BAD_REQUEST,
                codes::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                status,
                json!({"result": null, "error": e.to_json(), "id": id}),
            )
        }
    }
}

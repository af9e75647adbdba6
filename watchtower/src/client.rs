//! The client side: build appointments from a revoked commitment and its justice
//! transaction, and talk to a tower. Signing happens here; the secret key never leaves
//! the process.
//!
//! ```no_run
//! # async fn demo(revoked_txid: bitcoin::Txid, justice_tx: bitcoin::Transaction) -> Result<(), watchtower::client::ClientError> {
//! use bitcoin::secp256k1::SecretKey;
//! use watchtower::client::{Appointment, TowerClient};
//!
//! let key = SecretKey::from_slice(&[0x11; 32]).expect("valid key");
//! let tower = TowerClient::new("http://127.0.0.1:9814", key);
//! tower.register().await?;
//! let appointment = Appointment::new(revoked_txid, &justice_tx, 144).with_tag([7u8; 16]);
//! tower.add_appointment(&appointment).await?;
//! let status = tower.appointment_status(appointment.locator).await?;
//! assert_eq!(status.status, "watching");
//! // The channel closed cleanly: the tower may forget it.
//! tower.delete_by_tag(&[7u8; 16]).await?;
//! # Ok(()) }
//! ```

pub use crate::appointment::Locator;
pub use crate::msgs::{AppointmentReceipt, AppointmentStatus, Deleted, Registration, TowerInfo};

use crate::appointment;
use crate::msgs::{
    AddAppointmentRequest, AppointmentJson, DeleteRequest, ErrorBody, RegisterRequest,
};
use crate::sig;
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Transaction, Txid};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An appointment ready to send: what a tower stores for one revoked commitment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appointment {
    /// First 16 bytes of the revoked commitment's txid.
    pub locator: Locator,
    /// The justice transaction, encrypted under the commitment's txid.
    pub encrypted_blob: Vec<u8>,
    /// The channel's `to_self_delay` (the CSV the cheater must wait out).
    pub to_self_delay: u32,
    /// Optional tag (1 to 32 bytes) for deleting a channel's appointments at once.
    pub tag: Option<Vec<u8>>,
}

impl Appointment {
    /// The appointment for a revoked commitment `revoked_commitment_txid` whose breach
    /// `justice_tx` (signed, spending every output the node can claim) punishes.
    pub fn new(
        revoked_commitment_txid: Txid,
        justice_tx: &Transaction,
        to_self_delay: u32,
    ) -> Appointment {
        Appointment {
            locator: Locator::from_txid(&revoked_commitment_txid),
            encrypted_blob: appointment::encrypt(justice_tx, &revoked_commitment_txid),
            to_self_delay,
            tag: None,
        }
    }

    /// The same appointment carrying `tag` (e.g. 16 bytes derived from the channel id;
    /// at most 32 bytes).
    pub fn with_tag(mut self, tag: impl Into<Vec<u8>>) -> Appointment {
        self.tag = Some(tag.into());
        self
    }

    /// The bytes signed for this appointment:
    /// `locator || encrypted_blob || to_self_delay (u32 BE) [|| tag]`.
    pub fn message(&self) -> Vec<u8> {
        appointment::appointment_message(
            &self.locator,
            &self.encrypted_blob,
            self.to_self_delay,
            self.tag.as_deref(),
        )
    }
}

/// Why a tower call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The tower could not be reached or the connection broke (worth retrying).
    #[error("tower unreachable: {0}")]
    Transport(String),
    /// The tower refused the request with a stable error code (see the crate README).
    #[error("tower refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable error code, e.g. `quota_exceeded`, `unknown_user`.
        code: String,
        /// For people.
        message: String,
    },
    /// The tower answered something that is not the protocol.
    #[error("invalid tower response: {0}")]
    InvalidResponse(String),
}

impl ClientError {
    /// Whether trying again later may succeed (transport failures and 5xx answers).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Refused { status, .. } => *status >= 500,
            ClientError::InvalidResponse(_) => false,
        }
    }
}

/// A connection to one tower, as one client key.
#[derive(Clone)]
pub struct TowerClient {
    base_url: String,
    key: SecretKey,
    user_id: PublicKey,
    http: reqwest::Client,
    /// The tower's id, read from `/v1/info` at the first signed request (and again
    /// after the tower refused a signature: it may have a new id).
    tower_id: Arc<std::sync::Mutex<Option<[u8; 32]>>>,
    /// The last counter used (Unix milliseconds, or one more than the last).
    counter: Arc<AtomicU64>,
}

impl std::fmt::Debug for TowerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerClient")
            .field("base_url", &self.base_url)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl TowerClient {
    /// A client of the tower at `base_url` (e.g. `http://127.0.0.1:9814`) signing with
    /// `client_secret_key`; the tower knows the client by the matching public key.
    pub fn new(base_url: impl Into<String>, client_secret_key: SecretKey) -> TowerClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        TowerClient {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            user_id: PublicKey::from_secret_key(sig::secp(), &client_secret_key),
            key: client_secret_key,
            http,
            tower_id: Arc::default(),
            counter: Arc::default(),
        }
    }

    /// The tower's id (fetched once, and again after a refused signature).
    async fn tower_id(&self) -> Result<[u8; 32], ClientError> {
        if let Some(id) = *self.tower_id.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(id);
        }
        let info = self.info().await?;
        let id = hex::decode(&info.tower_id)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| ClientError::InvalidResponse("tower_id is not 32 bytes".into()))?;
        *self.tower_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        Ok(id)
    }

    /// A counter above every earlier one: the clock in Unix milliseconds, or one more
    /// than the last when requests come faster (or the clock went back).
    fn next_counter(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut last = self.counter.load(Ordering::SeqCst);
        loop {
            let next = now.max(last + 1);
            match self
                .counter
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// A counter and the signature of the request message for `what`.
    async fn sign_request(&self, what: &[u8]) -> Result<(u64, String), ClientError> {
        let tower_id = self.tower_id().await?;
        let counter = self.next_counter();
        let signature = sig::sign(
            &appointment::request_message(&tower_id, counter, what),
            &self.key,
        );
        Ok((counter, signature))
    }

    /// Sends a signed request built by `build` from a counter and the signature of
    /// `what`. Refused as replayed (another sender with this key, or our clock went
    /// back, used a counter as high in the same millisecond): once more, with a counter
    /// above the clock a moment later.
    async fn send_signed<T: DeserializeOwned>(
        &self,
        what: &[u8],
        build: impl Fn(u64, String) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let (counter, signature) = self.sign_request(what).await?;
        match self.send(build(counter, signature)).await {
            Err(ClientError::Refused { code, .. }) if code == "replayed_request" => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let (counter, signature) = self.sign_request(what).await?;
                self.send(build(counter, signature)).await
            }
            other => other,
        }
    }

    /// The client's id at the tower (its compressed public key).
    pub fn user_id(&self) -> PublicKey {
        self.user_id
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::InvalidResponse(e.to_string()))
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => {
                    if b.error.code == "invalid_signature" {
                        // The tower may have another id now (a new database): read it
                        // again before the next signed request.
                        *self.tower_id.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    Err(ClientError::Refused {
                        status: status.as_u16(),
                        code: b.error.code,
                        message: b.error.message,
                    })
                }
                Err(_) => Err(ClientError::Refused {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                }),
            }
        }
    }

    /// Registers (or renews) this client's key.
    pub async fn register(&self) -> Result<Registration, ClientError> {
        self.send_signed(&appointment::register_message(), |counter, signature| {
            let body = RegisterRequest {
                user_id: self.user_id.to_string(),
                counter,
                signature,
            };
            self.http
                .post(format!("{}/v1/register", self.base_url))
                .json(&body)
        })
        .await
    }

    /// Sends (or replaces) an appointment; when this returns `Ok` the tower has stored
    /// it durably.
    pub async fn add_appointment(
        &self,
        appointment: &Appointment,
    ) -> Result<AppointmentReceipt, ClientError> {
        self.send_signed(&appointment.message(), |counter, signature| {
            let body = AddAppointmentRequest {
                user_id: self.user_id.to_string(),
                appointment: AppointmentJson {
                    locator: appointment.locator.to_string(),
                    encrypted_blob: hex::encode(&appointment.encrypted_blob),
                    to_self_delay: appointment.to_self_delay,
                    tag: appointment.tag.as_ref().map(hex::encode),
                },
                counter,
                signature,
            };
            self.http
                .post(format!("{}/v1/appointments", self.base_url))
                .json(&body)
        })
        .await
    }

    /// Where the appointment with `locator` is (`watching`, `responding`, `confirmed`,
    /// `invalid`); `Refused { code: "appointment_not_found", .. }` if the tower has none.
    pub async fn appointment_status(
        &self,
        locator: Locator,
    ) -> Result<AppointmentStatus, ClientError> {
        let signature = sig::sign(&appointment::status_message(&locator), &self.key);
        self.send(
            self.http
                .get(format!("{}/v1/appointments/{locator}", self.base_url))
                .query(&[
                    ("user_id", self.user_id.to_string()),
                    ("signature", signature),
                ]),
        )
        .await
    }

    /// Deletes every appointment of this client carrying `tag` (a channel that closed
    /// cleanly); returns how many went. Penalties in flight are kept.
    pub async fn delete_by_tag(&self, tag: &[u8]) -> Result<Deleted, ClientError> {
        self.send_signed(
            &appointment::delete_tag_message(tag),
            |counter, signature| {
                let body = DeleteRequest {
                    user_id: self.user_id.to_string(),
                    tag: Some(hex::encode(tag)),
                    locators: None,
                    counter,
                    signature,
                };
                self.http
                    .post(format!("{}/v1/appointments/delete", self.base_url))
                    .json(&body)
            },
        )
        .await
    }

    /// Deletes this client's appointments with these locators.
    pub async fn delete_locators(&self, locators: &[Locator]) -> Result<Deleted, ClientError> {
        let what = appointment::delete_locators_message(locators);
        self.send_signed(&what, |counter, signature| {
            let body = DeleteRequest {
                user_id: self.user_id.to_string(),
                tag: None,
                locators: Some(locators.iter().map(|l| l.to_string()).collect()),
                counter,
                signature,
            };
            self.http
                .post(format!("{}/v1/appointments/delete", self.base_url))
                .json(&body)
        })
        .await
    }

    /// The tower's settings and state.
    pub async fn info(&self) -> Result<TowerInfo, ClientError> {
        self.send(self.http.get(format!("{}/v1/info", self.base_url)))
            .await
    }
}

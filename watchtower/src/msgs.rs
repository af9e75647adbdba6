//! The JSON bodies of the REST API, shared by the server ([`crate::api`]) and the client
//! library ([`crate::client`]). Bytes are lowercase hex, signatures zbase32.

use serde::{Deserialize, Serialize};

/// `POST /v1/register`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The client's compressed public key, hex.
    pub user_id: String,
    /// The request's counter: above every earlier one of this client at this tower, and
    /// within ten minutes of the tower's clock in Unix milliseconds.
    pub counter: u64,
    /// zbase32 signature by `user_id` of the request message for `"register"`.
    pub signature: String,
}

/// What a registration grants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    /// The client's compressed public key, hex.
    pub user_id: String,
    /// Appointments the client may still add.
    pub available_slots: u32,
    /// Block height at which the tower stops watching for this client.
    pub subscription_expiry: u32,
}

/// An appointment on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppointmentJson {
    /// 16 bytes, hex.
    pub locator: String,
    /// The encrypted justice transaction, hex.
    pub encrypted_blob: String,
    /// The channel's `to_self_delay`.
    pub to_self_delay: u32,
    /// Optional client-chosen tag, hex (1 to 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `POST /v1/appointments`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddAppointmentRequest {
    /// The client's compressed public key, hex.
    pub user_id: String,
    /// The appointment.
    pub appointment: AppointmentJson,
    /// The request's counter (as in [`RegisterRequest::counter`]).
    pub counter: u64,
    /// zbase32 signature by `user_id` of the request message for the appointment.
    pub signature: String,
}

/// The tower's answer to an accepted appointment (it is durable when this is sent).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppointmentReceipt {
    /// The locator, hex.
    pub locator: String,
    /// Tip height when it was accepted.
    pub start_block: u32,
    /// Whether it replaced an earlier appointment with the same locator.
    pub updated: bool,
    /// Appointments the client may still add.
    pub available_slots: u32,
    /// Block height at which the tower stops watching for this client.
    pub subscription_expiry: u32,
}

/// `GET /v1/appointments/{locator}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppointmentStatus {
    /// The locator, hex.
    pub locator: String,
    /// `watching`, `responding`, `confirmed` or `invalid`.
    pub status: String,
    /// Tip height when it was (last) accepted.
    pub start_block: u32,
    /// The breach's txid once seen (display hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breach_txid: Option<String>,
    /// Height of the block that held the breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breach_height: Option<u32>,
    /// The penalty's txid once broadcast (display hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty_txid: Option<String>,
    /// Confirmations of the penalty last seen.
    pub confirmations: u32,
    /// Why an appointment is `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/appointments/delete`: by tag or by locators (exactly one of them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The client's compressed public key, hex.
    pub user_id: String,
    /// Delete every appointment carrying this tag (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Delete the appointments with these locators (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locators: Option<Vec<String>>,
    /// The request's counter (as in [`RegisterRequest::counter`]).
    pub counter: u64,
    /// zbase32 signature by `user_id` of the request message for the delete.
    pub signature: String,
}

/// What a delete removed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deleted {
    /// Appointments removed (in-flight penalties are never removed).
    pub deleted: u32,
    /// Appointments the client may now add.
    pub available_slots: u32,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TowerInfo {
    /// The tower's id (32 bytes, hex): every signed request names it, so a request made
    /// for one tower means nothing at another.
    pub tower_id: String,
    /// Software version.
    pub version: String,
    /// Last block the tower has scanned.
    pub block_height: u32,
    /// Confirmations after which a penalty counts as done.
    pub confirmations: u32,
    /// Appointment slots a registration grants.
    pub max_appointments: u32,
    /// Blocks a registration lasts.
    pub subscription_blocks: u32,
    /// Largest accepted encrypted blob, bytes.
    pub max_blob_size: u32,
    /// Appointments stored.
    pub appointments: u64,
}

/// The error body of every non-2xx answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable, documented code.
    pub code: String,
    /// For people.
    pub message: String,
}

//! JSON-RPC errors and parameter parsing with Bitcoin Core's codes and messages
//! (`RPCTypeCheck`, `ParseHashV`, named or positional parameters).

use bitcoin::hashes::Hash;
use serde_json::{json, Map, Value};

/// A JSON-RPC error object (`{"code": …, "message": …}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// Bitcoin Core's `RPCErrorCode`.
    pub code: i64,
    /// Message.
    pub message: String,
}

/// Bitcoin Core's error codes used here (`rpc/protocol.h`).
pub mod codes {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// `std::exception` thrown in command handling (also: wrong number of parameters).
    pub const MISC_ERROR: i64 = -1;
    /// Unexpected type passed as parameter.
    pub const TYPE_ERROR: i64 = -3;
    /// Invalid address or key.
    pub const INVALID_ADDRESS_OR_KEY: i64 = -5;
    /// Invalid, missing or duplicate parameter.
    pub const INVALID_PARAMETER: i64 = -8;
    /// Error parsing or validating structure in raw format.
    pub const DESERIALIZATION_ERROR: i64 = -22;
    /// General error during transaction or block submission.
    pub const VERIFY_ERROR: i64 = -25;
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The JSON error object.
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// The JSON type names of Core's `uvTypeName`.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A method's parameters, normalised to positions using its argument names.
pub struct Params<'a> {
    method: &'a str,
    names: &'a [&'a str],
    values: Vec<Value>,
}

impl<'a> Params<'a> {
    /// Parses `params` (array, object of named arguments, or absent) for a method whose
    /// arguments are `names`, of which the first `required` are mandatory.
    pub fn new(
        method: &'a str,
        raw: &Value,
        names: &'a [&'a str],
        required: usize,
    ) -> Result<Self, RpcError> {
        let values = match raw {
            Value::Null => Vec::new(),
            Value::Array(a) => a.clone(),
            Value::Object(o) => named_to_positional(o, names)?,
            _ => {
                return Err(RpcError::new(
                    codes::INVALID_REQUEST,
                    "Params must be an array or object",
                ))
            }
        };
        let given = values
            .iter()
            .rposition(|v| !v.is_null())
            .map_or(0, |i| i + 1);
        if values.len() > names.len() || given < required {
            return Err(RpcError::new(
                codes::MISC_ERROR,
                format!("{method} {}\n\nWrong number of arguments.", names.join(" ")),
            ));
        }
        Ok(Self {
            method,
            names,
            values,
        })
    }

    fn wrong_type(&self, idx: usize, got: &Value, expected: &str) -> RpcError {
        let key = format!(
            "Position {} ({})",
            idx + 1,
            self.names.get(idx).copied().unwrap_or("?")
        );
        let msg = format!(
            "JSON value of type {} is not of expected type {expected}",
            type_name(got)
        );
        RpcError::new(
            codes::TYPE_ERROR,
            format!("Wrong type passed:\n{{\n    \"{key}\": \"{msg}\"\n}}"),
        )
    }

    fn raw(&self, idx: usize) -> Option<&Value> {
        self.values.get(idx).filter(|v| !v.is_null())
    }

    /// Optional string argument.
    pub fn opt_str(&self, idx: usize) -> Result<Option<&str>, RpcError> {
        match self.raw(idx) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(idx, v, "string")),
        }
    }

    /// Required string argument.
    pub fn str(&self, idx: usize) -> Result<&str, RpcError> {
        self.opt_str(idx)?.ok_or_else(|| self.missing(idx))
    }

    fn missing(&self, idx: usize) -> RpcError {
        RpcError::new(
            codes::MISC_ERROR,
            format!(
                "{} {}\n\nMissing argument {}.",
                self.method,
                self.names.join(" "),
                idx + 1
            ),
        )
    }

    /// Optional integer argument.
    pub fn opt_i64(&self, idx: usize) -> Result<Option<i64>, RpcError> {
        match self.raw(idx) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => Err(RpcError::new(
                    codes::TYPE_ERROR,
                    "JSON integer out of range",
                )),
            },
            Some(v) => Err(self.wrong_type(idx, v, "number")),
        }
    }

    /// Required integer argument.
    pub fn i64(&self, idx: usize) -> Result<i64, RpcError> {
        self.opt_i64(idx)?.ok_or_else(|| self.missing(idx))
    }

    /// Optional real number argument (fee rates in BTC/kvB).
    pub fn opt_f64(&self, idx: usize) -> Result<Option<f64>, RpcError> {
        match self.raw(idx) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| RpcError::new(codes::TYPE_ERROR, "Invalid amount")),
            Some(v) => Err(self.wrong_type(idx, v, "number")),
        }
    }

    /// Optional boolean argument.
    pub fn opt_bool(&self, idx: usize) -> Result<Option<bool>, RpcError> {
        match self.raw(idx) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(idx, v, "bool")),
        }
    }

    /// A verbosity argument that Core accepts as a number or a boolean.
    pub fn verbosity(&self, idx: usize, default: i64) -> Result<i64, RpcError> {
        match self.raw(idx) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(i64::from(*b)),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| self.wrong_type(idx, &Value::Null, "number")),
            Some(v) => Err(self.wrong_type(idx, v, "number")),
        }
    }

    /// Optional array argument.
    pub fn array(&self, idx: usize) -> Result<&Vec<Value>, RpcError> {
        match self.raw(idx) {
            Some(Value::Array(a)) => Ok(a),
            None => Err(self.missing(idx)),
            Some(v) => Err(self.wrong_type(idx, v, "array")),
        }
    }

    /// A 32-byte hash argument in display (reversed) hex, with `ParseHashV`'s errors.
    pub fn hash<H: Hash + std::str::FromStr>(&self, idx: usize) -> Result<H, RpcError> {
        let s = self.str(idx)?;
        parse_hash(self.names.get(idx).copied().unwrap_or("hash"), s)
    }
}

/// `ParseHashV`: a 64-character hex string.
pub fn parse_hash<H: std::str::FromStr>(name: &str, s: &str) -> Result<H, RpcError> {
    if s.len() != 64 {
        return Err(RpcError::new(
            codes::INVALID_PARAMETER,
            format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
        ));
    }
    s.parse().map_err(|_| {
        RpcError::new(
            codes::INVALID_PARAMETER,
            format!("{name} must be hexadecimal string (not '{s}')"),
        )
    })
}

fn named_to_positional(o: &Map<String, Value>, names: &[&str]) -> Result<Vec<Value>, RpcError> {
    let mut values = vec![Value::Null; names.len()];
    for (k, v) in o {
        let pos = names.iter().position(|n| n == k).ok_or_else(|| {
            RpcError::new(
                codes::INVALID_PARAMETER,
                format!("Unknown named parameter {k}"),
            )
        })?;
        values[pos] = v.clone();
    }
    while values.last().is_some_and(Value::is_null) {
        values.pop();
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_message_matches_core() {
        let p = Params::new("getblockhash", &json!(["x"]), &["height"], 1).unwrap();
        let e = p.i64(0).unwrap_err();
        assert_eq!(e.code, -3);
        assert_eq!(
            e.message,
            "Wrong type passed:\n{\n    \"Position 1 (height)\": \"JSON value of type string is not of expected type number\"\n}"
        );
    }

    #[test]
    fn named_params_and_arity() {
        let p = Params::new(
            "getblock",
            &json!({"verbosity": 2, "blockhash": "ab"}),
            &["blockhash", "verbosity"],
            1,
        )
        .unwrap();
        assert_eq!(p.str(0).unwrap(), "ab");
        assert_eq!(p.verbosity(1, 1).unwrap(), 2);
        assert_eq!(
            Params::new("getblockhash", &json!([]), &["height"], 1)
                .err()
                .map(|e| e.code),
            Some(-1)
        );
        assert_eq!(
            Params::new("getblockhash", &json!([1, 2]), &["height"], 1)
                .err()
                .map(|e| e.code),
            Some(-1)
        );
        assert_eq!(
            Params::new("x", &json!({"nope": 1}), &["height"], 0)
                .err()
                .map(|e| e.code),
            Some(-8)
        );
    }
}

//! The `[events]` table: what the gateway tells the business backend, and
//! how (module `crate::events`).
//!
//! Empty `url`, the default, sends nothing and stores no events.

use serde::Deserialize;

/// Kinds of event, as named in `types` and in an event's `type`.
pub const TYPES: [&str; 4] = ["message", "online", "offline", "group"];

/// Settings of the webhook.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Where batches are POSTed (`http://` or `https://`); empty for none.
    pub url: String,
    /// HMAC-SHA256 key of the `X-Imgate-Signature` header.
    pub secret: String,
    /// PEM file of the CA certificates an `https://` url is checked
    /// against, instead of the Mozilla roots (a backend behind a private
    /// CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Which kinds of event are stored and sent (`TYPES`).
    pub types: Vec<String>,
    /// Most events in one POST.
    pub batch: usize,
    /// Most bytes of events in one POST (an event larger than this goes
    /// alone): a group message's offline list can be long.
    pub batch_bytes: usize,
    /// How long a batch that is not full waits for more events, ms.
    pub linger_ms: u64,
    /// How long one POST may take before it counts as failed, ms.
    pub timeout_ms: u64,
    /// First wait after a failed POST, ms; doubles with each failure.
    pub retry_min_ms: u64,
    /// Longest wait between tries, ms.
    pub retry_max_ms: u64,
    /// Most events waiting to be sent: past it, the oldest are dropped
    /// (counted and logged), so a backend that never comes back cannot
    /// fill the disk.
    pub max_lag: u64,
    /// Events waiting past which an error is logged (every 10 s while it
    /// lasts).
    pub lag_alert: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            url: String::new(),
            secret: String::new(),
            ca_file: None,
            types: TYPES.iter().map(|t| t.to_string()).collect(),
            batch: 500,
            batch_bytes: 1 << 20,
            linger_ms: 20,
            timeout_ms: 5_000,
            retry_min_ms: 100,
            retry_max_ms: 10_000,
            max_lag: 10_000_000,
            lag_alert: 100_000,
        }
    }
}

impl EventsConfig {
    /// Whether events are on.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// What is wrong with these settings, as (key, why).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(("events.url", "must start with http:// or https://".into()));
        }
        if self.ca_file.is_some() && !self.url.starts_with("https://") {
            return Err(("events.ca_file", "is for an https:// url only".into()));
        }
        if self.secret.is_empty() {
            return Err((
                "events.secret",
                "must not be empty when events.url is set".into(),
            ));
        }
        if let Some(t) = self.types.iter().find(|t| !TYPES.contains(&t.as_str())) {
            return Err((
                "events.types",
                format!("unknown type {t:?}; known: {}", TYPES.join(", ")),
            ));
        }
        if self.batch == 0 || self.batch > 100_000 {
            return Err(("events.batch", "must be 1..=100000".into()));
        }
        if self.batch_bytes < 1024 {
            return Err(("events.batch_bytes", "must be at least 1024".into()));
        }
        if self.linger_ms > 60_000 {
            return Err(("events.linger_ms", "must be at most 60000".into()));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(("events.timeout_ms", "must be 1..=600000".into()));
        }
        if self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err((
                "events.retry_max_ms",
                "retry_min_ms must be at least 1 and at most retry_max_ms".into(),
            ));
        }
        if self.max_lag < self.batch as u64 {
            return Err(("events.max_lag", "must be at least events.batch".into()));
        }
        if self.lag_alert == 0 {
            return Err(("events.lag_alert", "must be at least 1".into()));
        }
        Ok(())
    }

    /// Whether events of kind `t` are stored and sent.
    pub fn wants(&self, t: &str) -> bool {
        self.enabled() && self.types.iter().any(|x| x == t)
    }
}

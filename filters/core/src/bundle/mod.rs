//! All four policies in one module and one pass: the bundle.
//!
//! Loading four filters costs four entries into Wasm per callback and four
//! separate conversations with the host; the bundle enters once and reads
//! what the policies share once ([`pass::Pass`]: request headers, the peer
//! address, properties, the clock, `:status`). Each policy is exactly its single
//! module's filter, configured from its section and driven in this order:
//!
//! * **Request**: `rate_limit`, then `circuit_breaker`, then
//!   `sticky_session`, then `retry`. A policy that answers locally ends the
//!   pass, so the later ones never see the request: a request the rate
//!   limiter refuses is not a breaker probe, is not placed (or pinned) on a
//!   backend and deposits nothing into the retry budget; one the breaker
//!   rejects takes no backend and no retries; one sticky answers 503 (every
//!   backend down) deposits nothing. Retry runs last so that only requests
//!   that will be proxied count in its budget. A global rate limit pauses the
//!   request for the service's answer; the pass resumes after it with the
//!   breaker.
//! * **Response**: the same order. Each policy acts only on requests it saw,
//!   and settles the request's outcome there (completion settles only a
//!   request that never got response headers, in the same order): the rate limiter adds its headers, the breaker
//!   records the outcome, sticky records the backend's health and sets its
//!   cookie, retry settles its budget and adds `Retry-After` (to any 429 or
//!   503 without one, as its single module does).
//!
//! The configuration's sections are the four filters' configurations
//! (`rate_limit`, `circuit_breaker`, `retry`, `sticky_session`); a missing
//! section turns that policy off. A refusal is the section's own line with
//! the section in front of the field (`rate_limit.limits[0].burst: ...`).
//! Metrics keep each policy's names; `bundle.configured` counts the VMs.

pub mod pass;

use crate::breaker::{BreakerFilter, BreakerStream};
use crate::config::{parse_json, ConfigError};
use crate::host::{CallReply, Filter, Flow, Host, Refused};
use crate::ratelimit::{RateLimitFilter, RateLimitStream};
use crate::retry::{RetryFilter, RetryStream};
use crate::sticky::{SessionStream, StickyFilter};
use pass::Pass;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "BundleConfig"))]
#[serde(deny_unknown_fields)]
struct RawBundle {
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::section::<crate::ratelimit::RawRateLimitConfig>")
    )]
    rate_limit: Option<Box<RawValue>>,
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::section::<crate::breaker::RawBreakerConfig>")
    )]
    circuit_breaker: Option<Box<RawValue>>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::section::<crate::retry::RawRetryConfig>"))]
    retry: Option<Box<RawValue>>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::section::<crate::sticky::RawStickyConfig>"))]
    sticky_session: Option<Box<RawValue>>,
    /// Read by [`crate::observe`], for every policy.
    #[serde(default)]
    #[allow(dead_code)]
    trace: bool,
    /// Read by [`crate::observe`].
    #[serde(default)]
    #[allow(dead_code)]
    metrics_path: Option<String>,
}

/// The JSON Schema of the configuration (see [`crate::schema`]).
#[cfg(feature = "schema")]
pub fn config_schema() -> schemars::Schema {
    schemars::schema_for!(RawBundle)
}

/// The four policies, each optional.
#[derive(Debug, Clone)]
pub struct BundleFilter {
    rate_limit: Option<RateLimitFilter>,
    circuit_breaker: Option<BreakerFilter>,
    sticky_session: Option<StickyFilter>,
    retry: Option<RetryFilter>,
    /// Some enabled policy reads every request header: read them in one call.
    all_headers: bool,
}

/// One request's state in each policy, and where the request pass stopped.
#[derive(Debug, Default)]
pub struct BundleStream {
    rate_limit: RateLimitStream,
    circuit_breaker: BreakerStream,
    sticky_session: SessionStream,
    retry: RetryStream,
}

/// The checked configuration: each policy's own, or `None` (off).
#[derive(Debug)]
pub struct BundleConfig {
    /// `rate_limit`.
    pub rate_limit: Option<<RateLimitFilter as Filter>::Config>,
    /// `circuit_breaker`.
    pub circuit_breaker: Option<<BreakerFilter as Filter>::Config>,
    /// `retry`.
    pub retry: Option<<RetryFilter as Filter>::Config>,
    /// `sticky_session`.
    pub sticky_session: Option<<StickyFilter as Filter>::Config>,
}

/// Checks `section` of the bundle's configuration as `F` checks its own:
/// from the section's very bytes (nothing is re-serialised, so a key given
/// twice in a section is refused as the single module refuses it), with
/// the section in front of the field.
fn section<F: Filter>(name: &str, raw: Option<Box<RawValue>>) -> Result<Option<F::Config>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let bytes = raw.get().as_bytes();
    crate::observe::refuse_in_section(bytes).and_then(|()| F::check(bytes)).map(Some).map_err(|e| {
        let field = if e.field == "." { name.to_string() } else { format!("{name}.{}", e.field) };
        ConfigError::new(field, e.reason)
    })
}

/// Builds `F` from its checked section, when the section was given.
fn build<F: Filter, H: Host>(host: &H, config: Option<F::Config>) -> Result<Option<F>, Refused> {
    config.map(|c| F::build(host, c)).transpose()
}

impl BundleFilter {
    /// The policies, in request order, from `step` on (0: rate limit, 1:
    /// breaker, 2: sticky sessions, 3: retry). Stops at the first that does
    /// not let the request go on.
    fn request_from<H: Host>(&self, stream: &mut BundleStream, host: &H, step: usize) -> Flow {
        for i in step..4 {
            let flow = match i {
                0 => self.rate_limit.as_ref().map(|f| f.on_request_headers(&mut stream.rate_limit, host)),
                1 => self.circuit_breaker.as_ref().map(|f| f.on_request_headers(&mut stream.circuit_breaker, host)),
                2 => self.sticky_session.as_ref().map(|f| f.on_request_headers(&mut stream.sticky_session, host)),
                _ => self.retry.as_ref().map(|f| f.on_request_headers(&mut stream.retry, host)),
            };
            if flow == Some(Flow::Pause) {
                if i > 0 {
                    // A later policy answered the request itself (only the
                    // rate limiter pauses for a call): it never reaches the
                    // upstream, so no cost comes back to settle.
                    if let Some(rl) = &self.rate_limit {
                        rl.forget_charges(&mut stream.rate_limit);
                    }
                }
                return Flow::Pause;
            }
        }
        Flow::Continue
    }
}

impl Filter for BundleFilter {
    type Stream = BundleStream;
    type Config = BundleConfig;
    const METRIC_PREFIX: &'static str = "bundle";

    fn check(config: &[u8]) -> Result<BundleConfig, ConfigError> {
        let raw: RawBundle = parse_json(config)?;
        if raw.rate_limit.is_none()
            && raw.circuit_breaker.is_none()
            && raw.retry.is_none()
            && raw.sticky_session.is_none()
        {
            return Err(ConfigError::new(
                ".",
                "turns no policy on: give at least one of rate_limit, circuit_breaker, retry, sticky_session",
            ));
        }
        Ok(BundleConfig {
            rate_limit: section::<RateLimitFilter>("rate_limit", raw.rate_limit)?,
            circuit_breaker: section::<BreakerFilter>("circuit_breaker", raw.circuit_breaker)?,
            retry: section::<RetryFilter>("retry", raw.retry)?,
            sticky_session: section::<StickyFilter>("sticky_session", raw.sticky_session)?,
        })
    }

    fn build<H: Host>(host: &H, config: BundleConfig) -> Result<Self, Refused> {
        let rate_limit: Option<RateLimitFilter> = build(host, config.rate_limit)?;
        let circuit_breaker = build(host, config.circuit_breaker)?;
        let retry: Option<RetryFilter> = build(host, config.retry)?;
        let sticky_session: Option<StickyFilter> = build(host, config.sticky_session)?;
        let all_headers =
            retry.is_some() || sticky_session.is_some() || rate_limit.as_ref().is_some_and(|r| r.needs_all_headers());
        Ok(BundleFilter { rate_limit, circuit_breaker, sticky_session, retry, all_headers })
    }

    fn on_request_headers<H: Host>(&self, stream: &mut BundleStream, host: &H) -> Flow {
        self.request_from(stream, &Pass::new(host, self.all_headers), 0)
    }

    fn on_response_headers<H: Host>(&self, stream: &mut BundleStream, host: &H) {
        let pass = Pass::new(host, false);
        if let Some(f) = &self.rate_limit {
            f.on_response_headers(&mut stream.rate_limit, &pass);
        }
        if let Some(f) = &self.circuit_breaker {
            f.on_response_headers(&mut stream.circuit_breaker, &pass);
        }
        if let Some(f) = &self.sticky_session {
            f.on_response_headers(&mut stream.sticky_session, &pass);
        }
        if let Some(f) = &self.retry {
            f.on_response_headers(&mut stream.retry, &pass);
        }
    }

    /// Only the rate limiter reads the body (a cost from the response).
    fn on_response_body<H: Host>(&self, stream: &mut BundleStream, host: &H, size: usize, end: bool) -> Flow {
        match &self.rate_limit {
            Some(f) => f.on_response_body(&mut stream.rate_limit, host, size, end),
            None => Flow::Continue,
        }
    }

    fn on_log<H: Host>(&self, stream: &mut BundleStream, host: &H) {
        let pass = Pass::new(host, false);
        if let Some(f) = &self.rate_limit {
            f.on_log(&mut stream.rate_limit, &pass);
        }
        if let Some(f) = &self.circuit_breaker {
            f.on_log(&mut stream.circuit_breaker, &pass);
        }
        if let Some(f) = &self.sticky_session {
            f.on_log(&mut stream.sticky_session, &pass);
        }
        if let Some(f) = &self.retry {
            f.on_log(&mut stream.retry, &pass);
        }
    }

    fn on_call_reply<H: Host>(&self, stream: &mut BundleStream, host: &H, token: u32, reply: CallReply) -> Flow {
        let Some(rl) = &self.rate_limit else { return Flow::Pause };
        if rl.settles(&stream.rate_limit, token) {
            // The answer to a cost charged at the end of the response: the
            // request's policies ran long ago.
            return rl.on_call_reply(&mut stream.rate_limit, host, token, reply);
        }
        let pass = Pass::new(host, self.all_headers);
        match rl.on_call_reply(&mut stream.rate_limit, &pass, token, reply) {
            Flow::Continue => self.request_from(stream, &pass, 1),
            Flow::Pause => Flow::Pause,
        }
    }

    fn tick_period(&self) -> Option<std::time::Duration> {
        self.rate_limit.as_ref().and_then(Filter::tick_period)
    }

    /// Each policy's own attributes, in request order.
    fn span_attributes(&self, stream: &BundleStream, out: &mut Vec<(&'static str, String)>) {
        if let Some(f) = &self.rate_limit {
            f.span_attributes(&stream.rate_limit, out);
        }
        if let Some(f) = &self.circuit_breaker {
            f.span_attributes(&stream.circuit_breaker, out);
        }
        if let Some(f) = &self.sticky_session {
            f.span_attributes(&stream.sticky_session, out);
        }
        if let Some(f) = &self.retry {
            f.span_attributes(&stream.retry, out);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

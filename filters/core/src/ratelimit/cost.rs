//! Limits by cost: what one request charges a limit (a fixed weight, a
//! request header, or a number the response brings in a header or its
//! body), and tiers, a limit's rate chosen per request by an attribute an
//! earlier layer sets. The configuration is documented in
//! `filters/rate-limit/README.md` ("Limits by cost" and "Tiers").
//!
//! # When a cost is charged
//!
//! A cost known at the request (a weight, a request header) is charged at
//! admission, which needs the whole cost in the bucket. A cost known only
//! after the response is charged in two steps: admission charges the
//! `estimate` (0 by default: admitted while the bucket is not in debt), and
//! the actual cost, once the response says it, settles the difference
//! ([`super::gcra::Gcra::settle`]), taking the bucket into debt if it must.
//! A request that ends without saying (the client went away, the upstream
//! failed, the body held no usable number) settles at the `default`.

use super::config::RawRate;
use super::gcra::Gcra;
use crate::config::{check_name, ConfigError};
use crate::matcher::valid_header_name;
use crate::net::{parse_addr, Cidr};
use crate::request::RequestView;
use crate::usage::UsagePaths;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The largest cost one request may be charged, whatever a header or a
/// body says: a bound on any one bucket's debt.
pub const MAX_COST: u64 = 1 << 40;

/// Where a limit's cost per request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostSource {
    /// The same for every request the limit matches.
    Fixed(u64),
    /// A request header's integer value (lower-case name).
    RequestHeader(String),
    /// A response header's integer value (lower-case name).
    ResponseHeader(String),
    /// A number at a path of the response body (JSON, or the last
    /// server-sent event carrying it): the index in the filter's
    /// [`UsagePaths`], and the path as configured.
    ResponseBody(usize, String),
}

/// A limit's checked cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Where it comes from.
    pub source: CostSource,
    /// Charged when the source says nothing usable.
    pub default: u64,
    /// The most one request is charged: larger values are clamped to it.
    pub max: u64,
    /// For a cost known after the response: charged at admission.
    pub estimate: u64,
}

impl Cost {
    /// Is the cost known only once the response comes?
    pub fn after_response(&self) -> bool {
        matches!(self.source, CostSource::ResponseHeader(_) | CostSource::ResponseBody(..))
    }

    /// A number read from a header: its clamped value, or the default when
    /// it is not a non-negative integer.
    pub fn of_text(&self, text: Option<&str>) -> u64 {
        self.read(text).unwrap_or(self.default)
    }

    /// A header's number, clamped to `max`; `None` when it is missing or
    /// not a non-negative integer.
    pub fn read(&self, text: Option<&str>) -> Option<u64> {
        text.and_then(|t| t.trim().parse::<u64>().ok()).map(|n| n.min(self.max))
    }

    /// The cost a response said, and whether it said nothing usable (the
    /// default was charged): a response header's value (`header`, when the
    /// source is one), or the number the body's scan found.
    pub fn of_response(&self, header: Option<&str>, scan: Option<&crate::usage::UsageScanner>) -> (u64, bool) {
        let said = match (&self.source, scan) {
            (CostSource::ResponseHeader(_), _) => self.read(header),
            (CostSource::ResponseBody(target, _), Some(scan)) => scan.found(*target).map(|n| n.min(self.max)),
            _ => None,
        };
        (said.unwrap_or(self.default), said.is_none())
    }

    /// What admission charges: the whole cost when it is known at the
    /// request, the estimate otherwise. `trusted`: the request comes from
    /// a `trusted_sources` peer (or the configuration names none).
    pub fn at_request(&self, req: &RequestView, trusted: bool) -> u64 {
        match &self.source {
            CostSource::Fixed(n) => *n,
            CostSource::RequestHeader(name) if trusted => self.of_text(req.header(name)),
            CostSource::RequestHeader(_) => self.default,
            CostSource::ResponseHeader(_) | CostSource::ResponseBody(..) => self.estimate,
        }
    }
}

/// One tier of a limit: its name and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The attribute's value that selects it.
    pub name: String,
    /// Units per period.
    pub requests: u64,
    /// Units a full bucket holds.
    pub burst: u64,
    /// The bucket.
    pub gcra: Gcra,
}

/// A limit's tiers: the attribute that chooses, and the rates it chooses
/// from; a missing, unknown or untrusted value gets the limit's own rate,
/// the tier named `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    /// The request header that names the tier (lower case).
    pub header: String,
    /// The name of the limit's own rate in `RateLimit-Policy`.
    pub default: String,
    /// The other tiers, in name order.
    pub tiers: Vec<Tier>,
}

impl Tiers {
    /// The tier of a request: an index into `tiers` plus one, 0 for the
    /// default.
    pub fn choose(&self, req: &RequestView, trusted: bool) -> u8 {
        if !trusted {
            return 0;
        }
        let Some(value) = req.header(&self.header) else { return 0 };
        let value = value.trim();
        self.tiers.iter().position(|t| t.name == value).map_or(0, |i| (i + 1) as u8)
    }

    /// Tier `index`'s name (0: the default's).
    pub fn name(&self, index: u8) -> &str {
        match index.checked_sub(1) {
            None => &self.default,
            Some(i) => self.tiers.get(usize::from(i)).map_or(&self.default, |t| &t.name),
        }
    }
}

/// The largest number of tiers per limit.
pub const MAX_TIERS: usize = 32;

/// `cost` as written: a number, or an object naming one source (the
/// schema's shape; the field is parsed by [`check_cost`], whose errors name
/// the field).
#[cfg(feature = "schema")]
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum RawCost {
    Weight(u64),
    From(RawCostFrom),
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCostFrom {
    #[serde(default)]
    request_header: Option<String>,
    #[serde(default)]
    response_header: Option<String>,
    #[serde(default)]
    response_body: Option<String>,
    #[serde(default)]
    default: Option<u64>,
    #[serde(default)]
    max: Option<u64>,
    #[serde(default)]
    estimate: Option<u64>,
}

/// `tiers` as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTiers {
    header: String,
    #[serde(default = "default_tier_name")]
    default: String,
    rates: BTreeMap<String, RawRate>,
}

fn default_tier_name() -> String {
    "default".to_string()
}

/// Checks a limit's `cost` (`field` is `limits[i].cost`); body paths are
/// registered in `paths`. `burst` is the limit's smallest burst over its
/// tiers: a cost charged at admission above it would never be admitted.
pub(crate) fn check_cost(
    field: &str,
    raw: serde_json::Value,
    burst: u64,
    paths: &mut UsagePaths,
) -> Result<Cost, ConfigError> {
    let f = |s: &str| format!("{field}.{s}");
    let from: RawCostFrom = match raw {
        serde_json::Value::Number(n) => {
            let n = n.as_u64().ok_or_else(|| ConfigError::new(field, "must be a whole number of at least 0"))?;
            if n > burst {
                return Err(ConfigError::new(field, format!("{n} is more than the burst {burst}: never admitted")));
            }
            return Ok(Cost { source: CostSource::Fixed(n), default: n, max: n, estimate: n });
        }
        serde_json::Value::Object(_) => {
            serde_json::from_value(raw).map_err(|e| ConfigError::new(field, e.to_string()))?
        }
        _ => {
            return Err(ConfigError::new(
                field,
                "must be a whole number, or an object naming request_header, response_header or response_body",
            ))
        }
    };
    let header = |name: String, which: &str| {
        if valid_header_name(&name) {
            Ok(name.to_ascii_lowercase())
        } else {
            Err(ConfigError::new(f(which), format!("\"{name}\" is not a header name")))
        }
    };
    let source = match (from.request_header, from.response_header, from.response_body) {
        (Some(h), None, None) => CostSource::RequestHeader(header(h, "request_header")?),
        (None, Some(h), None) => CostSource::ResponseHeader(header(h, "response_header")?),
        (None, None, Some(p)) => {
            let at = paths.add(&p).map_err(|why| ConfigError::new(f("response_body"), why))?;
            CostSource::ResponseBody(at, p)
        }
        _ => {
            return Err(ConfigError::new(field, "needs exactly one of request_header, response_header, response_body"))
        }
    };
    let at_request = matches!(source, CostSource::RequestHeader(_));
    // A cost read at the request is admitted whole: it cannot pass the burst.
    // One read after the response may: the bucket goes into debt, bounded
    // by `max` (by default ten full buckets).
    let max = from.max.unwrap_or(if at_request { burst } else { burst.saturating_mul(10) });
    if max == 0 || max > MAX_COST {
        return Err(ConfigError::new(f("max"), format!("must be between 1 and {MAX_COST}")));
    }
    if at_request && max > burst {
        return Err(ConfigError::new(f("max"), format!("{max} is more than the burst {burst}: never admitted")));
    }
    let default = from.default.unwrap_or(1);
    if default > max {
        return Err(ConfigError::new(f("default"), format!("{default} is more than max {max}")));
    }
    let estimate = match from.estimate {
        Some(_) if at_request => {
            return Err(ConfigError::new(f("estimate"), "applies only to a cost known after the response"))
        }
        Some(e) if e > burst => {
            return Err(ConfigError::new(f("estimate"), format!("{e} is more than the burst {burst}: never admitted")))
        }
        Some(e) => e,
        None => 0,
    };
    Ok(Cost { source, default, max, estimate })
}

/// Checks a limit's `tiers` (`field` is `limits[i].tiers`); `rate` checks
/// one tier's rate as the limit's own is checked.
pub(crate) fn check_tiers(
    field: &str,
    raw: RawTiers,
    rate: impl Fn(&str, &RawRate) -> Result<(u64, Gcra), ConfigError>,
) -> Result<Tiers, ConfigError> {
    if !valid_header_name(&raw.header) {
        return Err(ConfigError::new(format!("{field}.header"), format!("\"{}\" is not a header name", raw.header)));
    }
    check_name(&format!("{field}.default"), &raw.default)?;
    if raw.rates.is_empty() {
        return Err(ConfigError::new(format!("{field}.rates"), "must name at least one tier"));
    }
    if raw.rates.len() > MAX_TIERS {
        return Err(ConfigError::new(format!("{field}.rates"), format!("holds more than {MAX_TIERS} tiers")));
    }
    let mut tiers = Vec::with_capacity(raw.rates.len());
    for (name, r) in &raw.rates {
        let at = format!("{field}.rates.{name}");
        check_name(&at, name)?;
        if *name == raw.default {
            return Err(ConfigError::new(at, "is the default tier's name: the limit's own rate is that tier"));
        }
        let (burst, gcra) = rate(&at, r)?;
        tiers.push(Tier { name: name.clone(), requests: r.requests, burst, gcra });
    }
    Ok(Tiers { header: raw.header.to_ascii_lowercase(), default: raw.default, tiers })
}

/// Checks `trusted_sources`.
pub(crate) fn check_trusted_sources(raw: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| {
            Cidr::parse(t).ok_or_else(|| {
                ConfigError::new(format!("trusted_sources[{i}]"), format!("\"{t}\" is not an address or CIDR range"))
            })
        })
        .collect()
}

/// Does a request come from a trusted source? Always, when none are
/// configured (the attribute is then trusted because an earlier filter or
/// the ingress sets it, which the README asks for); otherwise only from a
/// peer inside one of them.
pub fn trusted(sources: &[Cidr], req: &RequestView) -> bool {
    if sources.is_empty() {
        return true;
    }
    req.peer().and_then(parse_addr).is_some_and(|ip| sources.iter().any(|c| c.contains(ip)))
}

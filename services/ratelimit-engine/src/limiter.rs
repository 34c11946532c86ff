//! The decision: each limited descriptor is one Redis key, updated by one Lua
//! script run with `EVALSHA` (the `redis` crate falls back to `EVAL` and
//! reloads the script on `NOSCRIPT`, e.g. after Redis restarted). Redis runs
//! a script atomically, so concurrent requests from any number of engine
//! instances cannot both read the same count: there is no read-then-write
//! window to lose an update in.
//!
//! # Keys
//!
//! `rl:{<domain>|<key>=<value>|...}` for GCRA, with `:<window>` appended for
//! the fixed window. The braces are a Redis Cluster hash tag: every key of
//! one descriptor lives on one slot, so the scripts, which touch one key,
//! run unchanged on a cluster. A descriptor longer than
//! [`MAX_KEY_DESCRIPTOR`] bytes is replaced by a stable 64-bit hash.
//!
//! # Algorithms
//!
//! * `gcra`: `requests_per_unit` per unit, up to `requests_per_unit`
//!   at once; the key holds the theoretical arrival time in microseconds of
//!   Redis's clock (`TIME`), so the instances' clocks do not matter. A
//!   refused request is not counted. `duration_until_reset` is the time until
//!   the bucket is full (OK), or until the request would be admitted
//!   (OVER_LIMIT).
//! * `fixed-window` (default): what `envoyproxy/ratelimit` does: `INCRBY` on a key per
//!   unit-aligned window (the engine's clock), refused requests counted too.
//!   `duration_until_reset` is the time to the window's end.

use crate::config::{Config, Found, Limit, Rule};
use crate::metrics::Metrics;
use filters_core::hash::StableHasher;
use redis::aio::ConnectionManager;
use redis::Script;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest descriptor kept readable in a Redis key.
pub const MAX_KEY_DESCRIPTOR: usize = 512;

const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local hits = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > capacity then tat = now + capacity end
local new_tat = tat + interval * hits
if new_tat - now > capacity then
  return {0, math.floor((capacity - (tat - now)) / interval), new_tat - capacity - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((capacity - (new_tat - now)) / interval), new_tat - now}
";

const FIXED_WINDOW: &str = r"
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return count
";

/// Which algorithm counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// GCRA in Redis.
    Gcra,
    /// Fixed window.
    FixedWindow,
}

/// One descriptor's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// 1 OK, 2 OVER_LIMIT.
    pub code: i32,
    /// The limit applied (`None`: not limited).
    pub limit: Option<Limit>,
    /// Requests left.
    pub remaining: u32,
    /// Until reset (see the module docs).
    pub reset: Duration,
}

/// Where the counts live: one Redis (reconnected in the background), or a
/// Redis Cluster (each script runs on the node that owns its key's slot; the
/// slot map is refreshed on MOVED answers and after a failover).
#[derive(Clone)]
pub enum Store {
    /// One server.
    Single(ConnectionManager),
    /// A cluster, from its seed nodes.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Store {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Store::Single(c) => c.req_packed_command(cmd),
            Store::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Store::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Store::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Store::Single(c) => c.get_db(),
            Store::Cluster(c) => c.get_db(),
        }
    }
}

/// A config and where its limits count in the metrics.
struct Snapshot {
    config: Config,
    metric_ids: Vec<usize>,
}

/// The limiter: config (replaced whole on a reload), Redis, metrics.
pub struct Limiter {
    current: RwLock<Arc<Snapshot>>,
    pub redis: Store,
    pub algorithm: Algorithm,
    pub near_limit_ratio: f64,
    pub metrics: Arc<Metrics>,
    gcra: Script,
    fixed: Script,
}

/// A request: domain, descriptors.
pub struct Request {
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
}

/// One descriptor of a request.
pub struct Descriptor {
    /// Its entries, in order.
    pub entries: Vec<(String, String)>,
    /// Hits to charge (0: check without counting).
    pub hits: u64,
    /// The `limit` override the request carries: requests per unit and unit.
    pub limit: Option<(u32, i32)>,
}

impl Limiter {
    pub fn new(
        config: Config,
        redis: Store,
        algorithm: Algorithm,
        near_limit_ratio: f64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let metric_ids = metrics.ids_for(&config.limit_names);
        Limiter {
            current: RwLock::new(Arc::new(Snapshot { config, metric_ids })),
            redis,
            algorithm,
            near_limit_ratio,
            metrics,
            gcra: Script::new(GCRA),
            fixed: Script::new(FIXED_WINDOW),
        }
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.read().ok().map(|s| Arc::clone(&s))
    }

    /// Puts `config` in place for the requests that come next (those under
    /// way finish with the one they started with).
    pub fn replace(&self, config: Config) {
        let metric_ids = self.metrics.ids_for(&config.limit_names);
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(Snapshot { config, metric_ids });
        }
    }

    /// Domains configured now.
    pub fn domains(&self) -> usize {
        self.snapshot().map_or(0, |s| s.config.domains())
    }

    /// Decides a request: overall code and one verdict per descriptor.
    /// `Err` when Redis failed (the caller answers UNAVAILABLE).
    ///
    /// As `envoyproxy/ratelimit`: a limit named in another matched limit's
    /// `replaces` is not applied; a shadow descriptor over its limit is
    /// answered OK; the request is over the limit when a descriptor that is
    /// not in quota mode is, or when every quota-mode descriptor is.
    pub async fn should_rate_limit(&self, req: &Request) -> Result<(i32, Vec<Verdict>), redis::RedisError> {
        let Some(snap) = self.snapshot() else { return Ok((1, Vec::new())) };
        let found: Vec<Option<Found<'_>>> =
            req.descriptors.iter().map(|d| find(&snap.config, &req.domain, d, &self.metrics)).collect();
        let replaced: HashSet<&str> = found
            .iter()
            .flatten()
            .filter_map(|f| match &*f.rule {
                Rule::Limited(l) => Some(l.replaces.iter().map(String::as_str)),
                Rule::Unlimited => None,
            })
            .flatten()
            .collect();
        let checks = req
            .descriptors
            .iter()
            .zip(&found)
            .map(|(d, f)| self.check_one(&req.domain, &d.entries, d.hits, f.as_ref(), &replaced, &snap.metric_ids));
        let verdicts: Vec<Verdict> = futures_util::future::try_join_all(checks).await?;
        let quota = |v: &Verdict| v.limit.as_ref().is_some_and(|l| l.quota);
        let over_rate = verdicts.iter().any(|v| v.code == 2 && !quota(v));
        let quotas: Vec<&Verdict> = verdicts.iter().filter(|v| quota(v)).collect();
        let over_quota = !quotas.is_empty() && quotas.iter().all(|v| v.code == 2);
        Ok((if over_rate || over_quota { 2 } else { 1 }, verdicts))
    }

    async fn check_one(
        &self,
        domain: &str,
        entries: &[(String, String)],
        hits: u64,
        found: Option<&Found<'_>>,
        replaced: &HashSet<&str>,
        metric_ids: &[usize],
    ) -> Result<Verdict, redis::RedisError> {
        let ok = |limit: Option<Limit>, remaining| Verdict { code: 1, limit, remaining, reset: Duration::ZERO };
        let Some(found) = found else {
            self.metrics.no_limit();
            return Ok(ok(None, 0));
        };
        let limit = match &*found.rule {
            // Upstream answers an unlimited descriptor with the most a u32 holds.
            Rule::Unlimited => return Ok(ok(None, u32::MAX)),
            Rule::Limited(l) if !l.name.is_empty() && replaced.contains(l.name.as_str()) => return Ok(ok(None, 0)),
            Rule::Limited(l) => l.clone(),
        };
        let key = redis_key(domain, &counted_entries(entries, &found.shared));
        let mut conn = self.redis.clone();
        let rpu = u64::from(limit.requests_per_unit);
        // More hits than the limit holds are over it whatever the count: one
        // more than the limit says so to both scripts, and keeps the numbers
        // Redis adds (an i64) and Lua reads (a double) far from their ends.
        let charged = hits.min(rpu + 1);
        let (allowed, remaining, reset) = match self.algorithm {
            // `requests_per_unit: 0`: every request is over (upstream bans
            // with it); nothing to count.
            _ if rpu == 0 => (false, 0, window(limit.unit_secs).1),
            Algorithm::Gcra => {
                let interval_us = (limit.unit_secs * 1_000_000 / rpu).max(1);
                let (allowed, remaining, micros): (i64, i64, i64) =
                    self.gcra.key(&key).arg(interval_us).arg(rpu).arg(charged).invoke_async(&mut conn).await?;
                (allowed == 1, remaining.max(0) as u64, Duration::from_micros(micros.max(0) as u64))
            }
            Algorithm::FixedWindow => {
                let (window, to_end) = window(limit.unit_secs);
                let count: i64 = self
                    .fixed
                    .key(format!("{key}:{window}"))
                    .arg(charged)
                    .arg(limit.unit_secs + 1)
                    .invoke_async(&mut conn)
                    .await?;
                let count = count.max(0) as u64;
                (count <= rpu, rpu.saturating_sub(count), to_end)
            }
        };
        let used = rpu.saturating_sub(remaining);
        let near = allowed && (used as f64) > self.near_limit_ratio * rpu as f64;
        if let Some(id) = metric_ids.get(limit.id) {
            self.metrics.descriptor(*id, hits, allowed, near, limit.shadow);
        }
        Ok(Verdict {
            code: if allowed || limit.shadow { 1 } else { 2 },
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset,
            limit: Some(limit),
        })
    }
}

/// The configured rule, or the request's `limit` override (which, as
/// upstream, replaces the configured limit, is never in shadow mode, and
/// counts under the same key).
///
/// An override only applies in a domain the config knows (upstream answers
/// OK with no limit elsewhere, its `TestConfigLimitOverride`), and only with
/// a unit that names a duration: an override without one (no unit,
/// `UNKNOWN`, a number outside the enum) is ignored and the configured rule
/// applies, so that a broken override can never lift a configured limit.
fn find<'a>(config: &'a Config, domain: &str, d: &Descriptor, metrics: &Metrics) -> Option<Found<'a>> {
    let Some((rpu, unit)) = d.limit else { return config.find(domain, &d.entries) };
    if !config.has_domain(domain) {
        return None;
    }
    let Some(unit_secs) = filters_core::ratelimit::protocol::unit_seconds(unit) else {
        metrics.override_ignored();
        return config.find(domain, &d.entries);
    };
    let rule = Cow::Owned(Rule::Limited(Limit {
        requests_per_unit: rpu,
        unit,
        unit_secs,
        name: String::new(),
        shadow: false,
        quota: false,
        replaces: Vec::new(),
        id: usize::MAX,
    }));
    Some(Found { rule, shared: Vec::new() })
}

/// The unit-aligned window the engine's clock is in now, and the time to its end.
fn window(unit_secs: u64) -> (u64, Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let window = now.as_secs() / unit_secs;
    (window, Duration::from_secs((window + 1) * unit_secs).saturating_sub(now))
}

/// The entries a descriptor is counted under: its own (not copied), except
/// that a `share_threshold` wildcard's entries count under the pattern.
fn counted_entries<'a>(entries: &'a [(String, String)], shared: &[Option<&str>]) -> Cow<'a, [(String, String)]> {
    if shared.iter().all(Option::is_none) {
        return Cow::Borrowed(entries);
    }
    entries
        .iter()
        .zip(shared.iter().chain(std::iter::repeat(&None)))
        .map(|((k, v), s)| (k.clone(), s.map_or_else(|| v.clone(), str::to_string)))
        .collect()
}

/// The Redis key of a descriptor: `rl:{<domain>|<key>=<value>|...}` with
/// `\\`, `|`, `=`, `{` and `}` escaped by a backslash in every part, so that
/// no value can spell another descriptor's key (a value `acme|user=alice`
/// stays one value) nor end the hash tag early. A descriptor longer than
/// [`MAX_KEY_DESCRIPTOR`] becomes `<domain>\h<hash>`: escaping never writes
/// `\h`, so no readable key meets a hashed one.
pub fn redis_key(domain: &str, entries: &[(String, String)]) -> String {
    let mut d = String::with_capacity(64);
    escape_into(&mut d, domain);
    for (k, v) in entries {
        d.push('|');
        escape_into(&mut d, k);
        d.push('=');
        escape_into(&mut d, v);
    }
    if d.len() > MAX_KEY_DESCRIPTOR {
        let mut h = StableHasher::default();
        h.write_field(d.as_bytes());
        let mut short = String::with_capacity(domain.len() + 20);
        escape_into(&mut short, domain);
        d = format!("{short}\\h{:016x}", h.finish());
    }
    format!("rl:{{{d}}}")
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        if matches!(c, '\\' | '|' | '=' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged_and_bounded() {
        let e =
            vec![("generic_key".to_string(), "a".to_string()), ("remote_address".to_string(), "1.2.3.4".to_string())];
        assert_eq!(redis_key("edge", &e), "rl:{edge|generic_key=a|remote_address=1.2.3.4}");
        let long = vec![("k".to_string(), "v".repeat(2000))];
        let k = redis_key("edge", &long);
        assert!(k.starts_with("rl:{edge\\h") && k.len() < 40, "{k}");
        assert_eq!(k, redis_key("edge", &long));
    }

    fn entries(e: &[(&str, &str)]) -> Vec<(String, String)> {
        e.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A value carrying the separators must not spell another descriptor's
    /// key (issue 30, defect 8).
    #[test]
    fn no_value_spells_another_descriptors_key() {
        let two = redis_key("d", &entries(&[("x-tenant", "acme"), ("x-user", "alice")]));
        let forged = redis_key("d", &entries(&[("x-tenant", "acme|x-user=alice")]));
        assert_ne!(two, forged);
        assert_eq!(forged, "rl:{d|x-tenant=acme\\|x-user\\=alice}");
        assert_ne!(redis_key("d|a=b", &[]), redis_key("d", &entries(&[("a", "b")])));
        assert_ne!(redis_key("d", &entries(&[("a", "b}c")])), redis_key("d", &entries(&[("a", "b"), ("c", "")])));
        // Braces are escaped, so the hash tag is the whole descriptor.
        let k = redis_key("d", &entries(&[("a", "}{")]));
        assert_eq!(k, "rl:{d|a=\\}\\{}");
        // A hashed key is never a readable one.
        let long = entries(&[("k", &"v".repeat(600))]);
        let h = redis_key("d", &long);
        let hex = &h[h.len() - 17..h.len() - 1];
        assert_ne!(h, redis_key("d", &entries(&[("h", hex)])));
    }
}

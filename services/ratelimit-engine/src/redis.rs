//! Counting in Redis: each limited descriptor is one Redis key, updated by one Lua
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

use crate::settings::Settings;
use redis::aio::ConnectionManager;
use redis::Script;
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

/// Charges descriptors' hits in Redis with the configured algorithm.
pub struct Counter {
    redis: Store,
    algorithm: Algorithm,
    gcra: Script,
    fixed: Script,
}

impl Counter {
    /// A counter over `redis`.
    pub fn new(redis: Store, algorithm: Algorithm) -> Counter {
        Counter { redis, algorithm, gcra: Script::new(GCRA), fixed: Script::new(FIXED_WINDOW) }
    }

    /// The connection, for `PING`.
    pub fn store(&self) -> Store {
        self.redis.clone()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Charges `charged` hits to `key` under `rpu` per `unit_secs`: whether
    /// they were within the limit, what remains, the time until reset (see
    /// the module docs).
    pub async fn charge(
        &self,
        key: &str,
        rpu: u64,
        unit_secs: u64,
        charged: u64,
    ) -> Result<(bool, u64, Duration), redis::RedisError> {
        let mut conn = self.redis.clone();
        Ok(match self.algorithm {
            // `requests_per_unit: 0`: every request is over (upstream bans
            // with it); nothing to count.
            _ if rpu == 0 => (false, 0, window(unit_secs).1),
            Algorithm::Gcra => {
                let interval_us = (unit_secs * 1_000_000 / rpu).max(1);
                let (allowed, remaining, micros): (i64, i64, i64) =
                    self.gcra.key(key).arg(interval_us).arg(rpu).arg(charged).invoke_async(&mut conn).await?;
                (allowed == 1, remaining.max(0) as u64, Duration::from_micros(micros.max(0) as u64))
            }
            Algorithm::FixedWindow => {
                let (window, to_end) = window(unit_secs);
                let count: i64 = self
                    .fixed
                    .key(format!("{key}:{window}"))
                    .arg(charged)
                    .arg(unit_secs + 1)
                    .invoke_async(&mut conn)
                    .await?;
                let count = count.max(0) as u64;
                (count <= rpu, rpu.saturating_sub(count), to_end)
            }
        })
    }
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

/// The Redis (`--redis`) or Redis Cluster (`--redis-cluster`) to count in.
pub async fn connect(args: &Settings) -> Result<Store, String> {
    let certs = args.redis_tls.as_ref().map(crate::tls::redis_certs).transpose()?;
    if !args.cluster.is_empty() {
        let mut builder = redis::cluster::ClusterClient::builder(args.cluster.clone());
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        let client = builder
            .connection_timeout(args.redis_timeout.max(Duration::from_millis(200)))
            .response_timeout(args.redis_timeout)
            .retries(2)
            .build()
            .map_err(|e| format!("--redis-cluster: {e}"))?;
        let conn = client.get_async_connection().await.map_err(|e| format!("--redis-cluster: {e}"))?;
        return Ok(Store::Cluster(conn));
    }
    let client = match certs {
        Some(certs) => redis::Client::build_with_tls(args.redis.as_str(), certs),
        None => redis::Client::open(args.redis.as_str()),
    }
    .map_err(|e| format!("redis {}: {e}", crate::server::redact(&args.redis)))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(args.redis_timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(args.redis_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    // Lazy: the service starts (and answers UNAVAILABLE) while Redis is down.
    let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, manager_config)
        .map_err(|e| format!("redis: {e}"))?;
    Ok(Store::Single(manager))
}

/// The unit-aligned window the engine's clock is in now, and the time to its end.
fn window(unit_secs: u64) -> (u64, Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let window = now.as_secs() / unit_secs;
    (window, Duration::from_secs((window + 1) * unit_secs).saturating_sub(now))
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
        let hash = fnv64(d.as_bytes());
        let mut short = String::with_capacity(domain.len() + 20);
        escape_into(&mut short, domain);
        d = format!("{short}\\h{hash:016x}");
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

/// A fixed 64-bit FNV-1a of `bytes` (every instance and version agrees): the
/// short form of a long descriptor, not a defence against chosen
/// collisions (the long form is escaped text a client controls anyway).
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
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

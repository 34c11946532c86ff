//! Each Traefik middleware (and a service's sticky cookie) into a filter
//! configuration, checked by the filter's own parser before it is printed.

use crate::fields::{envoy_duration, our_duration, Fields};
use crate::input::get;
use crate::{Conversion, Options, Report, Translated};
use serde_json::{json, Map, Value};

/// Walks the whole tree.
pub fn walk(root: &Value, opts: &Options, c: &mut Conversion) {
    let Some(top) = root.as_object() else { return };
    for (k, v) in top {
        if !k.eq_ignore_ascii_case("http") {
            c.report.untranslated(k, "only HTTP middlewares and services are translated");
            continue;
        }
        let Some(http) = v.as_object() else { continue };
        for (section, v) in http {
            match section.to_ascii_lowercase().as_str() {
                "middlewares" => each(v, |name, mw| middleware(&format!("http.middlewares.{name}"), name, mw, c)),
                "services" => each(v, |name, svc| service(&format!("http.services.{name}"), name, svc, opts, c)),
                "routers" => each(v, |name, router| {
                    let uses = get(router, "middlewares").map(|(_, m)| list_text(m)).unwrap_or_default();
                    c.report.untranslated(
                        &format!("http.routers.{name}"),
                        &format!(
                            "routing is Envoy's route configuration: put the filters on its route{}",
                            if uses.is_empty() { String::new() } else { format!(" (middlewares: {uses})") }
                        ),
                    );
                }),
                _ => c.report.untranslated(&format!("http.{section}"), "not a middleware or a service"),
            }
        }
    }
}

fn each(v: &Value, mut f: impl FnMut(&str, &Value)) {
    if let Some(m) = v.as_object() {
        for (name, item) in m {
            f(name, item);
        }
    }
}

fn list_text(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn middleware(path: &str, name: &str, mw: &Value, c: &mut Conversion) {
    let Some(kinds) = mw.as_object() else {
        c.report.untranslated(path, "not a middleware");
        return;
    };
    for (kind, body) in kinds {
        let at = format!("{path}.{kind}");
        let mut f = Fields::new(at.clone(), body);
        let r = &mut c.report;
        let out = match kind.to_ascii_lowercase().as_str() {
            "ratelimit" => rate_limit(name, &mut f, r).map(|cfg| ("rate-limit", cfg)),
            "circuitbreaker" => circuit_breaker(&mut f, r).map(|cfg| ("circuit-breaker", cfg)),
            "retry" => match retry(name, &mut f, r) {
                Some((cfg, policy)) => {
                    c.envoy_retry_policies.push((at.clone(), policy));
                    Some(("retry", cfg))
                }
                None => None,
            },
            _ => {
                r.untranslated(&at, "not one of rateLimit, circuitBreaker, retry (Envoy has its own filters for most)");
                continue;
            }
        };
        f.finish(&mut c.report);
        if let Some((filter, config)) = out {
            push_checked(c, at, filter, config);
        }
    }
}

/// Keeps a translation only if the filter itself accepts it.
fn push_checked(c: &mut Conversion, from: String, filter: &'static str, config: Value) {
    let bytes = config.to_string().into_bytes();
    // The filter's own check, as the proxy runs it (one list of modules).
    match filters_core::modules::check_config(filter, &bytes) {
        Ok(()) => c.filters.push(Translated { from, filter, config }),
        Err(e) => {
            let e = e.trim_start_matches("invalid plugin configuration: ");
            c.report.untranslated(&from, &format!("the {filter} filter refuses the translation: {e}"));
        }
    }
}

/// A limit name: Traefik's middleware name with what metric names cannot
/// hold (`@`, `.`) turned into `_`.
fn limit_name(name: &str) -> String {
    let n: String =
        name.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if n.is_empty() {
        "traefik".into()
    } else {
        n
    }
}

fn rate_limit(name: &str, f: &mut Fields, r: &mut Report) -> Option<Value> {
    let average = f.int("average", r).unwrap_or(0);
    let period = f.duration("period", r).unwrap_or(1_000_000_000);
    let burst = f.int("burst", r).unwrap_or(1).max(1);
    let source = source_criterion(f, r);
    if f.take("redis").is_some() {
        r.untranslated(
            &f.at("redis"),
            "counted in Redis by Traefik: use \"scope\": \"global\" with the rate limit service",
        );
    }
    if average <= 0 {
        r.untranslated(&f.path, "average is 0 or absent: Traefik applies no limit, so none is written");
        return None;
    }
    if period < 0 {
        r.untranslated(&f.at("period"), "negative: Traefik refuses the middleware");
        return None;
    }
    // Traefik reads a zero period as its default, one second.
    let period = if period == 0 { 1_000_000_000 } else { period };
    let period = u64::try_from(period).unwrap_or(u64::MAX);
    let limit = json!({
        "name": limit_name(name), "requests": average, "period": our_duration(period), "burst": burst, "key": source.key,
    });
    r.differs(&f.path, "Traefik may hold a request briefly (up to half the interval between two admissions, at most 0.5 s) rather than refuse it; the filter refuses at once, with 429, Retry-After and a JSON body");
    let mut cfg = json!({"limits": [limit], "ipv6_prefix": source.ipv6_prefix});
    if source.trusted_hops > 0 {
        set(&mut cfg, "trusted_hops", json!(source.trusted_hops));
    }
    Some(cfg)
}

struct Source {
    key: String,
    trusted_hops: i64,
    ipv6_prefix: i64,
}

/// `sourceCriterion`, in Traefik's precedence: `ipStrategy`, then
/// `requestHeaderName`, then `requestHost`; none is the connection's peer.
fn source_criterion(f: &mut Fields, r: &mut Report) -> Source {
    // Traefik keys on whole addresses (the filter's default groups an IPv6 /64).
    let mut s = Source { key: "client_ip".into(), trusted_hops: 0, ipv6_prefix: 128 };
    let Some(mut sc) = f.object("sourceCriterion") else { return s };
    let ip = sc.object("ipStrategy");
    let header = sc.string("requestHeaderName", r).filter(|h| !h.is_empty());
    let host = sc.bool("requestHost", r).unwrap_or(false);
    let given = usize::from(ip.is_some()) + usize::from(header.is_some()) + usize::from(host);
    if given > 1 {
        r.untranslated(
            &sc.path,
            "more than one of ipStrategy, requestHeaderName, requestHost: the first, in that order, is used",
        );
    }
    if let Some(mut ip) = ip {
        if let Some(depth) = ip.int("depth", r).filter(|d| *d > 0) {
            if depth > 16 {
                r.untranslated(&ip.at("depth"), "deeper than 16 trusted proxies: 16 is used");
            }
            s.trusted_hops = depth.min(16);
            r.note(
                &ip.at("depth"),
                "the client is the entry this far from the right of X-Forwarded-For as the client sent it: set skip_xff_append: true in Envoy's connection manager, or Envoy's own entry counts as one",
            );
        }
        if let Some(excluded) = ip.list("excludedIPs").filter(|l| !l.is_empty()) {
            r.untranslated(
                &ip.at("excludedIPs"),
                &format!("({}) no equivalent in the filter; Envoy's xff original_ip_detection extension with xff_trusted_cidrs picks the rightmost untrusted address", excluded.join(", ")),
            );
        }
        if let Some(bits) = ip.int("ipv6Subnet", r) {
            s.ipv6_prefix = bits;
        }
        ip.finish(r);
    } else if let Some(h) = header {
        s.key = format!("header:{h}");
        r.differs(
            &sc.at("requestHeaderName"),
            "a request without the header shares one bucket with the others without it; Traefik answers it 500",
        );
    } else if host {
        s.key = "host".into();
    }
    sc.finish(r);
    s
}

fn circuit_breaker(f: &mut Fields, r: &mut Report) -> Option<Value> {
    let Some(expression) = f.string("expression", r) else {
        r.untranslated(&f.path, "no expression: Traefik refuses the middleware");
        return None;
    };
    let mut t = Map::new();
    t.insert("expression".into(), json!(expression));
    for (field, default) in [("checkPeriod", "100ms"), ("fallbackDuration", "10s"), ("recoveryDuration", "10s")] {
        match f.duration(field, r) {
            Some(d) if d > 0 => {
                t.insert(field.into(), json!(our_duration(u64::try_from(d).unwrap_or(u64::MAX))));
            }
            Some(_) => r.differs(
                &f.at(field),
                &format!("zero or negative: Traefik uses its default ({default}); left out, so the filter does too"),
            ),
            None => {}
        }
    }
    if let Some(code) = f.int("responseCode", r) {
        t.insert("responseCode".into(), json!(code));
    }
    r.note(&f.path, "Traefik keeps one breaker per router using the middleware; key \"cluster\" keeps one per Envoy cluster (\"route\": one per named route)");
    Some(json!({"key": "cluster", "traefik": Value::Object(t)}))
}

fn retry(name: &str, f: &mut Fields, r: &mut Report) -> Option<(Value, Value)> {
    let attempts = f.int("attempts", r).unwrap_or(0);
    let interval = f.duration("initialInterval", r).unwrap_or(100_000_000);
    if attempts <= 0 {
        r.untranslated(&f.at("attempts"), "must be at least 1: Traefik refuses the middleware");
        return None;
    }
    let mut retries = attempts - 1;
    if retries > 10 {
        r.untranslated(&f.at("attempts"), "more than 11: the filter asks for at most 10 retries");
        retries = 10;
    }
    // Traefik retries only when nothing reached the backend.
    let retry_on = "connect-failure,reset-before-request";
    let cfg = json!({
        "policies": [{"name": limit_name(name), "retry_on": retry_on, "max_retries": retries, "retry_non_idempotent": true}],
        "retry_after": {},
    });
    r.differs(&f.path, "the retry budget applies (20% of requests + 10 per second by default; Traefik has none): raise budget.ratio to lift it");
    let mut policy = json!({"retry_on": retry_on, "num_retries": retries});
    if interval > 0 && retries > 0 {
        let base = u64::try_from(interval).unwrap_or(u64::MAX);
        let back_off =
            json!({"base_interval": envoy_duration(base), "max_interval": envoy_duration(base.saturating_mul(2))});
        set(&mut policy, "retry_back_off", back_off);
        r.note(&f.at("initialInterval"), "goes into Envoy's route retry_policy (printed): Envoy waits a random time up to base x (2^n - 1), capped at max_interval = 2 x initialInterval, the longest wait Traefik's backoff reaches");
    } else if retries > 0 {
        r.differs(
            &f.at("initialInterval"),
            "zero: Traefik retries at once; Envoy's route retry_policy waits at least its 25 ms default base interval",
        );
    }
    Some((cfg, policy))
}

fn service(path: &str, name: &str, svc: &Value, opts: &Options, c: &mut Conversion) {
    let lb = get(svc, "loadBalancer");
    let sticky = lb.and_then(|(_, lb)| get(lb, "sticky"));
    let Some((lb_key, lb)) = lb else {
        c.report.untranslated(path, "services are Envoy's clusters");
        return;
    };
    let Some((sticky_key, sticky)) = sticky else {
        c.report.untranslated(path, "services are Envoy's clusters (no sticky cookie here)");
        return;
    };
    let at = format!("{path}.{lb_key}.{sticky_key}");
    let mut f = Fields::new(at.clone(), sticky);
    let cookie = f.object("cookie");
    f.finish(&mut c.report);
    let Some(cookie) = cookie else { return };
    if let Some(cfg) = sticky_cookie(name, cookie, lb, opts, &mut c.report) {
        push_checked(c, format!("{at}.cookie"), "sticky-session", cfg);
    }
}

/// The cookie's name when the configuration gives none: Traefik's, derived
/// from the service name.
pub fn traefik_cookie_name(service: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("_TRAEFIK_BACKEND_{service}")).digest().to_string();
    format!("_{}", digest.get(..5).unwrap_or(""))
}

fn servers(name: &str, lb: &Value, opts: &Options, r: &mut Report, at: &str) -> Option<Vec<Value>> {
    if let Some((_, given)) = opts.servers.iter().find(|(s, _)| s == name) {
        return Some(
            given.iter().enumerate().map(|(i, a)| json!({"name": format!("s{}", i + 1), "address": a})).collect(),
        );
    }
    let list = get(lb, "servers").and_then(|(_, s)| s.as_array().cloned()).unwrap_or_default();
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let url = get(s, "url").and_then(|(_, u)| u.as_str()).unwrap_or("");
        let hostport = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
        if hostport.parse::<std::net::SocketAddr>().is_err() {
            r.untranslated(
                at,
                &format!("server {url:?} is not http://ip:port: give the addresses with --servers {name}=ip:port,..."),
            );
            return None;
        }
        let weight = get(s, "weight").and_then(|(_, w)| w.as_i64()).unwrap_or(1);
        out.push(json!({"name": format!("s{}", i + 1), "address": hostport, "weight": weight}));
    }
    if out.is_empty() {
        r.untranslated(at, &format!("the service's servers are not in this configuration (a provider finds them): give them with --servers {name}=ip:port,..."));
        return None;
    }
    Some(out)
}

fn sticky_cookie(name: &str, mut f: Fields, lb: &Value, opts: &Options, r: &mut Report) -> Option<Value> {
    let backends = servers(name, lb, opts, r, &f.path);
    let cookie_name = f.string("name", r).filter(|n| !n.is_empty()).unwrap_or_else(|| {
        r.note(&f.at("name"), "none given: Traefik's derived name for this service is written; Traefik derives it from the service's full name (with @provider), so set it if sessions must survive the move");
        traefik_cookie_name(name)
    });
    let mut cookie = json!({
        "name": cookie_name,
        "secure": f.bool("secure", r).unwrap_or(false),
        "http_only": f.bool("httpOnly", r).unwrap_or(false),
        "path": f.string("path", r).unwrap_or_else(|| "/".into()),
        "sign": true,
    });
    match f.string("sameSite", r).map(|s| s.to_ascii_lowercase()).as_deref() {
        None | Some("") => r.differs(&f.at("sameSite"), "unset: Traefik writes no SameSite; the filter writes Lax"),
        Some("none") => set(&mut cookie, "same_site", json!("None")),
        Some("lax") => set(&mut cookie, "same_site", json!("Lax")),
        Some("strict") => set(&mut cookie, "same_site", json!("Strict")),
        Some(other) => r.untranslated(&f.at("sameSite"), &format!("{other:?} is not none, lax or strict")),
    }
    match f.int("maxAge", r) {
        Some(s) if s > 0 => set(&mut cookie, "max_age", json!(format!("{s}s"))),
        Some(s) if s < 0 => {
            r.untranslated(&f.at("maxAge"), "negative (delete the cookie at once): the filter always pins")
        }
        _ => {}
    }
    if let Some(d) = f.string("domain", r) {
        r.untranslated(&f.at("domain"), &format!("({d}) the filter's cookie is for the host that set it"));
    }
    match &opts.secret {
        Some(s) => set(&mut cookie, "secret", json!(s)),
        None => {
            set(&mut cookie, "secret", json!(generated_secret()));
            r.note(
                &f.at("name"),
                "the cookie is signed with a generated secret: use the same one on every proxy (--secret)",
            );
        }
    }
    r.differs(&f.path, "cookies Traefik set are not honoured (its value names a server URL; the filter's is signed): a session is re-pinned once; a request without a cookie is placed by hashing the client address, not round-robin");
    f.finish(r);
    Some(json!({"backends": backends?, "cookie": cookie}))
}

/// 32 random URL-safe characters from the system's random source; a
/// time-derived fallback if it cannot be read.
fn generated_secret() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151));
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bytes
        .iter()
        .flat_map(|b| [b >> 2, b & 0x3f])
        .take(32)
        .filter_map(|i| ALPHABET.get(usize::from(i & 0x3f)).copied().map(char::from))
        .collect()
}

/// Sets a field of a JSON object (a no-op on anything else).
fn set(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert(key.to_string(), v);
    }
}

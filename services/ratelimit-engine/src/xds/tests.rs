use super::*;
use crate::config::Rule;
use crate::metrics::Metrics;
use crate::redis::{Algorithm, Counter};

fn policy(unit: rl::RateLimitUnit, rpu: u32) -> Option<rl::RateLimitPolicy> {
    Some(rl::RateLimitPolicy { unit: unit as i32, requests_per_unit: rpu, ..Default::default() })
}

fn node(key: &str, value: &str, rate: Option<rl::RateLimitPolicy>) -> rl::RateLimitDescriptor {
    rl::RateLimitDescriptor { key: key.into(), value: value.into(), rate_limit: rate, ..Default::default() }
}

fn resource(name: &str, domain: &str, descriptors: Vec<rl::RateLimitDescriptor>) -> Any {
    let config = rl::RateLimitConfig { name: name.into(), domain: domain.into(), descriptors };
    Any { type_url: TYPE_URL.into(), value: config.encode_to_vec() }
}

/// What Envoy Gateway sends for one listener's global limits: a generic key
/// per rule, a header match below it, limits per minute and per hour.
fn gateway_resource(per_minute: u32) -> Any {
    let mut rule = node("default/eg/http/rule-0-match-0", "default/eg/http/rule-0-match-0", None);
    let mut header = node("rule-0-match-0", "", policy(rl::RateLimitUnit::Minute, per_minute));
    header.shadow_mode = true;
    rule.descriptors = vec![header, node("hour", "x", policy(rl::RateLimitUnit::Hour, 7))];
    resource("default/eg/http", "default/eg/http", vec![rule])
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_rate_limit_config_reads_as_upstreams_yaml() {
    let files = files_of(&[gateway_resource(3)]).unwrap();
    assert_eq!(files[0].0, "xds:default/eg/http");
    let config = Config::load(&files).unwrap();
    let rule = "default/eg/http/rule-0-match-0";
    let Some(Rule::Limited(l)) = config.rule("default/eg/http", &entries(&[(rule, rule), ("rule-0-match-0", "alice")]))
    else {
        panic!("no limit for the header's value");
    };
    assert_eq!((l.requests_per_unit, l.unit, l.shadow), (3, rls_protocol::Unit::Minute, true));
    let Some(Rule::Limited(h)) = config.rule("default/eg/http", &entries(&[(rule, rule), ("hour", "x")])) else {
        panic!("no hourly limit");
    };
    assert_eq!((h.requests_per_unit, h.unit), (7, rls_protocol::Unit::Hour));
    assert!(config.rule("default/eg/http", &entries(&[(rule, "other")])).is_none());
}

#[test]
fn unlimited_named_and_replaced_limits_carry_over() {
    let mut a = node("k", "a", policy(rl::RateLimitUnit::Second, 5));
    if let Some(p) = a.rate_limit.as_mut() {
        p.name = "fast".into();
    }
    let mut b = node("k", "b", policy(rl::RateLimitUnit::Day, 1));
    if let Some(p) = b.rate_limit.as_mut() {
        p.replaces = vec![rl::RateLimitReplace { name: "fast".into() }];
    }
    let mut c = node("k", "c", policy(rl::RateLimitUnit::Unknown, 0));
    if let Some(p) = c.rate_limit.as_mut() {
        p.unlimited = true;
    }
    let config = Config::load(&files_of(&[resource("r", "d", vec![a, b, c])]).unwrap()).unwrap();
    let Some(Rule::Limited(b)) = config.rule("d", &entries(&[("k", "b")])) else { panic!("b") };
    assert_eq!(b.replaces, vec!["fast".to_string()]);
    assert_eq!(config.rule("d", &entries(&[("k", "c")])), Some(&Rule::Unlimited));
}

#[test]
fn what_does_not_load_is_refused_naming_the_resource() {
    // A limit without a unit, as upstream refuses it.
    let bad = resource("gw/bad", "d", vec![node("k", "v", policy(rl::RateLimitUnit::Unknown, 5))]);
    let e = files_of(&[bad]).and_then(|f| Config::load(&f)).map(|_| ()).unwrap_err();
    assert!(e.contains("xds:gw/bad"), "{e}");
    let other = Any { type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(), value: vec![] };
    assert!(files_of(&[other]).unwrap_err().contains("resources[0]: type"));
    let garbage = Any { type_url: TYPE_URL.into(), value: vec![0xff, 0xff, 0xff] };
    assert!(files_of(&[garbage]).unwrap_err().contains("not a RateLimitConfig"));
    // Two resources with one domain: refused unless MERGE_DOMAIN_CONFIG.
    let twice = files_of(&[resource("a", "d", vec![]), resource("b", "d", vec![])]).unwrap();
    assert!(Config::load_with(&twice, false).is_err() && Config::load_with(&twice, true).is_ok());
}

fn service() -> Service {
    // Never connects: nothing here counts.
    let client = ::redis::Client::open("redis://127.0.0.1:1").unwrap();
    let manager = ::redis::aio::ConnectionManager::new_lazy_with_config(client, Default::default()).unwrap();
    let counter = Counter::new(crate::redis::Store::Single(manager), Algorithm::FixedWindow);
    Service::new(Config::default(), counter, 0.8, Arc::new(Metrics::new(Vec::new())))
}

fn response(version: &str, nonce: &str, resources: Vec<Any>) -> ds::DiscoveryResponse {
    ds::DiscoveryResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        type_url: TYPE_URL.into(),
        resources,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_update_is_acked_and_a_bad_one_nacked_keeping_the_last_good() {
    let limiter = service();
    let mut acked = String::new();
    let ack = apply(&response("v1", "n1", vec![gateway_resource(3)]), &limiter, false, &mut acked, "envoy-ratelimit");
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("v1", "n1"));
    assert_eq!(ack.node.as_ref().map(|n| n.id.as_str()), Some("envoy-ratelimit"));
    assert!(ack.error_detail.is_none() && ack.type_url == TYPE_URL);
    let dump = limiter.dump();
    assert!(dump.contains("requests_per_unit=3"), "{dump}");

    let bad = resource("gw/bad", "d", vec![node("k", "v", policy(rl::RateLimitUnit::Unknown, 5))]);
    let nack = apply(&response("v2", "n2", vec![bad]), &limiter, false, &mut acked, "envoy-ratelimit");
    // The NACK names the version still in place and the nonce it answers.
    assert_eq!((nack.version_info.as_str(), nack.response_nonce.as_str()), ("v1", "n2"));
    let why = nack.error_detail.map(|s| s.message).unwrap_or_default();
    assert!(why.contains("xds:gw/bad"), "{why}");
    assert_eq!(limiter.dump(), dump);
    let metrics = limiter.metrics.render();
    assert!(metrics.contains("ratelimit_engine_config_reload_errors_total 1"), "{metrics}");
    // The xDS gauge is there only when the configuration comes over xDS.
    assert!(!metrics.contains("ratelimit_engine_xds_connected"), "{metrics}");
    limiter.metrics.xds_connected(false);
    assert!(limiter.metrics.render().contains("ratelimit_engine_xds_connected 0"));

    // A later good version replaces it; an empty state of the world leaves
    // no domain.
    let ack = apply(&response("v3", "n3", vec![gateway_resource(9)]), &limiter, false, &mut acked, "n");
    assert!(ack.error_detail.is_none() && limiter.dump().contains("requests_per_unit=9"));
    let ack = apply(&response("v4", "n4", vec![]), &limiter, false, &mut acked, "n");
    assert_eq!((ack.version_info.as_str(), limiter.domains()), ("v4", 0));
}

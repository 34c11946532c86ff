//! The rate-limit filter in a real Envoy.
use integration_tests::*;

#[test]
fn smoke() {
    let b = Backends::start(&["a", "b"]);
    let e = Envoy::start(&sample_config("rate-limit.yaml", &b.addrs()), 2);
    let r = burst(e.addr, "/", 40, 4, |_| vec![]);
    println!("200={} 429={} {:?}", r.count(200), r.count(429), r.elapsed);
    println!("{:?}", r.responses.iter().find(|r| r.status == 429));
    println!("{:?}", e.worker_connections());
    println!("{}", e.admin_get("/stats?filter=rate_limit"));
    println!("{}", e.admin_get("/stats/prometheus").lines().filter(|l| l.contains("rate_limit")).collect::<Vec<_>>().join("\n"));
    println!("{}", http_get(e.addr, "/echo", &[("x-forwarded-for", "1.2.3.4")]).unwrap().text());
}

use super::*;
use prost::Message;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_w3c_traceparent_is_read_and_a_bad_one_is_no_parent() {
    let p = parse_traceparent(PARENT).unwrap();
    assert_eq!(p.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
    assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
    assert!(p.sampled);
    assert!(!parse_traceparent(&PARENT.replace("-01", "-00")).unwrap().sampled);
    // A later version may carry more fields.
    assert!(parse_traceparent(&format!("{}-extra", PARENT.replacen("00-", "01-", 1))).is_some());
    for bad in [
        "",
        "garbage",
        &PARENT.to_uppercase(),
        &PARENT.replacen("00-", "ff-", 1),
        &format!("{PARENT}-extra"),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad}");
    }
}

fn tracer(rate: f64, queue: usize) -> (Tracer, mpsc::Receiver<otlp::Span>) {
    let (tx, rx) = mpsc::channel(queue);
    let t = Tracer {
        queue: tx,
        rate,
        ids: AtomicU64::new(1),
        seed: Default::default(),
        metrics: Arc::new(Metrics::new(Vec::new())),
    };
    (t, rx)
}

#[test]
fn the_callers_decision_is_followed_else_the_rate() {
    let (t, mut spans) = tracer(0.0, 8);
    // Rate 0: a call without a parent is not traced; a sampled parent is.
    assert!(t.begin(None).is_none());
    let span = t.begin(Some(PARENT)).expect("the caller sampled it");
    t.end(span, vec![otlp::text("ratelimit.domain", "edge")], None);
    let s = spans.try_recv().unwrap();
    let p = parse_traceparent(PARENT).unwrap();
    assert_eq!((s.trace_id.as_slice(), s.parent_span_id.as_slice()), (&p.trace_id[..], &p.span_id[..]));
    assert_ne!(s.span_id, p.span_id.to_vec());
    assert_eq!((s.name.as_str(), s.kind, s.status.clone()), (SPAN_NAME, 2, None));
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);

    // Rate 1: every call without a parent, each its own trace; a parent
    // that did not sample is followed.
    let (t, mut spans) = tracer(1.0, 8);
    assert!(t.begin(Some(&PARENT.replace("-01", "-00"))).is_none());
    for _ in 0..2 {
        let span = t.begin(None).expect("rate 1");
        t.end(span, vec![], Some("redis: down"));
    }
    let (a, b) = (spans.try_recv().unwrap(), spans.try_recv().unwrap());
    assert!(a.parent_span_id.is_empty() && a.trace_id != b.trace_id && a.trace_id.len() == 16);
    assert_eq!(a.status.map(|s| (s.code, s.message)), Some((2, "redis: down".to_string())));

    // A rate in between traces about that share.
    let (t, _spans) = tracer(0.25, 8);
    let traced = (0..4000).filter(|_| t.begin(None).is_some()).count();
    assert!((700..1300).contains(&traced), "{traced} of 4000 at 0.25");
}

#[test]
fn a_full_queue_drops_and_counts() {
    let (t, _spans) = tracer(1.0, 1);
    for _ in 0..3 {
        let span = t.begin(None).unwrap();
        t.end(span, vec![], None);
    }
    assert!(t.metrics.render().contains("ratelimit_engine_spans_dropped_total 2"));
}

#[test]
fn an_export_carries_the_service_as_its_resource() {
    let settings = TraceSettings {
        protocol: TraceProtocol::Http,
        endpoint: "http://collector:4318/v1/traces".into(),
        headers: vec![],
        sampling_rate: 1.0,
        service_name: "envoy-ratelimit".into(),
        service_namespace: "envoy-gateway-system".into(),
        service_instance_id: "envoy-ratelimit-7d9c".into(),
    };
    let bytes = request(&settings, vec![otlp::Span { name: SPAN_NAME.into(), ..Default::default() }]).encode_to_vec();
    let back = otlp::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let resource = back.resource_spans[0].resource.clone().unwrap();
    let attribute = |k: &str| {
        resource.attributes.iter().find(|a| a.key == k).and_then(|a| match &a.value.as_ref()?.value {
            Some(otlp::Value::String(s)) => Some(s.clone()),
            _ => None,
        })
    };
    assert_eq!(attribute("service.name").as_deref(), Some("envoy-ratelimit"));
    assert_eq!(attribute("service.namespace").as_deref(), Some("envoy-gateway-system"));
    assert_eq!(attribute("service.instance.id").as_deref(), Some("envoy-ratelimit-7d9c"));
    assert_eq!(back.resource_spans[0].scope_spans[0].spans[0].name, SPAN_NAME);
}

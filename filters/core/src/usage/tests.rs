use super::*;

fn paths(list: &[&str]) -> UsagePaths {
    let mut p = UsagePaths::default();
    for d in list {
        p.add(d).unwrap();
    }
    p
}

/// Scans `body` delivered in chunks of `chunk` bytes.
fn scan(framing: Framing, p: &UsagePaths, body: &[u8], chunk: usize) -> UsageScanner {
    let mut s = UsageScanner::new(framing);
    for c in body.chunks(chunk.max(1)) {
        s.feed(c, p);
    }
    s.finish();
    s
}

const OPENAI: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,
 "message":{"role":"assistant","content":"the usage: {\"total_tokens\": 9} is not this"}}],
 "usage":{"prompt_tokens":120,"completion_tokens":280,"total_tokens":400,
          "prompt_tokens_details":{"cached_tokens":0}}}"#;

#[test]
fn finds_each_path_in_a_json_answer_at_any_chunking() {
    let p = paths(&["usage.total_tokens", "usage.prompt_tokens", "usage.completion_tokens"]);
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let s = scan(Framing::Json, &p, OPENAI.as_bytes(), chunk);
        assert_eq!((s.found(0), s.found(1), s.found(2)), (Some(400), Some(120), Some(280)), "chunk {chunk}");
    }
}

#[test]
fn a_key_elsewhere_or_inside_a_string_is_not_the_path() {
    let p = paths(&["usage.total_tokens"]);
    let s = scan(Framing::Json, &p, br#"{"total_tokens":5,"other":{"usage":{"total_tokens":6}},"u":"usage"}"#, 3);
    assert_eq!(s.found(0), None);
    let s = scan(Framing::Json, &p, br#"{"choices":[{"usage":{"total_tokens":7}}]}"#, 3);
    assert_eq!(s.found(0), None, "arrays are not looked into");
}

#[test]
fn anthropic_input_and_output_tokens() {
    let p = paths(&["usage.input_tokens", "usage.output_tokens"]);
    let body = br#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":31,"output_tokens":369}}"#;
    let s = scan(Framing::Json, &p, body, 5);
    assert_eq!((s.found(0), s.found(1)), (Some(31), Some(369)));
}

#[test]
fn numbers_that_are_not_costs() {
    let p = paths(&["u.n"]);
    for (body, want) in [
        (r#"{"u":{"n":400.9}}"#, Some(400)),
        (r#"{"u":{"n":-4}}"#, None),
        (r#"{"u":{"n":4e2}}"#, None),
        (r#"{"u":{"n":"400"}}"#, None),
        (r#"{"u":{"n":99999999999999999999999}}"#, None),
        (r#"{"u":{"n":true,"m":1}}"#, None),
        (r#"{"u":{"n":12}"#, Some(12)),
        (r#"{"u":{"n":3"#, Some(3)),
    ] {
        assert_eq!(scan(Framing::Json, &p, body.as_bytes(), 1).found(0), want, "{body}");
    }
}

#[test]
fn escaped_or_long_keys_never_match_and_malformed_json_stops_the_scan() {
    let p = paths(&["usage.total_tokens"]);
    let s = scan(Framing::Json, &p, br#"{"\u0075sage":{"total_tokens":1}}"#, 2);
    assert_eq!(s.found(0), None);
    let long = format!(r#"{{"{}":1,"usage":{{"total_tokens":2}}}}"#, "k".repeat(500));
    assert_eq!(scan(Framing::Json, &p, long.as_bytes(), 9).found(0), Some(2), "a long key is skipped, not fatal");
    let s = scan(Framing::Json, &p, br#"{"usage":{"total_tokens":3}} trailing {"usage":{"total_tokens":4}}"#, 2);
    assert_eq!(s.found(0), Some(3), "the document ended: nothing after it counts");
    let s = scan(Framing::Json, &p, br#"{"usage" {"total_tokens":3}}"#, 2);
    assert_eq!(s.found(0), None);
    let s = scan(Framing::Json, &p, br#"<html>502 Bad Gateway</html>"#, 2);
    assert_eq!(s.found(0), None);
}

#[test]
fn nesting_deeper_than_the_limit_stops_without_harm() {
    let p = paths(&["usage.total_tokens"]);
    let deep = format!(r#"{{"usage":{{"total_tokens":8}},"x":{}{}}}"#, "[".repeat(100), "]".repeat(100));
    assert_eq!(scan(Framing::Json, &p, deep.as_bytes(), 7).found(0), Some(8));
}

const SSE: &str = "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n\
: a comment\n\
event: message\n\
data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\r\n\r\n\
data: {\"id\":\"1\",\"choices\":[],\n\
data: \"usage\":{\"prompt_tokens\":10,\"completion_tokens\":390,\"total_tokens\":400}}\n\n\
data: [DONE]\n\n";

#[test]
fn an_event_stream_takes_the_last_event_with_usage_at_any_chunking() {
    let p = paths(&["usage.total_tokens", "usage.completion_tokens"]);
    for chunk in [1, 2, 5, 13, 4096] {
        let s = scan(Framing::EventStream, &p, SSE.as_bytes(), chunk);
        assert_eq!((s.found(0), s.found(1)), (Some(400), Some(390)), "chunk {chunk}");
    }
    let two = "data: {\"usage\":{\"total_tokens\":5}}\n\ndata: {\"usage\":{\"total_tokens\":9}}\n\n";
    assert_eq!(scan(Framing::EventStream, &p, two.as_bytes(), 3).found(0), Some(9), "the last one wins");
    let broken =
        "data: {\"usage\":{\"total_tokens\":5}}\n\ndata: {\"usage\" oops\n\ndata: {\"usage\":{\"total_tokens\":6}}";
    assert_eq!(
        scan(Framing::EventStream, &p, broken.as_bytes(), 4).found(0),
        Some(6),
        "one bad event spoils only itself"
    );
    let not_data = "id: {\"usage\":{\"total_tokens\":5}}\ndatum: {\"usage\":{\"total_tokens\":5}}\n\n";
    assert_eq!(scan(Framing::EventStream, &p, not_data.as_bytes(), 4).found(0), None);
}

#[test]
fn framing_comes_from_the_content_type() {
    assert_eq!(Framing::of_content_type(Some("text/event-stream; charset=utf-8")), Framing::EventStream);
    assert_eq!(Framing::of_content_type(Some("Text/Event-Stream")), Framing::EventStream);
    assert_eq!(Framing::of_content_type(Some("application/json")), Framing::Json);
    assert_eq!(Framing::of_content_type(None), Framing::Json);
}

#[test]
fn paths_are_checked_and_shared() {
    let mut p = UsagePaths::default();
    assert_eq!(p.add("usage.total_tokens"), Ok(0));
    assert_eq!(p.add("usage.input_tokens"), Ok(1));
    assert_eq!(p.add("usage.total_tokens"), Ok(0), "the same path is read once");
    assert!(p.add("usage..x").is_err());
    assert!(p.add("").is_err());
    assert!(p.add("a.b.c.d.e.f.g.h.i").is_err());
    for i in 2..MAX_TARGETS {
        p.add(&format!("p{i}")).unwrap();
    }
    assert!(p.add("one.more").unwrap_err().contains("more than"));
}

/// A 10 MB body streamed through in 16 KB chunks, its usage at the very
/// end: found, with the scanner's state the same fixed size throughout (it
/// owns no heap memory: its type is `Copy`).
#[test]
fn a_ten_megabyte_stream_is_read_in_constant_memory() {
    fn copy<T: Copy>(_: &T) {}
    let p = paths(&["usage.total_tokens"]);
    let mut s = UsageScanner::new(Framing::EventStream);
    copy(&s);
    let event = "data: {\"choices\":[{\"delta\":{\"content\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}]}\n\n";
    let mut chunk = String::new();
    while chunk.len() < 16 * 1024 {
        chunk.push_str(event);
    }
    let mut sent = 0;
    while sent < 10 * 1024 * 1024 {
        s.feed(chunk.as_bytes(), &p);
        sent += chunk.len();
    }
    s.feed(b"data: {\"usage\":{\"total_tokens\":777}}\n\ndata: [DONE]\n\n", &p);
    s.finish();
    assert_eq!(s.found(0), Some(777));
    assert!(std::mem::size_of::<UsageScanner>() <= 512, "{}", std::mem::size_of::<UsageScanner>());
}

#[test]
fn a_json_document_is_complete_once_its_outermost_value_closes() {
    let p = paths(&["usage.total_tokens"]);
    let mut s = UsageScanner::new(Framing::Json);
    s.feed(br#"{"usage":{"total_tokens":4"#, &p);
    assert!(!s.document_complete());
    s.feed(b"}", &p);
    assert!(!s.document_complete());
    s.feed(b"}", &p);
    assert!(s.document_complete());
    assert_eq!(s.found(0), Some(4));
    let mut bad = UsageScanner::new(Framing::Json);
    bad.feed(b"<html>", &p);
    assert!(!bad.document_complete(), "a body that is not JSON never completes");
    let mut sse = UsageScanner::new(Framing::EventStream);
    sse.feed(b"data: {}\n\n", &p);
    assert!(!sse.document_complete(), "only the stream's end ends an event stream");
}

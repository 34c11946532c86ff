//! The `native_request` fuzz target's corpus (`fuzz/corpus/native_request`,
//! grown by `make fuzz`) replayed through the module's exported hooks on
//! the fake Envoy. A process of its own: its inputs fail upstreams and open
//! breakers in the process-wide store, which the unit tests' pinned counts
//! must not see.
#![allow(clippy::unwrap_used, clippy::panic)]

#[test]
fn the_native_fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/native_request");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        resilience::fake_envoy::fuzz_request(&std::fs::read(entry.unwrap().path()).unwrap());
        files += 1;
    }
    assert!(files > 0, "{}: no corpus", dir.display());
}

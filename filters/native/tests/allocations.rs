//! Heap allocations per request, counted through the module's real hooks on
//! the fake Envoy: a process of its own, so that no other test's requests
//! touch the shared tables meanwhile (a compare-and-swap retried because
//! another thread wrote would count its allocations again).
#![allow(clippy::unwrap_used)]

use resilience::fake_envoy::{note_allocation, sample_config, FakeEnvoy, Upstream, POLICIES};
use std::alloc::{GlobalAlloc, Layout, System};

/// Counts the module's heap allocations (the fake Envoy says when the
/// module's code is running).
struct CountingAllocator;

// SAFETY: every call is handed to the system allocator as it came.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as the caller promises.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller promises.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as the caller promises.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Heap allocations per steady request (the module's code: the core and the
/// adapter, through the real hooks), with the samples' configurations
/// (envoy/*.yaml): none, on the common paths (an admitted request, a closed
/// breaker, retry headers written, a session placed by its key and one
/// pinned by its cookie). Buffers come from per-thread pools (`pool`), keys
/// in pooled strings and numbers on the stack, what the host holds is lent. To
/// see where one is made, capture a backtrace in the allocator while
/// `fake_envoy::in_module()`.
#[test]
fn a_steady_request_allocates_nothing() {
    let get = [(":method", "GET"), (":path", "/"), (":authority", "example.com")];
    let ok = Upstream { status: 200, address: "127.0.0.1:8081" };
    let got: Vec<(&str, &str, u64)> = POLICIES
        .iter()
        .flat_map(|policy| {
            let config = FakeEnvoy::configure(policy, &sample_config(policy)).unwrap();
            // The first requests find and cache their table slots and fill
            // the pools; of the next three, the fewest (a window that rolls
            // over between two requests writes a little more, once).
            let first = config.request("10.0.0.4:5000", &get, ok);
            config.request("10.0.0.4:5000", &get, ok);
            let steady = |headers: &[(&str, &str)]| {
                (0..3).map(|_| config.request("10.0.0.4:5000", headers, ok).allocations).min().unwrap_or_default()
            };
            let mut rows = vec![(*policy, "placed", steady(&get))];
            // A session pinned by the cookie the first answer set.
            let pin = first.response_headers.iter().find(|(n, _)| n == "set-cookie");
            if let Some((_, set)) = pin {
                let cookie = set.split(';').next().unwrap_or_default().to_string();
                let pinned = [get[0], get[1], get[2], ("cookie", cookie.as_str())];
                config.request("10.0.0.4:5000", &pinned, ok);
                rows.push((*policy, "pinned", steady(&pinned)));
            }
            rows
        })
        .collect();
    let expected = [
        ("rate_limit", "placed", 0),
        ("circuit_breaker", "placed", 0),
        ("retry", "placed", 0),
        ("sticky_session", "placed", 0),
        ("sticky_session", "pinned", 0),
        ("bundle", "placed", 0),
        ("bundle", "pinned", 0),
    ];
    assert_eq!(got, expected);
}

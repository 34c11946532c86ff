//! Buffers reused from one request to the next, per thread: the request
//! path's variable-length data (a request's headers, a breaker's window, a
//! record being written) lives in a buffer taken from this thread's pool and
//! given back when dropped, so a steady request allocates nothing on the
//! heap. Each thread (an Envoy worker, a Wasm VM) has its own pool: no lock,
//! no sharing.
//!
//! Memory stays bounded: a pool keeps at most [`KEPT`] buffers, and a buffer
//! that grew past [`LARGEST_KEPT`] bytes (a request with huge headers) is
//! freed instead of kept.

use std::cell::RefCell;

/// Buffers kept per pool and thread.
pub const KEPT: usize = 64;

/// A buffer larger than this (in bytes of capacity) is freed, not kept.
pub const LARGEST_KEPT: usize = 16 * 1024;

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static TEXT: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static SPANS: RefCell<Vec<Vec<(u32, u32, u32)>>> = const { RefCell::new(Vec::new()) };
}

macro_rules! pooled {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $pool:ident, $size:expr) => {
        $(#[$doc])*
        #[derive(Debug, Default, PartialEq, Eq)]
        pub struct $name($inner);

        impl $name {
            /// An empty buffer from this thread's pool (a new one when the
            /// pool is empty), with room for `capacity` at least.
            pub fn with_capacity(capacity: usize) -> Self {
                let reused = $pool.try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop())).ok().flatten();
                let mut inner = reused.unwrap_or_default();
                inner.clear();
                inner.reserve(capacity);
                $name(inner)
            }
        }

        impl std::ops::Deref for $name {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.0
            }
        }

        impl Clone for $name {
            fn clone(&self) -> Self {
                let mut copy = $name::with_capacity(self.0.len());
                copy.0.clone_from(&self.0);
                copy
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                if self.0.capacity() == 0 || $size(&self.0) > LARGEST_KEPT {
                    return;
                }
                let buffer = std::mem::take(&mut self.0);
                // During thread exit the pool may be gone: then it is freed.
                let _ = $pool.try_with(|p| {
                    if let Ok(mut p) = p.try_borrow_mut() {
                        if p.len() < KEPT {
                            p.push(buffer);
                        }
                    }
                });
            }
        }
    };
}

fn bytes_len(v: &Vec<u8>) -> usize {
    v.capacity()
}

fn spans_len(v: &Vec<(u32, u32, u32)>) -> usize {
    v.capacity() * std::mem::size_of::<(u32, u32, u32)>()
}

fn text_len(s: &String) -> usize {
    s.capacity()
}

pooled!(
    /// Bytes from this thread's pool.
    Bytes,
    Vec<u8>,
    BYTES,
    bytes_len
);

pooled!(
    /// Header spans from this thread's pool ([`crate::headers::Headers`]).
    Spans,
    Vec<(u32, u32, u32)>,
    SPANS,
    spans_len
);

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

pooled!(
    /// Text from this thread's pool.
    Text,
    String,
    TEXT,
    text_len
);

#[cfg(test)]
mod tests {
    use super::{Bytes, Text, KEPT, LARGEST_KEPT};

    #[test]
    fn a_dropped_buffer_is_reused_empty() {
        let mut a = Bytes::with_capacity(100);
        a.extend_from_slice(b"hello");
        let at = a.as_ptr();
        drop(a);
        let b = Bytes::with_capacity(10);
        assert!(b.is_empty(), "given back cleared");
        assert_eq!(b.as_ptr(), at, "the same buffer");
        let mut t = Text::with_capacity(8);
        t.push_str("abc");
        let copy = t.clone();
        assert_eq!(copy.as_str(), "abc");
    }

    #[test]
    fn the_pool_stays_bounded() {
        let many: Vec<Bytes> = (0..KEPT * 3).map(|_| Bytes::with_capacity(64)).collect();
        drop(many);
        let kept = super::BYTES.with(|p| p.borrow().len());
        assert!(kept <= KEPT, "{kept} kept");
        let mut huge = Bytes::with_capacity(LARGEST_KEPT + 1);
        huge.push(1);
        let before = super::BYTES.with(|p| p.borrow().len());
        drop(huge);
        assert_eq!(super::BYTES.with(|p| p.borrow().len()), before, "a huge buffer is freed, not kept");
    }
}

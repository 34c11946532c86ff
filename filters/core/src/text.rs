//! Numbers and short text spelled without the formatting machinery: the
//! request path's keys and header values are written with these (no
//! `format!`, no allocation). Depends on nothing else of the core.

/// `n` in decimal, written into `buf` (no formatting machinery: this runs
/// for every request's keys).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

/// Text that can be appended to: a `String`, or a pooled key
/// ([`crate::store::Key`]).
pub trait Spell {
    /// Appends `s`.
    fn push_str(&mut self, s: &str);
}

impl Spell for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }
}

//! The pinning cookie: `v1.<backend name>.<signature>`, the signature being
//! HMAC-SHA256 over `v1.<backend name>` with the configured secret,
//! truncated to 128 bits and base64url-encoded. A client cannot pin itself
//! to a backend of its choice without the secret; verification is constant
//! time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "v1.";
const SIG_BYTES: usize = 16;

/// Signs and verifies pinning-cookie values.
#[derive(Clone)]
pub struct Signer {
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.secret.is_some() { "Signer(hmac-sha256)" } else { "Signer(unsigned)" })
    }
}

impl Signer {
    /// A signer with `secret`, or an unsigned one (`None`: the value is
    /// `v1.<name>` and anyone can forge it).
    pub fn new(secret: Option<&[u8]>) -> Signer {
        Signer { secret: secret.map(<[u8]>::to_vec) }
    }

    fn mac(&self, payload: &str) -> Option<Hmac<Sha256>> {
        let mut m = Hmac::<Sha256>::new_from_slice(self.secret.as_deref()?).ok()?;
        m.update(payload.as_bytes());
        Some(m)
    }

    /// The cookie value naming `backend`.
    pub fn value(&self, backend: &str) -> String {
        self.value_with(PREFIX, backend)
    }

    /// `<prefix><name>`, then `.<signature>` when signing.
    pub fn value_with(&self, prefix: &str, name: &str) -> String {
        let payload = format!("{prefix}{name}");
        match self.mac(&payload) {
            Some(m) => {
                let tag = m.finalize().into_bytes();
                let sig = tag.get(..SIG_BYTES).unwrap_or(&[]);
                format!("{payload}.{}", base64url(sig))
            }
            None => payload,
        }
    }

    /// The backend a cookie value names, if its signature is right.
    pub fn verify<'a>(&self, value: &'a str) -> Option<&'a str> {
        self.verify_with(PREFIX, value)
    }

    /// The name in a `<prefix><name>[.<signature>]` value, if its signature
    /// is right.
    pub fn verify_with<'a>(&self, prefix: &str, value: &'a str) -> Option<&'a str> {
        let rest = value.strip_prefix(prefix)?;
        if self.secret.is_none() {
            return (!rest.is_empty() && !rest.contains('.')).then_some(rest);
        }
        let (name, sig) = rest.rsplit_once('.')?;
        let sig = base64url_decode(sig)?;
        if name.is_empty() || sig.len() != SIG_BYTES {
            return None;
        }
        let m = self.mac(&format!("{prefix}{name}"))?;
        m.verify_truncated_left(&sig).ok()?;
        Some(name)
    }
}

/// What follows the value in a pinning `Set-Cookie`: `; Path=...`, then
/// `Max-Age`, `HttpOnly`, `Secure` as configured, and `SameSite`.
pub fn attributes(c: &super::config::CookieConfig) -> String {
    let mut v = format!("; Path={}", c.path);
    if let Some(age) = c.max_age {
        v.push_str(&format!("; Max-Age={age}"));
    }
    if c.http_only {
        v.push_str("; HttpOnly");
    }
    if c.secure {
        v.push_str("; Secure");
    }
    v.push_str(&format!("; SameSite={}", c.same_site));
    v
}

/// Equal bytes, compared without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
        }
    }
    out
}

/// Decodes unpadded base64url, canonical spellings only: the unused low
/// bits of the last character must be zero, so that one value has exactly
/// one spelling (otherwise each signature had 16 accepted spellings, and a
/// tampered cookie was accepted and not counted as rejected).
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // Leftover bits: 0 (a multiple of 4 characters), 2 or 4 (after one or two
    // bytes), all zero; 6 left over (one lone character) is no encoding.
    (nbits < 6 && bits == 0).then_some(out)
}

/// Every value of cookie `name` in the request's `Cookie` headers, in order.
/// Malformed pairs are skipped.
pub fn cookie_values<'a>(headers: impl Iterator<Item = &'a str>, name: &str) -> smallvec::SmallVec<[&'a str; 4]> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_verify_and_forgeries_do_not() {
        let s = Signer::new(Some(b"correct horse battery staple"));
        let v = s.value("backend-b");
        assert!(v.starts_with("v1.backend-b."));
        assert_eq!(s.verify(&v), Some("backend-b"));
        // Another backend's name with this signature.
        assert_eq!(s.verify(&v.replace("backend-b", "backend-a")), None);
        // Every signature character, changed to every other character of
        // the alphabet: none verifies (this includes the spellings that
        // differ only in the unused low bits of the last character).
        let sig_start = v.rfind('.').unwrap() + 1;
        for pos in sig_start..v.len() {
            for &c in ALPHABET.iter() {
                let mut tampered = v.clone().into_bytes();
                if tampered[pos] == c {
                    continue;
                }
                tampered[pos] = c;
                let tampered = String::from_utf8(tampered).unwrap();
                assert_eq!(s.verify(&tampered), None, "{tampered} verified");
            }
        }
        // Another secret.
        assert_eq!(Signer::new(Some(b"other")).verify(&v), None);
        for junk in ["", "v1.", "v1.a", "v1..x", "v2.backend-b.AAAA", "v1.backend-b.!!!", "backend-b"] {
            assert_eq!(s.verify(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn fixed_vector() {
        // HMAC-SHA256("k", "v1.a"), first 16 bytes, base64url without padding
        // (computed independently with Python's hmac module).
        assert_eq!(Signer::new(Some(b"k")).value("a"), FIXED);
    }
    const FIXED: &str = "v1.a.4gPJoRIwD8P-YKPkb-k_Jw";

    #[test]
    fn unsigned_mode_names_the_backend_only() {
        let s = Signer::new(None);
        assert_eq!(s.value("a"), "v1.a");
        assert_eq!(s.verify("v1.a"), Some("a"));
        assert_eq!(s.verify("v1.a.sig"), None);
    }

    #[test]
    fn base64url_round_trip() {
        for n in 0..40usize {
            let bytes: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
            assert_eq!(base64url_decode(&base64url(&bytes)), Some(bytes));
        }
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        // Non-canonical: unused low bits set, or a lone trailing character.
        assert_eq!(base64url_decode("-_8"), Some(b"\xfb\xff".to_vec()));
        assert_eq!(base64url_decode("-_9"), None);
        assert_eq!(base64url_decode("AB"), None);
        assert_eq!(base64url_decode("AAAAA"), None);
    }

    #[test]
    fn cookie_header_parsing_tolerates_junk() {
        let headers = ["a=1; sticky=v1.x.sig; junk; =bare", "sticky=\"v1.y\"", "other=2"];
        assert_eq!(cookie_values(headers.iter().copied(), "sticky").as_slice(), ["v1.x.sig", "v1.y"]);
        assert!(cookie_values(["sticky"].iter().copied(), "sticky").is_empty());
    }
}

//! One path, however it is spelt: the normalisation every path match and
//! path key goes through, so that a client cannot escape a limit on `/api`
//! by writing `//api`, `/%61pi` or `/x/../api`.
//!
//! The rules are RFC 3986's, as Envoy applies them with `normalize_path:
//! true` and `merge_slashes: true` (which every sample config sets, so that
//! the filters and the router see the same path):
//!
//! 1. the query string and fragment are cut off;
//! 2. a percent-encoded unreserved character (`A-Z a-z 0-9 - . _ ~`) is
//!    decoded (`%61` is `a`); every other escape is kept, with upper-case hex
//!    (`%2f` is `%2F`, still not a `/`); a `%` not followed by two hex digits
//!    is written `%25` (otherwise decoding what follows could make a new
//!    escape of it: `%1%61` would become `%1a`, and normalising twice would
//!    differ; found by the `path` fuzz target);
//! 3. a backslash is a `/` (as browsers' URL parsing and many servers read
//!    it, so `/\api/x` is `/api/x`: a backend that reads it so cannot be
//!    reached around a limit on `/api`; Envoy's `normalize_path` keeps it,
//!    and then routes `/\api/x` to no `/api` route either); runs of `/`
//!    become one;
//! 4. `.` and `..` segments are resolved (`/a/./b/../c` is `/a/c`; `..` never
//!    climbs above the root).
//!
//! Not the same path, on purpose: `/API` and `/api` (paths are
//! case-sensitive; a match can ask for `"case_sensitive": false`), `%2561`
//! (an escaped `%`: only a backend that decodes twice sees `a`), `/;/api` (a
//! `;` belongs to its segment, as in Envoy; backends that strip path
//! parameters, such as Tomcat's, see `/api`) and `%2F` (an escaped slash is
//! not a separator, as Envoy keeps it by default; `%5C`, an escaped
//! backslash, likewise).

use std::borrow::Cow;

/// The normalised form of a request's `:path` (see the module docs).
pub fn normalize(raw: &str) -> Cow<'_, str> {
    let path = raw.split(['?', '#']).next().unwrap_or(raw);
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    Cow::Owned(remove_dot_segments(&decoded))
}

/// True when normalising would change nothing (the common case, without an
/// allocation).
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.contains(&b'%') || b.contains(&b'\\') || path.contains("//") {
        return false;
    }
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn upper_hex(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0').to_ascii_uppercase()
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len() + 1);
    if b.first() != Some(&b'/') && b.first() != Some(&b'\\') {
        out.push('/');
    }
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let escape = (c == b'%').then(|| Some((hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?))).flatten();
        match escape {
            Some((hi, lo)) => {
                let v = hi * 16 + lo;
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(upper_hex(hi));
                    out.push(upper_hex(lo));
                }
                i += 3;
            }
            None if c == b'%' => {
                out.push_str("%25");
                i += 1;
            }
            None if c == b'\\' => {
                out.push('/');
                i += 1;
            }
            None => {
                // Copy the whole character (paths may hold raw UTF-8).
                let len = path.get(i..).and_then(|r| r.chars().next()).map_or(1, char::len_utf8);
                out.push_str(path.get(i..i + len).unwrap_or(""));
                i += len;
            }
        }
    }
    out
}

fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !out.ends_with('/')) {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn spellings_of_one_path_are_one_path() {
        for spelling in [
            "/api/x",
            "//api/x",
            "/%61pi/x",
            "/%61%70%69/x",
            "/./api/x",
            "/x/../api/x",
            "/api//x",
            "/api/./x?q=1",
            "/\\api/x",
            "\\api\\x",
            "/api\\.\\x",
        ] {
            assert_eq!(normalize(spelling), "/api/x", "{spelling}");
        }
        assert_eq!(normalize("/a/b/../../../api"), "/api", "never above the root");
        assert_eq!(normalize("/api/"), "/api/");
        assert_eq!(normalize("/api/x/.."), "/api/");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/%7Euser"), "/~user");
    }

    #[test]
    fn other_spellings_stay_distinct() {
        assert_eq!(normalize("/API/x"), "/API/x");
        assert_eq!(normalize("/%2561pi/x"), "/%2561pi/x");
        assert_eq!(normalize("/;/api/x"), "/;/api/x");
        assert_eq!(normalize("/api%2fx"), "/api%2Fx");
        assert_eq!(normalize("/api%5cx"), "/api%5Cx");
        assert_eq!(normalize("/100%"), "/100%25");
        assert_eq!(normalize("/%zz/é/../a"), "/%25zz/a");
    }

    /// Found by the `path` fuzz target: decoding `%61` after a stray `%1`
    /// made a new escape, `%1a`, so normalising twice gave another path.
    #[test]
    fn normalising_is_idempotent_around_stray_percent_signs() {
        let once = normalize("/qq%61pi/%2F\u{fffd}%1%61pi/%2F\u{fffd}%1z").into_owned();
        assert_eq!(once, "/qqapi/%2F\u{fffd}%251api/%2F\u{fffd}%251z");
        assert_eq!(normalize(&once), once);
    }

    #[test]
    fn normal_paths_are_not_copied() {
        assert!(matches!(normalize("/api/v1/items?x=1"), std::borrow::Cow::Borrowed("/api/v1/items")));
    }
}

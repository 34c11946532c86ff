//! A request as the core sees it: headers already fetched from the host in one
//! call, plus the peer address. Header names are lower-case (HTTP/2 and
//! proxy-wasm hosts hand them over that way; [`Headers`] lowers them
//! anyway).

use crate::headers::Headers;

/// The parts of a request the filters decide on.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    headers: Headers,
    /// In a pooled string (no allocation per request).
    peer: Option<crate::store::Key>,
}

impl RequestView {
    /// Builds a view from a header list and the `source.address` property
    /// (`"ip:port"` in Envoy, `"ip"` in nginx): tests only (the filters
    /// fetch it from the host, [`RequestView::fetch`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn new(headers: Vec<(String, String)>, peer: Option<String>) -> Self {
        let peer = peer.map(|p| crate::store::Key::from_parts(&[&p]));
        RequestView { headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(), peer }
    }

    /// The first value of a header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Every value of a header, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every header name, in order (repeated names repeat).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n)
    }

    /// `:method`.
    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or("")
    }

    /// `:path` without the query string, normalised ([`crate::path`]): the
    /// one spelling every path match and path key sees.
    pub fn path(&self) -> std::borrow::Cow<'_, str> {
        crate::path::normalize(self.header(":path").unwrap_or(""))
    }

    /// The peer address as the host reported it.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }
}

impl RequestView {
    /// Reads a view from the host: only the `names` headers (one call each,
    /// first value only) or, with `None`, all of them in one call; plus the
    /// peer address (`source.address`) when `with_peer`.
    pub fn fetch<H: crate::host::Host + ?Sized>(host: &H, names: Option<&[String]>, with_peer: bool) -> Self {
        let headers = match names {
            Some(names) => {
                let mut headers = Headers::with_capacity(names.len(), 48 * names.len());
                for n in names {
                    if n == ":authority" {
                        if let Some(v) = crate::host::authority(host) {
                            headers.push(n, &v);
                        }
                    } else {
                        host.request_header_with(n, &mut |v| {
                            if let Some(v) = v {
                                headers.push(n, v);
                            }
                        });
                    }
                }
                headers
            }
            None => {
                let mut headers = host.request_headers();
                // nginx's `:authority` is the server's name: the client's
                // is its Host header (see `host::authority`).
                if host.kind() == crate::host::HostKind::Nginx {
                    if let Some(h) = headers.get("host").map(str::to_string) {
                        headers.set(":authority", Some(&h));
                    }
                }
                headers
            }
        };
        let peer = if with_peer { crate::host::property_key(host, &["source", "address"]) } else { None };
        RequestView { headers, peer }
    }
}

#[cfg(test)]
mod tests {
    use super::{Headers, RequestView};

    #[test]
    fn headers_in_one_buffer_read_as_pairs() {
        let mut h: Headers =
            [(":method", "GET"), ("X-Api-Key", "k1"), ("cookie", "a=1"), ("cookie", "b=2")].into_iter().collect();
        assert_eq!(h.len(), 4);
        assert_eq!(h.get("x-api-key"), Some("k1"), "names are lower-cased");
        assert_eq!(h.get("cookie"), Some("a=1"), "the first value");
        h.push_bytes(b"x-bin", b"caf\xe9");
        assert_eq!(h.get("x-bin"), Some("caf\u{fffd}"), "not UTF-8: decoded lossily");
        h.set("cookie", Some("c=3"));
        assert_eq!(h.iter().filter(|(n, _)| *n == "cookie").count(), 1);
        assert_eq!(h.get("cookie"), Some("c=3"));
        h.set("x-api-key", None);
        assert_eq!(h.get("x-api-key"), None);
        assert_eq!(h.iter().next(), Some((":method", "GET")));
        let view = RequestView { headers: h, peer: None };
        assert_eq!(view.method(), "GET");
        assert!(Headers::default().is_empty());
    }
}

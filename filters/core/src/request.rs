//! A request as the core sees it: headers already fetched from the host in one
//! call, plus the peer address. Header names are lower-case (HTTP/2 and
//! proxy-wasm hosts hand them over that way; [`RequestView::new`] lowers them
//! anyway).

/// The parts of a request the filters decide on.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    headers: Vec<(String, String)>,
    peer: Option<String>,
}

impl RequestView {
    /// Builds a view from the host's header list and the `source.address`
    /// property (`"ip:port"` in Envoy, `"ip"` in nginx).
    pub fn new(mut headers: Vec<(String, String)>, peer: Option<String>) -> Self {
        for (name, _) in headers.iter_mut() {
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                *name = name.to_ascii_lowercase();
            }
        }
        RequestView { headers, peer }
    }

    /// The first value of a header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every header name, in order (repeated names repeat).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n.as_str())
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
            Some(names) => names.iter().filter_map(|n| Some((n.clone(), host.request_header(n)?))).collect(),
            None => host.request_headers(),
        };
        let peer = if with_peer { crate::host::property_text(host, &["source", "address"]) } else { None };
        RequestView::new(headers, peer)
    }
}

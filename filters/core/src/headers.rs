//! Request headers in one buffer, below the host seam: what a host hands
//! over ([`crate::host::Host::request_headers`]) and what a request view
//! reads ([`crate::request::RequestView`]). It depends on nothing else of
//! the core.

use crate::pool::{Spans, Text};

/// Request headers in one buffer: every name and value in one string,
/// located by offsets. Two buffers however many headers, where a list of
/// owned pairs would make two allocations per header; both are taken from
/// this thread's [`crate::pool`] and given back when dropped, so a steady
/// request allocates none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    text: Text,
    /// Per header: where its name starts, where its value starts (the name
    /// ends there) and where its value ends.
    spans: Spans,
}

impl Headers {
    /// Room for `count` headers of `bytes` bytes in all.
    pub fn with_capacity(count: usize, bytes: usize) -> Self {
        Headers { text: Text::with_capacity(bytes), spans: Spans::with_capacity(count) }
    }

    /// Appends a header; the name is lower-cased.
    pub fn push(&mut self, name: &str, value: &str) {
        let text = &mut *self.text;
        let start = text.len();
        text.push_str(name);
        if let Some(added) = text.get_mut(start..) {
            added.make_ascii_lowercase();
        }
        let value_start = text.len();
        text.push_str(value);
        let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let end = text.len();
        self.spans.push((offset(start), offset(value_start), offset(end)));
    }

    /// Appends a header from the host's bytes, decoded lossily when they are
    /// not UTF-8.
    pub fn push_bytes(&mut self, name: &[u8], value: &[u8]) {
        self.push(&String::from_utf8_lossy(name), &String::from_utf8_lossy(value));
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|&(n, v, e)| {
            let part = |a: u32, b: u32| self.text.get(a as usize..b as usize).unwrap_or("");
            (part(n, v), part(v, e))
        })
    }

    /// The first value of `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// How many headers.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No headers at all.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Sets `name` to `value` (every earlier value removed), or removes it.
    /// The removed values' bytes stay in the buffer, unreferenced.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let text = &self.text;
        self.spans.retain(|&(n, v, _)| text.get(n as usize..v as usize) != Some(name));
        if let Some(v) = value {
            self.push(name, v);
        }
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut headers = Headers::default();
        for (n, v) in iter {
            headers.push(n, v);
        }
        headers
    }
}

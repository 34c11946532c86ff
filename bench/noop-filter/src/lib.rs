//! The floor any Proxy-Wasm filter pays: the VM is entered for request and
//! response headers (and the other callbacks the SDK exports), and nothing
//! else happens. Built through the same adapter as the real filters, so the
//! load harness compares every filter with exactly what it cannot avoid.

use filters_core::host::{Filter, Flow, Host, Refused};

filters_host::filter_entry!(Noop);

/// A filter that does nothing.
pub struct Noop;

impl Filter for Noop {
    type Stream = ();
    const METRIC_PREFIX: &'static str = "noop";

    fn configure<H: Host>(_host: &H, _config: &[u8]) -> Result<Self, Refused> {
        Ok(Noop)
    }

    fn on_request_headers<H: Host>(&self, _stream: &mut (), _host: &H) -> Flow {
        Flow::Continue
    }
}

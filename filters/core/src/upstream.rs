//! What happened upstream, read once at completion and shared by every
//! filter that learns from outcomes (the circuit breaker, sticky sessions'
//! passive health).
//!
//! A completed request is one of three things:
//! * **answered**: a status arrived (from the upstream, or from the proxy on
//!   its behalf: Envoy's 503 for a failed connection, 504 for a timeout);
//! * **network failure** within that: the proxy says the upstream failed at
//!   the network level ([`Upstream::network_failure`]);
//! * **client gone**: no status and no sign of an upstream failure; the
//!   client went away before anything was known about the upstream, and the
//!   request says nothing about it. Envoy reports that as no response code,
//!   flag `DC` (downstream connection termination) or `DR` (downstream
//!   remote reset) and details `downstream_remote_disconnect`; nginx as
//!   status 499 ("client closed request") with no flags and no details. A
//!   client that leaves after the upstream answered leaves its status behind,
//!   and the request counts.
//!
//! Each filter then defines failure on top of this: the breaker counts a
//! network failure, a status in its `failure_statuses` or a status outside
//! 100-599 ([`Upstream::invalid_status`]); sticky counts a network failure,
//! any 5xx or an invalid status.

use crate::host::{property_text, property_u64, Host, HostKind};

/// Envoy response flags that mean the upstream failed at the network
/// level: no healthy upstream (UH, 0x2), upstream request timeout (UT, 0x4),
/// upstream remote reset (UR, 0x10), upstream connection failure (UF, 0x20),
/// upstream connection termination (UC, 0x40).
pub const NETWORK_FAILURE_FLAGS: u64 = 0x2 | 0x4 | 0x10 | 0x20 | 0x40;

/// Envoy response flags that mean the downstream went away: downstream
/// connection termination (DC, 0x4000) and downstream remote reset (DR,
/// 1 << 28). Informational: a request with no status and no sign of an
/// upstream failure is "client gone" whatever its flags.
pub const CLIENT_GONE_FLAGS: u64 = 0x4000 | (1 << 28);

/// The status nginx logs when the client closed the connection before the
/// upstream answered.
pub const NGINX_CLIENT_CLOSED: u16 = 499;

/// The outcome of a request as the proxy reports it at completion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    /// The response status (0: none).
    pub status: u16,
    /// Envoy's `response.flags` (`None` in nginx).
    pub flags: Option<u64>,
    /// Envoy's `response.code_details` (`None` in nginx).
    pub details: Option<String>,
}

impl Upstream {
    /// Reads the outcome at completion: `:status` of the response headers,
    /// else the `response.code` property; then, in Envoy only and only for
    /// a status of 0 or from 499 up, `response.code_details` and
    /// `response.flags` (nginx has neither, and logs an error line for each
    /// read). Four reads at most, all returning bytes; one for most
    /// requests.
    pub fn read<H: Host + ?Sized>(host: &H) -> Upstream {
        let status = crate::host::with_response_header(host, ":status", |s| s?.trim().parse::<u16>().ok())
            .or_else(|| property_u64(host, &["response", "code"]).and_then(|c| u16::try_from(c).ok()))
            .unwrap_or(0);
        // An answer below 500 came from the upstream: no network failure, no
        // client gone (but nginx's 499), so flags and details say nothing
        // more, and are not read (two calls saved on most requests).
        if (100..=498).contains(&status) || host.kind() == HostKind::Nginx {
            return Upstream { status, flags: None, details: None };
        }
        let details = property_text(host, &["response", "code_details"]);
        let flags = property_u64(host, &["response", "flags"]);
        Upstream { status, flags, details }
    }

    /// The client went away before any answer: nothing is known about the
    /// upstream (see the module docs).
    pub fn client_gone(&self) -> bool {
        if self.status == 0 {
            return !self.network_failure();
        }
        self.status == NGINX_CLIENT_CLOSED && self.flags.is_none() && self.details.is_none()
    }

    /// A status no HTTP response can have (outside 100-599): the upstream is
    /// broken, whatever the filter counts as a failure otherwise.
    pub fn invalid_status(&self) -> bool {
        self.status != 0 && !(100..=599).contains(&self.status)
    }

    /// Did the request fail at the network level (connect failure, reset,
    /// timeout, no healthy upstream)?
    ///
    /// Envoy says so in `response.flags` ([`NETWORK_FAILURE_FLAGS`]) and in
    /// `response.code_details` (`upstream_reset_before_response_started{...}`,
    /// `response_timeout`, `no_healthy_upstream`, ...); either suffices.
    /// `via_upstream` means the upstream answered, whatever the status. Where
    /// the host has neither (nginx), a 502, 503 or 504 counts as a network
    /// failure; in nginx that includes those statuses when an upstream sends
    /// them itself.
    pub fn network_failure(&self) -> bool {
        network_failure(self.flags, self.details.as_deref(), self.status)
    }
}

/// The upstream that answered, as the proxy names it (`ip:port`): Envoy's
/// `upstream.address`; in nginx the last entry of `$upstream_addr` (read
/// as `ngx.upstream_addr`; entries are separated by `, ` for each
/// `proxy_next_upstream` attempt and ` : ` across internal redirects).
/// nginx's own `upstream.address` is not read: this ngx_wasm_module
/// (prerelease-0.6.0) cuts the port off, and when nginx had no live upstream
/// (the peer is then the upstream block's name, with no `:`) it fails an
/// allocation of about 2^64 bytes and logs `[emerg] malloc(...) failed`. An
/// entry that is no address (that block name) is returned as is, and matches
/// no backend. `None`: the proxy names none. One call that returns bytes.
pub fn answered_by<H: Host + ?Sized>(host: &H) -> Option<String> {
    if host.kind() == HostKind::Nginx {
        let all = property_text(host, &["ngx", "upstream_addr"])?;
        return Some(last_upstream_addr(&all).to_string());
    }
    property_text(host, &["upstream", "address"])
}

/// The last entry of nginx's `$upstream_addr`.
pub fn last_upstream_addr(all: &str) -> &str {
    let after = |s: &'static str| all.rfind(s).map(|i| i + s.len());
    let start = after(", ").into_iter().chain(after(" : ")).max().unwrap_or(0);
    all.get(start..).unwrap_or("").trim()
}

/// See [`Upstream::network_failure`].
pub fn network_failure(flags: Option<u64>, code_details: Option<&str>, status: u16) -> bool {
    let details = code_details.map(str::trim).filter(|d| !d.is_empty());
    if flags.is_none() && details.is_none() {
        return matches!(status, 502..=504);
    }
    if flags.is_some_and(|f| f & NETWORK_FAILURE_FLAGS != 0) {
        return true;
    }
    details.is_some_and(|d| {
        d.starts_with("upstream_reset")
            || d.starts_with("upstream_response_timeout")
            || d.starts_with("response_timeout")
            || d.starts_with("upstream_per_try_timeout")
            || d.starts_with("upstream_per_try_idle_timeout")
            || d.starts_with("no_healthy_upstream")
            || d.contains("connection_failure")
            || d.contains("connection_termination")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_failures_from_flags_code_details_or_status() {
        assert!(network_failure(Some(4), Some("response_timeout"), 504), "route timeout");
        assert!(network_failure(Some(0), Some("response_timeout"), 504), "details alone suffice");
        assert!(network_failure(Some(0x20), Some(""), 503), "flags alone suffice");
        assert!(network_failure(None, Some("upstream_reset_before_response_started{connection_failure}"), 503));
        assert!(network_failure(None, Some("no_healthy_upstream"), 503));
        assert!(!network_failure(Some(0), Some("via_upstream"), 503), "the upstream itself said 503");
        assert!(
            !network_failure(Some(0x8), Some("via_upstream"), 200),
            "a downstream/local reset is not the upstream's"
        );
        // nginx: neither flags nor details.
        assert!(network_failure(None, None, 502));
        assert!(network_failure(None, Some(""), 504));
        assert!(!network_failure(None, None, 500));
    }

    #[test]
    fn the_last_entry_of_nginx_upstream_addr() {
        assert_eq!(last_upstream_addr("127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(last_upstream_addr("127.0.0.1:8081, 127.0.0.1:8082"), "127.0.0.1:8082");
        assert_eq!(last_upstream_addr("127.0.0.1:8081, [::1]:8082 : 127.0.0.1:8083"), "127.0.0.1:8083");
        assert_eq!(last_upstream_addr("127.0.0.1:8081 : [::1]:8082"), "[::1]:8082");
        assert_eq!(last_upstream_addr("127.0.0.1:8081, backend_all"), "backend_all");
        assert_eq!(last_upstream_addr(""), "");
    }

    #[test]
    fn client_gone_is_no_status_and_no_upstream_failure() {
        assert!(Upstream::default().client_gone());
        // What Envoy 1.40 reports when the client disconnects from a hung upstream.
        let envoy_abort = Upstream {
            status: 0,
            flags: Some(CLIENT_GONE_FLAGS & 0x4000),
            details: Some("downstream_remote_disconnect".into()),
        };
        assert!(envoy_abort.client_gone());
        assert!(!Upstream { status: 0, flags: Some(0x20), details: Some("upstream_reset".into()) }.client_gone());
        assert!(!Upstream { status: 0, flags: Some(0x4), details: None }.client_gone(), "upstream timeout");
        assert!(!Upstream { status: 200, ..Upstream::default() }.client_gone());
        // The client left after the upstream answered: the status counts.
        assert!(!Upstream { status: 503, flags: Some(0x4000), details: Some("via_upstream".into()) }.client_gone());
        // nginx's 499, but only where the host has no flags (an upstream's own 499 under Envoy counts).
        assert!(Upstream { status: 499, ..Upstream::default() }.client_gone());
        assert!(!Upstream { status: 499, flags: Some(0), details: Some("via_upstream".into()) }.client_gone());
    }
}

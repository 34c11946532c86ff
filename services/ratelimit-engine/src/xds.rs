//! The configuration over xDS (`CONFIG_TYPE=GRPC_XDS_SOTW`), as Envoy
//! Gateway serves it to envoyproxy/ratelimit: one aggregated discovery
//! stream (`StreamAggregatedResources`, state of the world) asking for
//! `ratelimit.config.ratelimit.v3.RateLimitConfig` resources as the node
//! `CONFIG_GRPC_XDS_NODE_ID`.
//!
//! Each response holds every resource (state of the world): all of them are
//! read as one configuration, each resource as one file of upstream's YAML
//! (its domain and descriptors; the resource's name names it in errors).
//! A set that loads replaces the configuration and is acknowledged (its
//! `version_info` and `nonce`); a set that does not is refused with one log
//! line, counted in `ratelimit_engine_config_reload_errors_total`, and
//! answered with a NACK (the last acknowledged version, the nonce and the
//! reason in `error_detail`): the last good configuration stays. When the
//! stream ends or cannot be opened, the engine keeps answering with what it
//! has and connects again every `CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL`,
//! asking with the version it last acknowledged.

use crate::config::Config;
use crate::service::Service;
use crate::settings::XdsSource;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3 as ds;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use envoy_types::pb::ratelimit::config::ratelimit::v3 as rl;
use prost::Message;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The resource type the engine subscribes to.
pub const TYPE_URL: &str = "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig";

/// A state-of-the-world response read as configuration files: each
/// `RateLimitConfig` as `(xds:<name>, YAML text)`. A resource of another
/// type, or one that does not decode, refuses the whole response.
pub fn files_of(resources: &[Any]) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::with_capacity(resources.len());
    for (i, any) in resources.iter().enumerate() {
        if any.type_url != TYPE_URL {
            return Err(format!("resources[{i}]: type {} is not {TYPE_URL}", any.type_url));
        }
        let config = rl::RateLimitConfig::decode(any.value.as_slice())
            .map_err(|e| format!("resources[{i}]: not a RateLimitConfig: {e}"))?;
        let name = if config.name.is_empty() { format!("resources[{i}]") } else { config.name.clone() };
        let root = json!({ "domain": config.domain, "descriptors": descriptors(&config.descriptors) });
        // JSON is YAML: the file loader reads it, with the same checks as a
        // mounted file's.
        files.push((format!("xds:{name}"), root.to_string()));
    }
    Ok(files)
}

/// Descriptors in upstream's YAML shape (`ConfigXdsProtoToYaml`).
fn descriptors(list: &[rl::RateLimitDescriptor]) -> Vec<Value> {
    list.iter()
        .map(|d| {
            let mut m = Map::new();
            m.insert("key".into(), d.key.clone().into());
            if !d.value.is_empty() {
                m.insert("value".into(), d.value.clone().into());
            }
            if let Some(p) = &d.rate_limit {
                let unit = rl::RateLimitUnit::try_from(p.unit).map_or("unknown", |u| u.as_str_name());
                let mut limit = Map::new();
                limit.insert("unit".into(), unit.to_ascii_lowercase().into());
                limit.insert("requests_per_unit".into(), p.requests_per_unit.into());
                limit.insert("unlimited".into(), p.unlimited.into());
                if !p.name.is_empty() {
                    limit.insert("name".into(), p.name.clone().into());
                }
                let replaces: Vec<Value> = p.replaces.iter().map(|r| json!({ "name": r.name })).collect();
                limit.insert("replaces".into(), replaces.into());
                m.insert("rate_limit".into(), limit.into());
            }
            m.insert("descriptors".into(), descriptors(&d.descriptors).into());
            m.insert("shadow_mode".into(), d.shadow_mode.into());
            m.insert("quota_mode".into(), d.quota_mode.into());
            m.insert("detailed_metric".into(), d.detailed_metric.into());
            Value::Object(m)
        })
        .collect()
}

/// What the client says back to one response: an ACK when `error` is
/// `None`, else a NACK. `version` is the version last acknowledged.
pub fn answer(node_id: &str, version: &str, nonce: &str, error: Option<&str>) -> ds::DiscoveryRequest {
    ds::DiscoveryRequest {
        node: Some(Node { id: node_id.to_string(), ..Default::default() }),
        version_info: version.to_string(),
        type_url: TYPE_URL.to_string(),
        response_nonce: nonce.to_string(),
        // INVALID_ARGUMENT, as a refused configuration.
        error_detail: error.map(|e| Status { code: 3, message: e.to_string(), details: Vec::new() }),
        ..Default::default()
    }
}

/// Follows the xDS server for as long as the engine runs, applying each
/// configuration it sends to `limiter`. `first` is told once the first one
/// was applied (the engine serves only then unless
/// `FORCE_START_WITHOUT_INITIAL_CONFIG`).
pub async fn follow(
    source: XdsSource,
    limiter: Arc<Service>,
    merge: bool,
    first: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut first = first;
    let mut acked = String::new();
    limiter.metrics.xds_connected(false);
    let mut said_down = false;
    loop {
        let mut seen = false;
        let ended = stream(&source, &limiter, merge, (&mut acked, &mut seen), &mut first).await;
        // A stream that got as far as a response ended an outage: the next
        // failure is said again.
        if seen {
            said_down = false;
        }
        // One line per outage, not per attempt (a server that closes every
        // stream at once included).
        if !said_down {
            let why = ended.err().unwrap_or_else(|| "the stream ended".to_string());
            crate::logging::warn(&format!(
                "xDS {}: {why}; the configuration in place stays, connecting again every {:?}",
                source.server, source.retry
            ));
            said_down = true;
        }
        limiter.metrics.xds_connected(false);
        tokio::time::sleep(source.retry).await;
    }
}

/// One stream: connect, subscribe, apply and answer responses until it
/// ends. Errors say why it could not go on.
async fn stream(
    source: &XdsSource,
    limiter: &Service,
    merge: bool,
    (acked, seen): (&mut String, &mut bool),
    first: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let channel = crate::tls::xds_channel(source).await?;
    let mut client = ds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(crate::config::MAX_CONFIG_BYTES as usize);
    let (tx, rx) = mpsc::channel::<ds::DiscoveryRequest>(4);
    let requests = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut request = tonic::Request::new(requests);
    for (k, v) in &source.headers {
        let name = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| format!("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS: {k} is not a header name"))?;
        let value = v.parse().map_err(|_| format!("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS: {k}'s value"))?;
        request.metadata_mut().insert(name, value);
    }
    // The subscription: every RateLimitConfig for this node, with the
    // version acknowledged last (a server that still has it need not resend).
    tx.send(answer(&source.node_id, acked, "", None)).await.map_err(|e| e.to_string())?;
    let mut responses = client.stream_aggregated_resources(request).await.map_err(|s| describe(&s))?.into_inner();
    limiter.metrics.xds_connected(true);
    crate::logging::info(&format!("xDS {}: subscribed as node {}", source.server, source.node_id));
    while let Some(response) = responses.message().await.map_err(|s| describe(&s))? {
        *seen = true;
        let reply = apply(&response, limiter, merge, acked, &source.node_id);
        if reply.error_detail.is_none() {
            if let Some(tell) = first.take() {
                let _ = tell.send(());
            }
        }
        tx.send(reply).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Applies one response (or refuses it) and returns the ACK or NACK.
fn apply(
    response: &ds::DiscoveryResponse,
    limiter: &Service,
    merge: bool,
    acked: &mut String,
    node: &str,
) -> ds::DiscoveryRequest {
    let loaded = files_of(&response.resources).and_then(|files| Config::load_with(&files, merge));
    match loaded {
        Ok(config) => {
            limiter.replace(config);
            limiter.metrics.reload(true);
            *acked = response.version_info.clone();
            crate::logging::info(&format!(
                "xDS: version {} applied, {} domain(s)",
                response.version_info,
                limiter.domains()
            ));
            answer(node, acked, &response.nonce, None)
        }
        Err(e) => {
            limiter.metrics.reload(false);
            crate::logging::warn(&format!(
                "xDS: version {} refused, the last good configuration stays: {e}",
                response.version_info
            ));
            answer(node, acked, &response.nonce, Some(&e))
        }
    }
}

/// A gRPC status as one line.
fn describe(s: &tonic::Status) -> String {
    let source = std::error::Error::source(s).map(|e| format!(" ({e})")).unwrap_or_default();
    format!("{:?}: {}{source}", s.code(), s.message())
}

#[cfg(test)]
mod tests;

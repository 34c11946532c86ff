//! Envoy Gateway's side of its rate-limit Deployment, for the tests: the
//! certificates its `certgen` job issues (one CA; `envoy-gateway`,
//! `envoy-rate-limit` and `envoy` certificates signed by it, each good for
//! both ends of a mutual TLS connection) and an xDS server that serves
//! `RateLimitConfig` resources over mutual TLS on the aggregated discovery
//! stream, state of the world, as Envoy Gateway's rate-limit xDS server
//! does (only to the node id it holds a snapshot for).

use ds::aggregated_discovery_service_server::{AggregatedDiscoveryService, AggregatedDiscoveryServiceServer};
use envoy_types::pb::envoy::service::discovery::v3 as ds;
use envoy_types::pb::google::protobuf::Any;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One certificate and its key (PEM).
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// What Envoy Gateway's `certgen` writes: a CA and a certificate per
/// component, each naming its Service (and 127.0.0.1, localhost: the tests
/// connect there).
pub struct Certs {
    pub ca: String,
    pub gateway: Issued,
    pub ratelimit: Issued,
    pub envoy: Issued,
    /// A Redis server's (TLS to Redis).
    pub redis: Issued,
    /// A CA nobody trusts, and a certificate from it: a stranger.
    pub stranger: Issued,
}

fn issue(names: &[&str], issuer: &rcgen::Issuer<'_, rcgen::KeyPair>) -> Issued {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sans.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    let mut params = rcgen::CertificateParams::new(sans).expect("names");
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).expect("sign");
    Issued { cert: cert.pem(), key: key.serialize_pem() }
}

fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

impl Certs {
    /// A fresh set.
    pub fn generate() -> Certs {
        let (ca, issuer) = authority("envoy-gateway");
        let (_, other) = authority("someone-else");
        Certs {
            ca,
            gateway: issue(&["envoy-gateway", "envoy-gateway.envoy-gateway-system.svc"], &issuer),
            ratelimit: issue(&["envoy-ratelimit", "envoy-ratelimit.envoy-gateway-system.svc"], &issuer),
            envoy: issue(&["envoy"], &issuer),
            redis: issue(&["redis.redis.svc"], &issuer),
            stranger: issue(&["envoy"], &other),
        }
    }

    /// Writes `issued` as `<name>.crt` and `<name>.key` under `dir`, and the
    /// CA as `ca.crt`: their paths.
    pub fn write(&self, dir: &Path, name: &str, issued: &Issued) -> [PathBuf; 3] {
        std::fs::create_dir_all(dir).expect("certs dir");
        let paths = [dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")), dir.join("ca.crt")];
        for (path, text) in paths.iter().zip([&issued.cert, &issued.key, &self.ca]) {
            std::fs::write(path, text).expect("write a certificate");
        }
        paths
    }

    /// The `envoy-rate-limit` Secret as Envoy Gateway mounts it at `/certs`:
    /// `tls.crt`, `tls.key`, `ca.crt` under `dir`.
    pub fn mount_ratelimit_secret(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("certs dir");
        std::fs::write(dir.join("tls.crt"), &self.ratelimit.cert).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), &self.ratelimit.key).expect("tls.key");
        std::fs::write(dir.join("ca.crt"), &self.ca).expect("ca.crt");
        dir.to_path_buf()
    }
}

/// One request the engine sent on the stream: its version, the nonce it
/// answers, the NACK's message if it is one.
#[derive(Debug, Clone)]
pub struct Seen {
    pub node: String,
    pub version: String,
    pub nonce: String,
    pub error: Option<String>,
}

struct State {
    /// The snapshot: version and resources, for the one node served.
    snapshot: watch::Sender<(String, Vec<Any>)>,
    node: String,
    seen: Mutex<Vec<Seen>>,
    nonces: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
struct Ads(Arc<State>);

type Responses =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ds::DiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ds::DeltaDiscoveryResponse, tonic::Status>> + Send>>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<ds::DiscoveryRequest>>,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        let mut requests = request.into_inner();
        let state = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut snapshot = state.snapshot.subscribe();
            let mut subscribed = false;
            loop {
                tokio::select! {
                    r = requests.message() => {
                        let Ok(Some(r)) = r else { return };
                        let node = r.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
                        if let Ok(mut seen) = state.seen.lock() {
                            seen.push(Seen {
                                node: node.clone(),
                                version: r.version_info.clone(),
                                nonce: r.response_nonce.clone(),
                                error: r.error_detail.as_ref().map(|s| s.message.clone()),
                            });
                        }
                        // The first request subscribes: the snapshot goes out
                        // at once (to the node it is for only).
                        if !subscribed && r.response_nonce.is_empty() && node == state.node {
                            subscribed = true;
                            snapshot.mark_changed();
                        }
                    }
                    changed = snapshot.changed(), if subscribed => {
                        if changed.is_err() { return; }
                        let (version, resources) = snapshot.borrow_and_update().clone();
                        let nonce = state.nonces.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
                        let response = ds::DiscoveryResponse {
                            version_info: version,
                            resources,
                            type_url: ratelimit_engine::xds::TYPE_URL.into(),
                            nonce,
                            ..Default::default()
                        };
                        if tx.send(Ok(response)).await.is_err() { return; }
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<ds::DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("state of the world only"))
    }
}

/// The xDS server, on its own runtime; stopped (connections closed) when
/// dropped or by [`XdsServer::stop`].
pub struct XdsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl XdsServer {
    /// Serves `node` the snapshot `(version, resources)` on `addr` (port 0:
    /// any), over TLS with `server`'s certificate, asking every client for a
    /// certificate signed by `ca`.
    pub fn start(addr: SocketAddr, server: &Issued, ca: &str, node: &str, version: &str, resources: Vec<Any>) -> Self {
        let (snapshot, _) = watch::channel((version.to_string(), resources));
        let state = Arc::new(State {
            snapshot,
            node: node.to_string(),
            seen: Mutex::new(Vec::new()),
            nonces: std::sync::atomic::AtomicU64::new(1),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).expect("bind the xDS server");
        let addr = listener.local_addr().unwrap();
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&server.cert, &server.key))
            .client_ca_root(tonic::transport::Certificate::from_pem(ca));
        let service = AggregatedDiscoveryServiceServer::new(Ads(state.clone()));
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("server TLS")
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        XdsServer { addr, state, runtime: Some(runtime) }
    }

    /// Puts a new snapshot in place: pushed to every subscribed stream.
    pub fn set(&self, version: &str, resources: Vec<Any>) {
        self.state.snapshot.send_replace((version.to_string(), resources));
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops serving: the listener and every connection close.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

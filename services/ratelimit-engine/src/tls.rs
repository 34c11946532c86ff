//! TLS from PEM files, as upstream's settings name them: the gRPC
//! listener's (mutual when a client CA is given), the xDS client's, and
//! Redis's. Every file is read and checked at start: a missing or unusable
//! one stops the engine with one line naming the variable and the file.

use crate::settings::{ClientTls, ServerTls, XdsSource};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

fn read(what: &str, path: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what}={path}: {e}"))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(format!("{what}={path}: not a PEM file"));
    }
    Ok(bytes)
}

/// The gRPC listener's TLS: its certificate and key, and when a client CA
/// is given, a certificate from every client, signed by it.
pub fn server_config(tls: &ServerTls) -> Result<ServerTlsConfig, String> {
    let identity = Identity::from_pem(read("GRPC_SERVER_TLS_CERT", &tls.cert)?, read("GRPC_SERVER_TLS_KEY", &tls.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("GRPC_CLIENT_TLS_CACERT", ca)?));
    }
    Ok(config)
}

/// A channel to the xDS server, over TLS when asked (with the client's
/// certificate when given: mutual TLS, as Envoy Gateway's server wants).
/// The connection is made here.
pub async fn xds_channel(source: &XdsSource) -> Result<Channel, String> {
    let scheme = if source.tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", source.server))
        .map_err(|e| format!("CONFIG_GRPC_XDS_SERVER_URL={}: {e}", source.server))?
        .connect_timeout(Duration::from_secs(5))
        // A server gone without closing the connection: TCP keepalive finds
        // it; HTTP/2 pings too, no oftener than gRPC-Go servers allow by
        // default (one per 5 minutes: more gets the connection closed).
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(360))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Some(tls) = &source.tls {
        endpoint = endpoint.tls_config(xds_tls(tls, source.server_san.as_deref())?).map_err(|e| format!("{e}"))?;
    }
    endpoint.connect().await.map_err(|e| {
        let why = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
        format!("cannot connect: {why}")
    })
}

/// The xDS client's TLS settings; `san` checks the server's certificate for
/// that name instead of the URL's host.
pub fn xds_tls(tls: &ClientTls, san: Option<&str>) -> Result<ClientTlsConfig, String> {
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", ca)?)),
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(
            read("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", cert)?,
            read("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", key)?,
        ));
    }
    if let Some(name) = san {
        config = config.domain_name(name);
    }
    Ok(config)
}

/// Redis's TLS files, as the Redis client takes them (`rediss://` URLs).
pub fn redis_certs(tls: &ClientTls) -> Result<redis::TlsCertificates, String> {
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("REDIS_TLS_CLIENT_CERT", cert)?,
            client_key: read("REDIS_TLS_CLIENT_KEY", key)?,
        }),
        (None, None) => None,
        _ => return Err("REDIS_TLS_CLIENT_CERT and REDIS_TLS_CLIENT_KEY: give both or neither".into()),
    };
    let root_cert = tls.ca.as_ref().map(|ca| read("REDIS_TLS_CACERT", ca)).transpose()?;
    Ok(redis::TlsCertificates { client_tls, root_cert })
}

/// Whether a client's certificate (DER, leaf first) is valid for the DNS
/// name `san` (`GRPC_CLIENT_TLS_SAN`).
pub fn names(chain: &[tonic::transport::CertificateDer<'static>], san: &str) -> bool {
    let Some(leaf) = chain.first() else { return false };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = rustls_pki_types::ServerName::try_from(san) else { return false };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that is missing or holds no PEM stops the engine with one
    /// line naming the variable and the path.
    #[test]
    fn an_unusable_file_is_refused_naming_the_variable() {
        let dir = std::env::temp_dir().join(format!("engine-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("tls.crt");
        std::fs::write(&not_pem, "certificate, trust me").unwrap();
        let server = |cert: &str| ServerTls {
            cert: cert.into(),
            key: "/nonexistent/tls.key".into(),
            client_ca: None,
            client_san: None,
        };
        let e = server_config(&server("/nonexistent/tls.crt")).map(|_| ()).unwrap_err();
        assert!(e.starts_with("GRPC_SERVER_TLS_CERT=/nonexistent/tls.crt: "), "{e}");
        let path = not_pem.display().to_string();
        let e = server_config(&server(&path)).map(|_| ()).unwrap_err();
        assert_eq!(e, format!("GRPC_SERVER_TLS_CERT={path}: not a PEM file"));
        let redis = ClientTls { cert: None, key: None, ca: Some(path.clone()) };
        let e = redis_certs(&redis).map(|_| ()).unwrap_err();
        assert_eq!(e, format!("REDIS_TLS_CACERT={path}: not a PEM file"));
        let half = ClientTls { cert: Some(path), key: None, ca: None };
        assert!(redis_certs(&half).is_err_and(|e| e.contains("give both or neither")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

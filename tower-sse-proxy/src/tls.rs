//! TLS with rustls (the `ring` provider): the client side towards https upstreams (built-in
//! webpki roots, plus a CA file), and the server side towards clients (a certificate chain and
//! key from PEM files, ALPN h2 and http/1.1).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The client configuration for https upstreams. ALPN is set by the connector (`h2` only when
/// `_http2`).
///
/// # Errors
///
/// The CA file cannot be read or holds no certificate.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    _http2: bool,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = read_certs(path)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The server configuration for a TLS listener: the chain and key from PEM files, ALPN `h2`
/// then `http/1.1`.
///
/// # Errors
///
/// A file cannot be read, holds no certificate or key, or they do not match.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("{}: no private key: {error}", key.display()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls: {error}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|error| format!("{}: {error}", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("{}: {error}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

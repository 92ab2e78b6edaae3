//! The server's TLS configuration: certificate files or a self-signed certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;
use crate::config::TlsMode;

/// The acceptor and, for the leaf certificate, its `sha256-raw:<hex>` CertName.
pub fn server_config(mode: &TlsMode) -> Result<Option<(Arc<rustls::ServerConfig>, String)>, Error> {
    let (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match mode {
        TlsMode::Plain => return Ok(None),
        TlsMode::Files { cert, key } => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
            if certs.is_empty() {
                return Err(Error::Tls(format!("{}: no certificate", cert.display())));
            }
            let k = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
            (certs, k)
        }
        TlsMode::SelfSigned { names } => {
            let names = if names.is_empty() {
                vec!["localhost".to_owned()]
            } else {
                names.clone()
            };
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| Error::Tls(format!("self-signed certificate: {e}")))?;
            let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
            (vec![ck.cert.der().clone()], PrivateKeyDer::Pkcs8(key))
        }
    };
    let cert_name = chain
        .first()
        .map(|c| meshgate_derp::tls::sha256_cert_name(c.as_ref()))
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Some((Arc::new(config), cert_name)))
}

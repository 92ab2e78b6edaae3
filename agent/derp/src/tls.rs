//! TLS client settings for DERP nodes (reference §2.1): SNI = HostName; the certificate is
//! checked against the public roots (plus an optional extra CA) under `CertName` if given, or,
//! when `CertName` is `sha256-raw:<hex>`, the leaf certificate is pinned by its SHA-256.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::Error;

/// Prefix of a `CertName` that pins a self-signed leaf certificate by its SHA-256.
pub const SHA256_RAW_PREFIX: &str = "sha256-raw:";

/// Parses `sha256-raw:<64 hex>`; `None` for any other form.
pub fn parse_sha256_pin(cert_name: &str) -> Option<[u8; 32]> {
    let hex = cert_name.strip_prefix(SHA256_RAW_PREFIX)?.as_bytes();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The `sha256-raw:<hex>` CertName of a DER certificate.
pub fn sha256_cert_name(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let mut s = String::from(SHA256_RAW_PREFIX);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly one leaf certificate (by SHA-256 of its DER), still checking the handshake
/// signatures so the server must hold that certificate's key.
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinVerifier")
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(TlsError::General(
                "DERP server certificate does not match the sha256-raw pin".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies the chain against the roots, but under `CertName` instead of the SNI host.
#[derive(Debug)]
struct NameOverride {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Builds the client TLS config for a node. `cert_name` is the DerpNode's `CertName` (empty =
/// verify as the SNI host); `extra_ca_pem` holds PEM certificates trusted besides the public
/// roots.
pub fn client_config(
    cert_name: &str,
    extra_ca_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Target(format!("TLS: {e}")))?;
    let config = if let Some(pin) = parse_sha256_pin(cert_name) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
            .with_no_client_auth()
    } else if cert_name.starts_with(SHA256_RAW_PREFIX) {
        return Err(Error::Target(format!(
            "CertName {cert_name:?}: expected sha256-raw:<64 hex>"
        )));
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_ca_pem {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Target(format!("extra CA is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Target("extra CA has no CERTIFICATE block".into()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| Error::Target(format!("extra CA unusable: {e}")))?;
            }
        }
        if cert_name.is_empty() {
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            let name = ServerName::try_from(cert_name.to_owned())
                .map_err(|e| Error::Target(format!("CertName {cert_name:?}: {e}")))?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Target(format!("TLS verifier: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NameOverride { inner, name }))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_parsing() {
        let name = sha256_cert_name(b"cert");
        assert!(name.starts_with("sha256-raw:") && name.len() == 11 + 64);
        let pin = parse_sha256_pin(&name).unwrap();
        assert_eq!(pin, <[u8; 32]>::from(Sha256::digest(b"cert")));
        assert!(parse_sha256_pin("sha256-raw:00").is_none());
        assert!(parse_sha256_pin(&name.replace("sha256-raw:", "sha1:")).is_none());
        assert!(parse_sha256_pin(&format!("sha256-raw:{}", "zz".repeat(32))).is_none());
        assert!(client_config("sha256-raw:12", None).is_err());
        assert!(client_config(&name, None).is_ok());
        assert!(client_config("", None).is_ok());
        assert!(client_config("derp.example.com", Some(b"junk")).is_err());
    }
}

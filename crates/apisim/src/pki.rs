//! The cluster's certificate authority and the API server's serving certificate.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM text could not be parsed.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was parsed.
        what: &'static str,
        /// Parser message.
        detail: String,
    },
    /// rustls refused the certificate or key.
    #[error("TLS configuration rejected the certificate: {0}")]
    Tls(#[from] rustls::Error),
}

/// A CA and one serving certificate signed by it, all as PEM text.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    /// CA certificate (what clients trust: kubeconfig `certificate-authority-data`, the
    /// pods' `ca.crt`).
    pub ca_pem: String,
    /// Serving certificate of the API server.
    pub server_cert_pem: String,
    /// Private key of the serving certificate.
    pub server_key_pem: String,
}

impl ClusterPki {
    /// Generates a fresh CA and a serving certificate valid for `dns_names` and `ips`.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn generate(ca_name: &str, dns_names: &[&str], ips: &[IpAddr]) -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let mut params =
            CertificateParams::new(dns_names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok(Self {
            ca_pem: ca.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        })
    }

    /// A rustls server configuration presenting the serving certificate, offering HTTP/2
    /// and HTTP/1.1 by ALPN.
    ///
    /// # Errors
    /// When the PEM cannot be parsed or rustls rejects it.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| PkiError::Parse {
                    what: "serving certificate",
                    detail: e.to_string(),
                })?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(|e| {
            PkiError::Parse {
                what: "serving key",
                detail: e.to_string(),
            }
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_usable_config() {
        let pki = ClusterPki::generate("test-ca", &["kubernetes"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        pki.server_config().unwrap();
    }
}

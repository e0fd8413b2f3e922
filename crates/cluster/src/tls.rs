//! TLS for the direct carrier: mutual TLS 1.3 with the install's private CA pinned on both
//! sides (ring provider). The client always verifies the server name `kubelan-agent`,
//! whatever address it dialled; the agent accepts only client certificates signed by the CA.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::credentials::Credentials;
pub use crate::error::TlsError;
use crate::names::{AGENT, FILE_TLS_CERT, FILE_TLS_KEY, KEY_CA};

/// The name the agent's certificate is issued for and clients verify.
pub fn agent_server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(AGENT)
            .expect("kubelan-agent is a valid DNS name")
            .to_owned(),
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if v.is_empty() {
        return Err(TlsError::Pem {
            what,
            detail: "no certificate in the PEM text".into(),
        });
    }
    Ok(v)
}

fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what,
        detail: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

impl Credentials {
    /// A client configuration: trusts only the install's CA, presents the client
    /// certificate, TLS 1.3. Connect with [`agent_server_name`] as the server name. ALPN is
    /// left to the caller.
    ///
    /// # Errors
    /// [`TlsError`] when the PEM is invalid or rustls rejects it.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots(&self.ca_pem)?)
            .with_client_auth_cert(
                certs(&self.cert_pem, "client certificate")?,
                key(&self.key_pem, "client key")?,
            )?;
        Ok(cfg)
    }
}

/// The agent's server configuration from PEM text: presents `cert_pem`, requires a client
/// certificate signed by `ca_pem`, TLS 1.3. ALPN is left to the caller.
///
/// # Errors
/// [`TlsError`] when the PEM is invalid or rustls rejects it.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ServerConfig, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider()).build()?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(cert_pem, "agent certificate")?,
            key(key_pem, "agent key")?,
        )?;
    Ok(cfg)
}

/// The agent's server configuration from the mounted Secret: `ca.crt`, `tls.crt` and
/// `tls.key` in `dir` (`/var/run/kubelan/credentials` in the agent pod).
///
/// # Errors
/// [`TlsError::Read`] naming the file that cannot be read, or as [`server_config`].
pub fn server_config_from_dir(dir: &Path) -> Result<ServerConfig, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| TlsError::Read { path, source })
    };
    server_config(&read(KEY_CA)?, &read(FILE_TLS_CERT)?, &read(FILE_TLS_KEY)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::AgentCredentials;

    #[test]
    fn configs_build_and_bad_pem_is_named() {
        let c = AgentCredentials::generate("ns").unwrap();
        c.client().client_config().unwrap();
        server_config(&c.ca_pem, &c.agent_cert_pem, &c.agent_key_pem).unwrap();
        let mut bad = c.client();
        bad.ca_pem = "garbage".into();
        let e = bad.client_config().unwrap_err();
        assert!(e.to_string().contains("CA certificate"), "{e}");
        let e = server_config_from_dir(Path::new("/nonexistent-kubelan")).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
    }
}

//! The agent's credentials: a private CA per install, the agent's serving certificate and
//! one client certificate, kept in the Secret `kubelan-agent`.
//!
//! Clients verify the agent against the pinned CA and the fixed name `kubelan-agent`
//! whatever address they dial (LoadBalancer, NodePort, pod IP), so the certificates never
//! need to know the cluster's addresses and never need to change when they do.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::error::ClusterError;
use crate::names::{AGENT, KEY_AGENT_CERT, KEY_AGENT_KEY, KEY_CA, KEY_CLIENT_CERT, KEY_CLIENT_KEY};

/// How long generated certificates are valid. Re-running install never rotates them;
/// `kubectl delete secret kubelan-agent` + `kubelan install` does.
const VALIDITY_DAYS: i64 = 3650;

/// Everything in the Secret: what the agent and its clients need (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCredentials {
    /// The private CA's certificate.
    pub ca_pem: String,
    /// The agent's serving certificate (SAN DNS `kubelan-agent`).
    pub agent_cert_pem: String,
    /// The agent's private key.
    pub agent_key_pem: String,
    /// The client certificate (CN `kubelan-client`, clientAuth).
    pub client_cert_pem: String,
    /// The client's private key.
    pub client_key_pem: String,
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredentials").finish_non_exhaustive()
    }
}

/// What a client of the agent needs (PEM): the CA to pin and its client certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The private CA's certificate; the agent's certificate must chain to it.
    pub ca_pem: String,
    /// The client certificate.
    pub cert_pem: String,
    /// The client's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl AgentCredentials {
    /// Generates a fresh CA (CN `kubelan agent CA <namespace>`), agent and client
    /// certificates (ECDSA P-256).
    ///
    /// # Errors
    /// [`ClusterError::Generate`] when key generation or signing fails.
    pub fn generate(namespace: &str) -> Result<Self, ClusterError> {
        let now = OffsetDateTime::now_utc();
        let validity = |p: &mut CertificateParams| {
            // Tolerate clocks that are a little behind.
            p.not_before = now - Duration::hours(1);
            p.not_after = now + Duration::days(VALIDITY_DAYS);
        };
        let g = ClusterError::Generate;

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(g)?;
        validity(&mut ca_params);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("kubelan agent CA {namespace}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(g)?)
            .map_err(g)?;

        let mut agent = CertificateParams::new(vec![AGENT.to_string()]).map_err(g)?;
        validity(&mut agent);
        agent.distinguished_name.push(DnType::CommonName, AGENT);
        agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let agent_key = KeyPair::generate().map_err(g)?;
        let agent_cert = agent.signed_by(&agent_key, &ca).map_err(g)?;

        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(g)?;
        validity(&mut client);
        client
            .distinguished_name
            .push(DnType::CommonName, "kubelan-client");
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().map_err(g)?;
        let client_cert = client.signed_by(&client_key, &ca).map_err(g)?;

        Ok(Self {
            ca_pem: ca.pem(),
            agent_cert_pem: agent_cert.pem(),
            agent_key_pem: agent_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// The Secret's `data`.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        [
            (KEY_CA, &self.ca_pem),
            (KEY_AGENT_CERT, &self.agent_cert_pem),
            (KEY_AGENT_KEY, &self.agent_key_pem),
            (KEY_CLIENT_CERT, &self.client_cert_pem),
            (KEY_CLIENT_KEY, &self.client_key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }

    /// The client's part.
    pub fn client(&self) -> Credentials {
        Credentials {
            ca_pem: self.ca_pem.clone(),
            cert_pem: self.client_cert_pem.clone(),
            key_pem: self.client_key_pem.clone(),
        }
    }
}

impl Credentials {
    /// Reads the client's part from a Secret's `data`; `Err` names the first missing or
    /// non-UTF-8 key.
    pub(crate) fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, String> {
        let get = |k: &str| -> Result<String, String> {
            let v = data.get(k).ok_or_else(|| format!("key {k} is missing"))?;
            let s =
                String::from_utf8(v.0.clone()).map_err(|_| format!("key {k} is not PEM text"))?;
            if s.contains("-----BEGIN") {
                Ok(s)
            } else {
                Err(format!("key {k} is not PEM"))
            }
        };
        Ok(Self {
            ca_pem: get(KEY_CA)?,
            cert_pem: get(KEY_CLIENT_CERT)?,
            key_pem: get(KEY_CLIENT_KEY)?,
        })
    }
}

/// Checks that an existing Secret has every key install puts there.
pub(crate) fn check_secret_data(data: Option<&BTreeMap<String, ByteString>>) -> Result<(), String> {
    let data = data.ok_or("it has no data")?;
    for k in [
        KEY_CA,
        KEY_AGENT_CERT,
        KEY_AGENT_KEY,
        KEY_CLIENT_CERT,
        KEY_CLIENT_KEY,
    ] {
        if data.get(k).is_none_or(|v| v.0.is_empty()) {
            return Err(format!("key {k} is missing"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_has_all_keys_and_round_trips() {
        let c = AgentCredentials::generate("ns").unwrap();
        let data = c.to_secret_data();
        check_secret_data(Some(&data)).unwrap();
        assert_eq!(Credentials::from_secret_data(&data).unwrap(), c.client());
        assert!(c.agent_key_pem.contains("PRIVATE KEY"));
        // Two generations differ: nothing is derived deterministically.
        assert_ne!(AgentCredentials::generate("ns").unwrap().ca_pem, c.ca_pem);
        let mut broken = data.clone();
        broken.remove(KEY_CLIENT_KEY);
        assert!(
            check_secret_data(Some(&broken))
                .unwrap_err()
                .contains("client.key")
        );
        assert!(Credentials::from_secret_data(&broken).is_err());
        // Debug output never shows keys.
        assert!(!format!("{:?} {:?}", c, c.client()).contains("PRIVATE"));
    }
}

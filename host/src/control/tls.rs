//! TLS on the control plane: the server side clients connect to, and the
//! client side a daemon uses to forward a state query to another daemon,
//! presenting its own certificate where the other requires one.

use crate::config::ControlTlsConfig;
use anyhow::Context as _;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The control plane's TLS material, read once at start.
#[derive(Clone)]
pub struct ControlTls {
    identity: Identity,
    ca: Option<Certificate>,
    require_client_cert: bool,
}

impl ControlTls {
    /// Reads the files `config` names; an unreadable one is named.
    pub fn load(config: &ControlTlsConfig) -> anyhow::Result<Self> {
        let cert = read_pem("control-tls.cert-file", &config.cert_file)?;
        let key = read_pem("control-tls.key-file", &config.key_file)?;
        let ca = config
            .ca_file
            .as_deref()
            .map(|file| read_pem("control-tls.ca-file", file))
            .transpose()?
            .map(Certificate::from_pem);
        Ok(Self {
            identity: Identity::from_pem(cert, key),
            ca,
            require_client_cert: config.require_client_cert,
        })
    }

    /// Whether every client must present a certificate from the CA: then
    /// the TLS handshake itself keeps out whoever has none.
    pub fn is_mutual(&self) -> bool {
        self.require_client_cert
    }

    /// What the server presents, and requires of clients with mutual TLS.
    pub fn server(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.clone());
        match (&self.ca, self.require_client_cert) {
            (Some(ca), true) => config.client_ca_root(ca.clone()),
            _ => config,
        }
    }

    /// How this daemon connects to another: checking its certificate
    /// against the CA (the system's without one) and presenting its own.
    pub fn peer_client(&self) -> ClientTlsConfig {
        client_tls(self.ca.clone(), Some(self.identity.clone()))
    }
}

/// A TLS client that checks the server's certificate against `ca` (the
/// system's CAs without one) and presents `identity`, if any.
pub(super) fn client_tls(ca: Option<Certificate>, identity: Option<Identity>) -> ClientTlsConfig {
    let config = match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(ca),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    match identity {
        Some(identity) => config.identity(identity),
        None => config,
    }
}

fn read_pem(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("{key}: could not read {}", path.display()))?;
    anyhow::ensure!(
        pem.windows(b"-----BEGIN ".len())
            .any(|w| w == b"-----BEGIN "),
        "{key}: {} holds no PEM block (-----BEGIN ...); give certificates and keys in PEM",
        path.display()
    );
    Ok(pem)
}

/// How a client reaches a daemon over TLS: the CA to check the daemon's
/// certificate against (the system's without one) and, for a daemon that
/// requires it, the client's certificate and key.
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<ClientTlsConfig> {
    let ca = ca_file
        .map(|file| read_pem("--tls-ca", file))
        .transpose()?
        .map(Certificate::from_pem);
    let identity = identity
        .map(|(cert, key)| {
            anyhow::Ok(Identity::from_pem(
                read_pem("--tls-cert", cert)?,
                read_pem("--tls-key", key)?,
            ))
        })
        .transpose()?;
    Ok(client_tls(ca, identity))
}

//! TLS for the customer API (rustls with the ring provider; no OpenSSL):
//! the listener's certificate and key, and the CA the instances check each
//! other's certificates against when they forward. All three files are
//! read again when they change; a new connection gets the new certificate,
//! a failed reload keeps the previous one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::watch::Watched;
use crate::config::ApiConfig;
use crate::sync;

/// Why the TLS files cannot be used. At start-up engage refuses to start;
/// on a reload the previous certificate stays in use until they are fixed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {key} {path}")]
    Read {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind wanted.
    #[error("{key} {path}: {problem}")]
    Pem {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the certificate, the key or the pair.
    #[error("{what}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// `api.tls_server_name` is not a DNS name or IP address.
    #[error("api.tls_server_name {0:?} is not a DNS name or IP address")]
    ServerName(String),
}

/// The API's TLS material, kept current.
pub struct Tls {
    cert: Watched,
    key: Watched,
    ca: Watched,
    paths: [PathBuf; 3],
    provider: Arc<CryptoProvider>,
    serving: RwLock<Arc<CertifiedKey>>,
    peers: RwLock<Arc<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.paths[0]).finish_non_exhaustive()
    }
}

/// The crypto provider engage uses: ring (builds in seconds, no cmake).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration for plain-HTTP peers (never used for a TLS
/// handshake: it trusts nothing).
pub fn plain_peer_config() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(RootCertStore::empty()).with_no_client_auth());
    // The ring provider supports the default protocol versions.
    Arc::new(config.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3")))
}

impl Tls {
    /// The TLS material named by `config`, or `None` without `api.tls_cert`.
    pub fn load(config: &ApiConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        if !config.tls() {
            return Ok(None);
        }
        let paths = [PathBuf::from(&config.tls_cert), PathBuf::from(&config.tls_key), PathBuf::from(&config.tls_ca)];
        let server_name = match config.tls_server_name.as_str() {
            "" => None,
            name => Some(ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.into()))?),
        };
        let [cert, key, ca] = [&paths[0], &paths[1], &paths[2]].map(|p| Watched::new(p));
        let read = |w: &Watched, k: &'static str, p: &Path| {
            w.read().map_err(|source| TlsError::Read { key: k, path: p.into(), source })
        };
        let provider = provider();
        let certified = certified_key(
            &provider,
            &paths,
            &read(&cert, "api.tls_cert", &paths[0])?,
            &read(&key, "api.tls_key", &paths[1])?,
        )?;
        let peers = peer_config(&provider, &paths[2], &read(&ca, "api.tls_ca", &paths[2])?)?;
        Ok(Some(Arc::new(Tls {
            cert,
            key,
            ca,
            paths,
            provider,
            serving: RwLock::new(Arc::new(certified)),
            peers: RwLock::new(peers),
            server_name,
        })))
    }

    /// The listener's configuration: this certificate, HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls { what: "setting up the API's TLS", source })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// How this instance checks the others' certificates.
    pub fn peer_config(&self) -> Arc<ClientConfig> {
        sync::read(&self.peers).clone()
    }

    /// The name peers' certificates must be valid for, when not their
    /// URL's host.
    pub fn peer_server_name(&self) -> Option<ServerName<'static>> {
        self.server_name.clone()
    }

    /// Reads the files again if any changed: `Ok(true)` when the new
    /// material is in use. On an error the previous material stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let keys = ["api.tls_cert", "api.tls_key", "api.tls_ca"];
        let mut changed = false;
        for (i, w) in [&self.cert, &self.key, &self.ca].into_iter().enumerate() {
            let c =
                w.changed().map_err(|source| TlsError::Read { key: keys[i], path: self.paths[i].clone(), source })?;
            changed |= c.is_some();
        }
        if !changed {
            return Ok(false);
        }
        let read = |i: usize| {
            std::fs::read(&self.paths[i]).map_err(|source| TlsError::Read {
                key: keys[i],
                path: self.paths[i].clone(),
                source,
            })
        };
        let certified = certified_key(&self.provider, &self.paths, &read(0)?, &read(1)?)?;
        let peers = peer_config(&self.provider, &self.paths[2], &read(2)?)?;
        *sync::write(&self.serving) = Arc::new(certified);
        *sync::write(&self.peers) = peers;
        Ok(true)
    }
}

impl ResolvesServerCert for Tls {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(sync::read(&self.serving).clone())
    }
}

fn certified_key(
    provider: &CryptoProvider,
    paths: &[PathBuf; 3],
    cert: &[u8],
    key: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        key: "api.tls_cert",
        path: paths[0].clone(),
        problem: e.to_string(),
    })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            key: "api.tls_cert",
            path: paths[0].clone(),
            problem: "no CERTIFICATE in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
        key: "api.tls_key",
        path: paths[1].clone(),
        problem: format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|source| TlsError::Rustls { what: "api.tls_key does not suit api.tls_cert", source })
}

fn peer_config(provider: &Arc<CryptoProvider>, path: &Path, ca: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let pem = |problem: String| TlsError::Pem { key: "api.tls_ca", path: path.into(), problem };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| pem(e.to_string()))?;
        roots.add(cert).map_err(|e| pem(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(pem("no CERTIFICATE in it".into()));
    }
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { what: "setting up TLS to the other instances", source })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

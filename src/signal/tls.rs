//! HTTPS and WSS served directly (rustls on ring): a certificate and key from PEM files
//! (`server.tls_cert`, `server.tls_key`), or a self-signed certificate made at start-up for
//! this machine's names and addresses (`facerelay serve --dev-tls`), so that a phone on the same
//! network can use its camera (browsers allow it only in a secure context). The self-signed
//! key lives in memory only.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A server TLS configuration, and what to tell the operator about its certificate.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// The names and addresses a self-signed certificate covers (empty for a loaded one).
    pub names: Vec<String>,
    /// Of a self-signed certificate: SHA-256 of its public key (SubjectPublicKeyInfo),
    /// base64, what Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {message}")]
    Read {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Certificate(String),
}

/// Loads a certificate chain and its private key (PEM).
pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let read = |what, path: &Path, message: String| TlsError::Read {
        what,
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read("server.tls_cert", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read("server.tls_cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read(
            "server.tls_cert",
            cert,
            "no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| read("server.tls_key", key, e.to_string()))?;
    Ok(Tls {
        config: server_config(chain, key)?,
        names: Vec::new(),
        spki_sha256: None,
    })
}

/// A self-signed certificate for `localhost`, the loopback addresses, `extra` and this
/// machine's address on its default route.
pub fn self_signed(extra: &[IpAddr]) -> Result<Tls, TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        Ipv4Addr::LOCALHOST.to_string(),
        "::1".to_owned(),
    ];
    let mut ips: Vec<IpAddr> = extra
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    ips.extend(default_route_address());
    for ip in ips {
        let ip = ip.to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    let certified = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| TlsError::Certificate(format!("cannot make a certificate: {e}")))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let spki = {
        use base64::Engine;
        use rcgen::PublicKeyData;
        let digest = Sha256::digest(certified.signing_key.subject_public_key_info());
        base64::engine::general_purpose::STANDARD.encode(digest)
    };
    Ok(Tls {
        config: server_config(vec![cert], key)?,
        names,
        spki_sha256: Some(spki),
    })
}

/// The address of the interface the default route leaves by. A UDP `connect` only picks the
/// route; no packet is sent.
fn default_route_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Certificate(format!("certificate and key do not fit: {e}")))?;
    // The server speaks HTTP/1.1 (WebSocket upgrades included).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_covers_loopback_and_loads_back_from_pem() {
        let tls = self_signed(&["192.0.2.7".parse().unwrap()]).unwrap();
        for name in ["localhost", "127.0.0.1", "::1", "192.0.2.7"] {
            assert!(
                tls.names.iter().any(|n| n == name),
                "{name}: {:?}",
                tls.names
            );
        }
        assert_eq!(tls.spki_sha256.as_deref().map(str::len), Some(44));
        // Written out as PEM files, the same kind of certificate loads.
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("facerelay-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        assert!(load(&cert, &key).is_ok());
        // A key that is not the certificate's, or a file that is not PEM, is a clear error.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let e = load(&cert, &key).err().expect("mismatched key refused");
        assert!(e.to_string().contains("do not fit"), "{e}");
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = load(&cert, &key).err().expect("no certificate refused");
        assert!(e.to_string().contains("server.tls_cert"), "{e}");
        let e = load(&dir.join("absent.pem"), &key).err().unwrap();
        assert!(e.to_string().contains("absent.pem"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

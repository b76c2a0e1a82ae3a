//! TLS to PostgreSQL, by libpq's conventions (rustls underneath, as for the providers):
//!
//! | `sslmode`     | encrypted            | server certificate checked                         |
//! |---------------|----------------------|----------------------------------------------------|
//! | `disable`     | no                   | —                                                  |
//! | `prefer` (default) | if the server offers it | as `verify-ca` when a root file exists, else not |
//! | `require`     | yes                  | as `verify-ca` when a root file exists, else not   |
//! | `verify-ca`   | yes                  | chain to a root of `sslrootcert`                   |
//! | `verify-full` | yes                  | chain, and the certificate names the host          |
//!
//! The root file is `sslrootcert` or `~/.postgresql/root.crt`; `sslrootcert=system` takes the
//! public web roots. `verify-ca`/`verify-full` without any root file is an error, as in libpq.
//! A Unix-socket host never uses TLS.

use crate::store::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What the driver is told (it knows only whether to try and whether to insist).
    pub fn driver(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as D;
        match self {
            SslMode::Disable => D::Disable,
            SslMode::Prefer => D::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => D::Require,
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the public web roots.
    System,
}

/// The TLS settings of a locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root: Option<RootCert>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL query or key=value form;
/// the driver does not know `verify-ca`/`verify-full` or root files) and returns the rest.
pub fn split_tls(conn: &str) -> Result<(String, TlsSettings), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |k: &str, v: &str| -> Result<bool, String> {
        match k {
            "sslmode" => {
                mode = Some(SslMode::parse(v).ok_or_else(|| {
                    format!(
                        "sslmode={v} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    )
                })?);
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(if v == "system" {
                    RootCert::System
                } else {
                    RootCert::File(PathBuf::from(v))
                });
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if super::is_postgres_url(conn) {
        let mut u = url::Url::parse(conn.trim()).map_err(|e| format!("not a URL: {e}"))?;
        let mut kept = Vec::new();
        for (k, v) in u.query_pairs() {
            if !take(&k, &v)? {
                kept.push((k.into_owned(), v.into_owned()));
            }
        }
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
        u.to_string()
    } else {
        let mut kept = Vec::new();
        for kv in conn.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if !take(k, v)? {
                kept.push(kv);
            }
        }
        kept.join(" ")
    };
    let mode = mode.unwrap_or(SslMode::Prefer);
    let root = root.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".postgresql/root.crt");
        p.is_file().then_some(RootCert::File(p))
    });
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root.is_none() {
        return Err(
            "sslmode=verify-ca/verify-full needs the roots to trust: sslrootcert=FILE (or ~/.postgresql/root.crt, or sslrootcert=system for the public web roots)"
                .into(),
        );
    }
    Ok((rest, TlsSettings { mode, root }))
}

fn tls_err(what: String) -> StoreError {
    StoreError::Postgres {
        what: "TLS".into(),
        reason: what,
    }
}

/// The rustls connector for these settings.
pub fn connector(s: &TlsSettings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let webpki = match &s.root {
        None => None,
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            match root {
                RootCert::System => {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
                RootCert::File(p) => {
                    let certs = CertificateDer::pem_file_iter(p)
                        .map_err(|e| tls_err(format!("sslrootcert {}: {e}", p.display())))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| tls_err(format!("sslrootcert {}: {e}", p.display())))?;
                    if certs.is_empty() {
                        return Err(tls_err(format!(
                            "sslrootcert {}: no PEM certificate in it",
                            p.display()
                        )));
                    }
                    for c in certs {
                        roots
                            .add(c)
                            .map_err(|e| tls_err(format!("sslrootcert {}: {e}", p.display())))?;
                    }
                }
            }
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| tls_err(e.to_string()))?,
            )
        }
    };
    let verifier = Verifier {
        webpki,
        check_name: s.mode == SslMode::VerifyFull,
        provider,
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The server certificate check of one `sslmode`. Without roots (`require`/`prefer` and no root
/// file: libpq's "encrypted, not checked") any certificate is taken; with roots the chain is
/// checked, and for `verify-full` the host name too. The handshake's signatures are always
/// checked against the certificate the server sent.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

//! Lab-only key material, embedded so scenarios are deterministic and `clawback demo` needs no
//! setup. These keys protect nothing: they exist only to exercise the real signature checks of
//! the client-assertion and service-account flows against the lab.

/// Microsoft app certificate (PEM) used for client assertions against the lab.
pub const MS_APP_CERTIFICATE: &str = include_str!("keys/ms-app.crt");
/// Its private key (PKCS#1 PEM).
pub const MS_APP_PRIVATE_KEY: &str = include_str!("keys/ms-app.key");
/// Its public key (SPKI PEM), which the lab verifies assertions with.
pub const MS_APP_PUBLIC_KEY: &str = include_str!("keys/ms-app.pub.pem");
/// Google service-account private key (PKCS#8 PEM).
pub const GOOGLE_SA_PRIVATE_KEY: &str = include_str!("keys/google-sa.key");
/// Its public key (SPKI PEM).
pub const GOOGLE_SA_PUBLIC_KEY: &str = include_str!("keys/google-sa.pub.pem");
/// A key the lab does not know: tests sign with it to prove bad signatures are refused.
pub const ROGUE_PRIVATE_KEY: &str = include_str!("keys/rogue.key");

/// DER bytes of a PEM certificate (empty when the PEM is malformed).
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap_or_default()
}

/// DER of the lab's Microsoft app certificate.
pub fn ms_app_certificate_der() -> Vec<u8> {
    pem_to_der(MS_APP_CERTIFICATE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_certificate_decodes() {
        assert!(super::ms_app_certificate_der().len() > 500);
    }
}

//! Trust in one CA file only. `SslConnector::builder` starts from the system's CAs, and with
//! those any public CA could vouch for a host that claims the peer's name.

use openssl::x509::X509;
use openssl::x509::store::{X509Store, X509StoreBuilder};

/// A certificate store holding the PEM certificates in `pem`, and nothing else.
pub fn trusting_only(pem: &[u8]) -> Result<X509Store, String> {
    let certs = X509::stack_from_pem(pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for cert in certs {
        store.add_cert(cert).map_err(|e| e.to_string())?;
    }
    Ok(store.build())
}

/// [`trusting_only`] the certificates of the PEM file at `path`; the error names the file.
pub fn trusting_only_file(path: &std::path::Path) -> Result<X509Store, String> {
    std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| trusting_only(&pem))
        .map_err(|e| format!("CA file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::stack::Stack;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509NameBuilder, X509StoreContext};

    fn self_signed_ca(name: &str) -> X509 {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&subject).unwrap();
        cert.set_issuer_name(&subject).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let ca = BasicConstraints::new().critical().ca().build().unwrap();
        cert.append_extension(ca).unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        cert.build()
    }

    fn verifies(store: &X509Store, cert: &X509) -> bool {
        let mut context = X509StoreContext::new().unwrap();
        let chain = Stack::new().unwrap();
        context
            .init(store, cert, &chain, |c| c.verify_cert())
            .unwrap()
    }

    #[test]
    fn only_the_given_certificates_are_trusted() {
        let ours = self_signed_ca("the link's CA");
        let store = trusting_only(&ours.to_pem().unwrap()).unwrap();
        assert!(verifies(&store, &ours));
        assert!(!verifies(&store, &self_signed_ca("a stranger")));
        // A root the system trusts is not trusted here (when the system has a bundle to test).
        let system_roots = std::fs::read("/etc/ssl/certs/ca-certificates.crt")
            .map(|pem| X509::stack_from_pem(&pem).unwrap_or_default())
            .unwrap_or_default();
        let mut with_system = X509StoreBuilder::new().unwrap();
        with_system.set_default_paths().unwrap();
        let with_system = with_system.build();
        if let Some(root) = system_roots.iter().find(|r| verifies(&with_system, r)) {
            assert!(!verifies(&store, root));
        }
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        assert!(trusting_only(b"not a certificate").is_err());
    }
}

//! TLS for the terminal switch and its simulator: the server side from the gateway's certificate
//! files, a self-signed certificate for tests, and the client connector.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};
use std::path::Path;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the switch can speak the protocol over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// The switch's TLS acceptor from PEM files (in production `[http] tls_cert` and `tls_key`).
pub fn acceptor_from_files(cert: &Path, key: &Path) -> anyhow::Result<SslAcceptor> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    builder
        .set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    builder
        .check_private_key()
        .map_err(|e| anyhow::anyhow!("{} does not match {}: {e}", key.display(), cert.display()))?;
    Ok(builder.build())
}

/// A fresh self-signed certificate for `host` (a DNS name or an IP address): the acceptor and the
/// certificate's PEM, which clients pin as their CA.
pub fn self_signed_acceptor(host: &str) -> anyhow::Result<(SslAcceptor, Vec<u8>)> {
    let (cert, key) = self_signed_cert(host)?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_certificate(&cert)?;
    builder.set_private_key(&key)?;
    builder.check_private_key()?;
    Ok((builder.build(), cert.to_pem()?))
}

/// The PEMs of a fresh self-signed certificate for `host` and its private key.
pub fn self_signed_pem(host: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (cert, key) = self_signed_cert(host)?;
    Ok((cert.to_pem()?, key.private_key_to_pem_pkcs8()?))
}

fn self_signed_cert(host: &str) -> anyhow::Result<(X509, PKey<openssl::pkey::Private>)> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", host)?;
    let name = name.build();
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    cert.set_serial_number(&serial)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(30)?;
    cert.set_not_before(&not_before)?;
    cert.set_not_after(&not_after)?;
    let mut san = SubjectAlternativeName::new();
    if host.parse::<std::net::IpAddr>().is_ok() {
        san.ip(host);
    } else {
        san.dns(host);
    }
    let san = san.build(&cert.x509v3_context(None, None))?;
    cert.append_extension(san)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok((cert.build(), key))
}

/// How a terminal checks the switch's certificate.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// Plain TCP (`--no-tls`, for switches configured with `tls = false`).
    Off,
    /// Trust only this CA (or self-signed certificate), PEM.
    Ca(Vec<u8>),
    /// Trust the system's CAs.
    System,
    /// Accept any certificate (`--insecure`; tests and demos only).
    Insecure,
}

/// Opens the TLS session of a terminal to the switch at `host`.
pub async fn connect_client(
    tcp: tokio::net::TcpStream,
    host: &str,
    tls: &ClientTls,
) -> anyhow::Result<BoxIo> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    match tls {
        ClientTls::Off => return Ok(Box::new(tcp)),
        ClientTls::Ca(pem) => builder.set_cert_store(
            payhub_actors::tls_trust::trusting_only(pem).map_err(anyhow::Error::msg)?,
        ),
        ClientTls::System => {}
        ClientTls::Insecure => builder.set_verify(SslVerifyMode::NONE),
    }
    let mut config = builder.build().configure()?;
    if host.parse::<std::net::IpAddr>().is_ok() {
        // IP addresses are matched against the certificate's IP SANs, and SNI carries no IPs.
        config.set_use_server_name_indication(false);
    }
    let ssl = config.into_ssl(host)?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp)?;
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("TLS handshake with the switch failed: {e}"))?;
    Ok(Box::new(stream))
}

/// The server side of the TLS handshake.
pub async fn accept_server(
    acceptor: &SslAcceptor,
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<BoxIo> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp)?;
    Pin::new(&mut stream)
        .accept()
        .await
        .map_err(|e| anyhow::anyhow!("TLS handshake failed: {e}"))?;
    Ok(Box::new(stream))
}

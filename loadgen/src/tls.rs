//! TLS settings: the `--tls*` flags turned into one rustls client
//! configuration, built once per run and shared by every connection.
//!
//! The gateway speaks TLS 1.2 and 1.3 through rustls with the ring
//! provider; the load generator uses the same library and provider so that
//! both ends negotiate what a real deployment would, and the figures
//! compare transports, not TLS stacks.
//!
//! Session resumption is off: every connection pays for a full handshake,
//! as each device does on its first connection. A shared ticket cache would
//! let a few thousand simulated devices resume sessions that other devices
//! opened, which no real client can, and would make the cost of a storm of
//! new connections look lower than it is.
//!
//! `--tls-insecure` accepts any certificate (the handshake signatures are
//! still checked, so the key exchange is sound, but the peer is not
//! authenticated): for benchmarks against self-signed certificates only.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

use crate::cli::Common;

/// What connections need to speak TLS.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    /// The client configuration every connection shares.
    pub(crate) config: Arc<ClientConfig>,
    /// `--tls-server-name`; None: each target's IP address.
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// The TLS settings the flags ask for: None without `--tls`; Err with a
/// one-line reason for a combination that cannot work or a CA file that
/// cannot be used.
pub(crate) fn settings(c: &Common) -> Result<Option<TlsSettings>, String> {
    if !c.tls {
        let stray = [
            ("--tls-ca", c.tls_ca.is_some()),
            ("--tls-insecure", c.tls_insecure),
            ("--tls-server-name", c.tls_server_name.is_some()),
        ];
        if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
            return Err(format!("{flag} needs --tls"));
        }
        return Ok(None);
    }
    let server_name = match &c.tls_server_name {
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| {
            format!("--tls-server-name `{n}`: neither a DNS name nor an IP address")
        })?),
        None => None,
    };
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = match (&c.tls_ca, c.tls_insecure) {
        (Some(_), true) => {
            return Err("--tls-ca and --tls-insecure exclude each other".into());
        }
        (None, false) => {
            return Err(
                "--tls needs --tls-ca <PEM> (the certificates to trust) or --tls-insecure".into(),
            );
        }
        (Some(path), false) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(Some(TlsSettings {
        config: Arc::new(config),
        server_name,
    }))
}

/// The certificates of a PEM file, as trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, String> {
    let at = |e: &dyn std::fmt::Display| format!("--tls-ca {}: {e}", path.display());
    // Read first: an unreadable file is reported as such, not as bad PEM.
    let pem = std::fs::read(path).map_err(|e| at(&e))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| at(&e))?;
        store.add(cert).map_err(|e| at(&e))?;
    }
    if store.is_empty() {
        return Err(at(&"no certificate in it"));
    }
    Ok(store)
}

/// Accepts any certificate; checks the handshake signatures with the
/// provider's algorithms (`--tls-insecure`).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;
    use crate::Cli;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loadgen-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("written");
        p
    }

    fn parse(args: &[&str]) -> Common {
        let mut argv = vec!["imgate-loadgen", "idle"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").common
    }

    fn error(args: &[&str]) -> String {
        settings(&parse(args)).expect_err("refused")
    }

    #[test]
    fn tls_is_off_by_default() {
        assert!(settings(&parse(&[])).expect("fine").is_none());
    }

    #[test]
    fn tls_flags_without_tls_are_refused() {
        assert_eq!(error(&["--tls-ca", "ca.pem"]), "--tls-ca needs --tls");
        assert_eq!(error(&["--tls-insecure"]), "--tls-insecure needs --tls");
        assert_eq!(
            error(&["--tls-server-name", "gw.example"]),
            "--tls-server-name needs --tls"
        );
    }

    #[test]
    fn tls_needs_exactly_one_way_to_trust() {
        assert!(error(&["--tls"]).contains("--tls-ca <PEM>"));
        let e = error(&["--tls", "--tls-insecure", "--tls-ca", "ca.pem"]);
        assert!(e.contains("exclude each other"), "{e}");
    }

    #[test]
    fn an_unusable_ca_file_is_refused() {
        let missing = std::env::temp_dir().join("loadgen-tls-unit-no-such-file.pem");
        let e = error(&["--tls", "--tls-ca", &missing.to_string_lossy()]);
        assert!(
            e.starts_with("--tls-ca ") && e.contains("No such file"),
            "{e}"
        );
        let empty = temp("empty.pem", "");
        let e = error(&["--tls", "--tls-ca", &empty.to_string_lossy()]);
        assert!(e.ends_with("no certificate in it"), "{e}");
        let key_only = temp(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let e = error(&["--tls", "--tls-ca", &key_only.to_string_lossy()]);
        assert!(e.ends_with("no certificate in it"), "{e}");
        let broken = temp(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = error(&["--tls", "--tls-ca", &broken.to_string_lossy()]);
        assert!(e.starts_with("--tls-ca "), "{e}");
        let dir = std::env::temp_dir();
        let e = error(&["--tls", "--tls-ca", &dir.to_string_lossy()]);
        assert!(e.starts_with("--tls-ca "), "{e}");
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        let e = error(&["--tls", "--tls-insecure", "--tls-server-name", "not a name"]);
        assert!(e.contains("neither a DNS name"), "{e}");
    }

    #[test]
    fn a_usable_combination_builds_one_config() {
        let s = settings(&parse(&[
            "--tls",
            "--tls-insecure",
            "--tls-server-name",
            "gw.example",
        ]))
        .expect("fine")
        .expect("on");
        assert_eq!(
            s.server_name,
            Some(ServerName::try_from("gw.example").expect("name").to_owned())
        );
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("a certificate");
        let ca = temp("ca.pem", &cert.cert.pem());
        let s = settings(&parse(&["--tls", "--tls-ca", &ca.to_string_lossy()]))
            .expect("fine")
            .expect("on");
        assert_eq!(s.server_name, None);
        assert!(s.config.alpn_protocols.is_empty());
    }
}

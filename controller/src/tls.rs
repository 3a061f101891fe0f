//! The controller's TLS identity: an operator's certificate, or a self-signed one made on
//! first start and kept in the data directory. Its SHA-256 fingerprint lets gateways and
//! clients pin it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the certificate and key live, and the certificate's fingerprint.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// SHA-256 of the leaf certificate's DER, as colon-separated upper-case hex.
    pub fingerprint: String,
    /// Whether the controller generated it.
    pub self_signed: bool,
}

/// Uses the given certificate and key, or makes (once) a self-signed pair in `data_dir/tls`.
pub(crate) fn load_or_create(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    extra_names: &[String],
) -> anyhow::Result<TlsIdentity> {
    let (cert_path, key_path, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned(), false),
        (None, None) => {
            let dir = data_dir.join("tls");
            let cert_path = dir.join("cert.pem");
            let key_path = dir.join("key.pem");
            if !cert_path.exists() || !key_path.exists() {
                generate(&dir, &cert_path, &key_path, extra_names)?;
            }
            (cert_path, key_path, true)
        }
        _ => anyhow::bail!(
            "give both --tls-cert and --tls-key, or neither for a self-signed certificate"
        ),
    };
    let pem = std::fs::read(&cert_path)
        .with_context(|| format!("reading the TLS certificate {}", cert_path.display()))?;
    let fingerprint = fingerprint_of_pem(&pem)?;
    Ok(TlsIdentity {
        cert_path,
        key_path,
        fingerprint,
        self_signed,
    })
}

fn generate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    extra_names: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    names.extend(extra_names.iter().cloned());
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    std::fs::write(cert_path, certified.cert.pem()).context("writing the certificate")?;
    write_private(key_path, certified.key_pair.serialize_pem().as_bytes())
        .context("writing the private key")?;
    Ok(())
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(bytes)
}

/// The SHA-256 fingerprint of the first certificate in a PEM file.
pub(crate) fn fingerprint_of_pem(pem: &[u8]) -> anyhow::Result<String> {
    let der =
        rustls_pemfile_first_cert(pem).context("the certificate file holds no PEM certificate")?;
    Ok(fingerprint_of_der(&der))
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…`.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    trust::Fingerprint::of(der).to_string()
}

fn rustls_pemfile_first_cert(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .map(|c| c.to_vec())
}

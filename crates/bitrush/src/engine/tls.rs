//! TLS for HTTPS trackers and web seeds (rustls with ring, through reqwest): one client
//! configuration trusting the certificate authorities, and the certificate failures users meet,
//! in plain words.
//!
//! Invariants: the authorities are loaded once per process, from `SSL_CERT_FILE` and/or
//! `SSL_CERT_DIR` when either is set, else from the system's store (on Debian the
//! ca-certificates bundle); certificates rustls cannot use as trust anchors are skipped (system
//! stores hold a few), and an empty result is an error for HTTPS announces, never a silent
//! "trust nothing". Nothing here panics on what a server sends.

use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};

/// Why no certificate authority is available to check HTTPS trackers against.
#[derive(Debug, Clone)]
pub struct TrustRootsError {
    /// Where we looked: `SSL_CERT_FILE=…`, `SSL_CERT_DIR=…` or the system store.
    origin: String,
    /// What went wrong reading it, or that it held no usable certificate.
    problem: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl std::fmt::Display for TrustRootsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no certificate authority to check HTTPS trackers against (from {}): {}",
            self.origin, self.problem
        )
    }
}

impl StdError for TrustRootsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// What went wrong reading the store, and its cause (the store's own error text repeats its
/// cause's, so the cause is taken out of it).
fn store_problem(e: rustls_native_certs::Error) -> (String, Arc<dyn StdError + Send + Sync>) {
    use rustls_native_certs::ErrorKind;
    match e.kind {
        ErrorKind::Io { inner, path } => {
            (format!("cannot read {}", path.display()), Arc::new(inner))
        }
        ErrorKind::Pem(pem) => ("bad PEM".to_string(), Arc::new(pem)),
        ErrorKind::Os(os) => (e.context.to_string(), Arc::from(os)),
        _ => (e.context.to_string(), Arc::new(e)),
    }
}

/// A client builder for HTTP(S) requests to trackers and web seeds, trusting the authorities
/// (loaded once, the TLS configuration shared by every client: building one per announce
/// parsed every authority each time). Without them only `https` requests fail here; a plain
/// HTTP request that redirects to HTTPS then fails its certificate check.
pub fn client_builder(https: bool) -> Result<reqwest::ClientBuilder, TrustRootsError> {
    match shared_config() {
        Ok(config) => Ok(reqwest::Client::builder().use_preconfigured_tls((**config).clone())),
        Err(e) if https => Err(e.clone()),
        Err(_) => Ok(reqwest::Client::builder()),
    }
}

/// Whether HTTPS requests can be made: the authorities loaded (the error says why not).
pub fn https_ready() -> Result<(), TrustRootsError> {
    shared_config().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// The TLS configuration every client shares, built on first use.
fn shared_config() -> &'static Result<Arc<rustls::ClientConfig>, TrustRootsError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, TrustRootsError>> = OnceLock::new();
    CONFIG.get_or_init(client_config)
}

fn client_config() -> Result<Arc<rustls::ClientConfig>, TrustRootsError> {
    let roots = load_trust_roots()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustRootsError {
            origin: roots_origin(),
            problem: "no TLS version to offer".to_string(),
            source: Some(Arc::new(e)),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where the authorities come from, as the environment says.
fn roots_origin() -> String {
    let set =
        |name: &str| std::env::var_os(name).map(|v| format!("{name}={}", v.to_string_lossy()));
    let named: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter_map(set)
        .collect();
    if named.is_empty() {
        "the system store".to_string()
    } else {
        named.join(" and ")
    }
}

fn load_trust_roots() -> Result<rustls::RootCertStore, TrustRootsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    // Certificates rustls cannot use as trust anchors are skipped (system stores hold a few).
    let (_added, _skipped) = roots.add_parsable_certificates(found.certs);
    for e in &found.errors {
        tracing::debug!(error = %e, "skipped part of the certificate store");
    }
    if roots.is_empty() {
        let (problem, source) = match found.errors.into_iter().next().map(store_problem) {
            Some((problem, source)) => (problem, Some(source)),
            None => ("no usable certificate in it".to_string(), None),
        };
        return Err(TrustRootsError {
            origin: roots_origin(),
            problem,
            source,
        });
    }
    tracing::debug!(
        authorities = roots.len(),
        "loaded the trusted certificate authorities"
    );
    Ok(roots)
}

/// The TLS failure behind a request error, if that is what failed: rustls errors reach us
/// wrapped in `std::io::Error`s, whose `source()` skips the error they carry.
pub fn tls_failure<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = tls_failure(inner) {
                return Some(tls);
            }
        }
        next = err.source();
    }
    None
}

/// What is wrong with a refused certificate, to follow "TLS certificate ".
pub fn certificate_problem(e: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "not trusted (no known certificate authority signed it)",
        C::BadSignature => "not trusted (its signature does not verify)",
        C::Expired | C::ExpiredContext { .. } => "expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet",
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "for another name (wrong host name)"
        }
        C::Revoked => "revoked",
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "not meant for a server",
        C::BadEncoding => "malformed",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Outer(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            tls.clone(),
        ));
        assert_eq!(tls_failure(&wrapped), Some(&tls));
        assert_eq!(tls_failure(&tls), Some(&tls));
        let plain = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_failure(&plain), None);
    }

    #[test]
    fn certificate_problems_in_words() {
        use rustls::CertificateError as C;
        assert!(certificate_problem(&C::UnknownIssuer).starts_with("not trusted"));
        assert_eq!(certificate_problem(&C::Expired), "expired");
        assert!(certificate_problem(&C::NotValidForName).contains("wrong host name"));
        assert_eq!(
            certificate_problem(&C::ApplicationVerificationFailure),
            "refused"
        );
    }
}

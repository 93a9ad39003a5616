//! TLS on the listeners of every Agora binary: the settings, a rustls acceptor
//! whose certificate (and client CAs, for mutual TLS) is read from PEM files and
//! read again when they change or on SIGHUP, and the connections a listener
//! accepts, plaintext or TLS, each still knowing its peer's address.
//!
//! Without the settings nothing changes: connections are plaintext TCP.

use std::{
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use rustls::{ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    task::JoinSet,
};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

use crate::pem_files::{self, Followed, PemFileError};

/// A TLS handshake not done by then is dropped, so a silent client holds nothing
/// but its own socket.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once on one listener; past this, accepting waits.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Where a listener's certificate comes from, if it serves TLS.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) served on every listener; with
    /// TLS_KEY_FILE. Unset: plaintext.
    #[arg(long, env = "TLS_CERT_FILE", value_parser = crate::client::path_or_empty())]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY_FILE", value_parser = crate::client::path_or_empty())]
    pub tls_key_file: Option<PathBuf>,
    /// PEM bundle of CAs: when set, mutual TLS; only clients presenting a
    /// certificate issued by one of them complete the handshake.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", value_parser = crate::client::path_or_empty())]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Seconds between two looks at the files' modification times; a changed file
    /// (or SIGHUP) makes new connections use what it now holds.
    #[arg(long, env = "TLS_RELOAD_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_reload_secs: u64,
}

impl Default for TlsArgs {
    fn default() -> Self {
        Self {
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_reload_secs: 5,
        }
    }
}

impl TlsArgs {
    /// The files to serve TLS from; `None` for plaintext.
    pub fn files(&self) -> Result<Option<TlsFiles>, TlsError> {
        // Empty is unset (`${TLS_CERT_FILE:-}` in a compose file).
        let set = |path: &Option<PathBuf>| path.clone().filter(|path| !path.as_os_str().is_empty());
        let client_ca = set(&self.tls_client_ca_file);
        match (set(&self.tls_cert_file), set(&self.tls_key_file)) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_some() => Err(TlsError::ClientCaWithoutCertificate),
            (None, None) => Ok(None),
            _ => Err(TlsError::CertificateWithoutKey),
        }
    }

    /// Reads the files and, when they are set, returns the acceptor every
    /// listener of this binary shares, already watching the files and SIGHUP
    /// (so it needs a Tokio runtime).
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, TlsError> {
        let Some(files) = self.files()? else {
            return Ok(None);
        };
        let acceptor = TlsAcceptor::load(files)?;
        acceptor.watch(Duration::from_secs(self.tls_reload_secs));
        Ok(Some(acceptor))
    }
}

/// The PEM files one acceptor is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// Why the TLS files cannot be used; each names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")]
    CertificateWithoutKey,
    #[error("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE: mutual TLS is TLS first")]
    ClientCaWithoutCertificate,
    #[error(transparent)]
    File(#[from] PemFileError),
}

/// Accepts TLS connections with the certificate the files held when last read.
/// Clones share one configuration, so one reload serves every listener.
#[derive(Clone)]
pub struct TlsAcceptor {
    shared: Arc<Shared>,
}

struct Shared {
    files: TlsFiles,
    /// What new connections get; connections in flight keep the one they began with.
    current: RwLock<Arc<ServerConfig>>,
    /// The files as they were when first read, until [`TlsAcceptor::watch`]
    /// follows them from there.
    followed: Mutex<Option<Followed>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("files", &self.shared.files)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Reads the files once; see [`TlsAcceptor::watch`] to follow them.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let followed = Followed::now(files.paths());
        let config = server_config(&files)?;
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                current: RwLock::new(config),
                followed: Mutex::new(Some(followed)),
            }),
        })
    }

    /// Reads the files again whenever one of them changes (looked at every
    /// `interval`) and on SIGHUP, for as long as a clone of this acceptor lives.
    /// A reading that fails keeps the previous configuration and logs a warning.
    pub fn watch(&self, interval: Duration) {
        let Some(followed) = self
            .shared
            .followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(followed.follow(interval, true, move |cause| {
            let Some(shared) = shared.upgrade() else {
                return false;
            };
            let Some(cause) = cause else {
                return true;
            };
            let acceptor = TlsAcceptor { shared };
            match acceptor.reload() {
                Ok(()) => tracing::info!(
                    cause,
                    mutual = acceptor.is_mutual(),
                    "tls certificate reloaded"
                ),
                Err(error) => {
                    tracing::warn!(cause, %error, "tls reload failed; keeping the previous certificate")
                }
            }
            true
        }));
    }

    /// Reads the files now; on failure, the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.shared.files)?;
        *self.shared.current.write().expect("the config is writable") = config;
        Ok(())
    }

    /// The configuration a connection accepted now gets.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.shared
            .current
            .read()
            .expect("the config is readable")
            .clone()
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.shared.files.client_ca.is_some()
    }

    /// The TLS handshake on `tcp`, within [`HANDSHAKE_TIMEOUT`]; `None`, logged at
    /// debug, when it fails.
    async fn handshake(config: Arc<ServerConfig>, tcp: TcpStream) -> Option<ServerIo> {
        let peer = tcp.peer_addr().ok();
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(tls)) => Some(ServerIo::Tls(Box::new(tls))),
            Ok(Err(error)) => {
                tracing::debug!(?peer, %error, "tls handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(
                    ?peer,
                    timeout_secs = HANDSHAKE_TIMEOUT.as_secs(),
                    "tls handshake timed out"
                );
                None
            }
        }
    }
}

/// How a listener serves: `plaintext`, `tls` or `mtls`, for start-up lines.
pub fn transport(tls: Option<&TlsAcceptor>) -> &'static str {
    match tls {
        None => "plaintext",
        Some(tls) if tls.is_mutual() => "mtls",
        Some(_) => "tls",
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from the files: TLS 1.2 and 1.3, ALPN `h2` and
/// `http/1.1` (the gateway serves gRPC-Web and JSON over HTTP/1.1 too).
fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = pem_files::certificates("TLS_CERT_FILE", &files.cert)?.parsed;
    let key = pem_files::private_key("TLS_KEY_FILE", &files.key)?.parsed;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        pem_files::invalid(
            "TLS_KEY_FILE",
            &files.key,
            format_args!(
                "cannot be used with the certificate in {}: {error}",
                files.cert.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let setting = "TLS_CLIENT_CA_FILE";
    let roots = pem_files::roots(setting, path)?.parsed;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| pem_files::invalid(setting, path, error).into())
}

/// One accepted connection, plaintext or TLS. Its connect info is the TCP
/// connection's, so `request.remote_addr()` and everything reading
/// [`TcpConnectInfo`] work the same over TLS.
pub enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ServerIo {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerIo::Plain(tcp) => tcp,
            ServerIo::Tls(tls) => tls.get_ref().0,
        }
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ServerIo::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ServerIo::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            ServerIo::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(io) => io.is_write_vectored(),
            ServerIo::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ServerIo::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ServerIo::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// The connections a listener accepts, as a stream for tonic's
/// `serve_with_incoming`: TCP ones at once, TLS ones once their handshake is done.
/// Handshakes run concurrently, each in a task of its own, so a slow client
/// holds up no other; dropping the stream closes the listener and abandons them.
pub struct Incoming {
    tcp: TcpIncoming,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<ServerIo>>,
}

impl Incoming {
    pub fn new(tcp: TcpIncoming, tls: Option<TlsAcceptor>) -> Self {
        Self {
            tcp,
            tls,
            handshakes: JoinSet::new(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// How this listener serves: `plaintext`, `tls` or `mtls`.
    pub fn transport(&self) -> &'static str {
        transport(self.tls.as_ref())
    }

    /// The next connection, or the error accepting one (as from `TcpIncoming`).
    pub async fn accept(&mut self) -> io::Result<ServerIo> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ServerIo>> {
        while self.handshakes.len() < MAX_PENDING_HANDSHAKES {
            match Pin::new(&mut self.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(tcp))) => match &self.tls {
                    None => return Poll::Ready(Ok(ServerIo::Plain(tcp))),
                    Some(tls) => {
                        self.handshakes
                            .spawn(TlsAcceptor::handshake(tls.config(), tcp));
                    }
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                // A listener's stream never ends.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        loop {
            match self.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(io)))) => return Poll::Ready(Ok(io)),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<ServerIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "agora-tls-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::create_dir_all(&path).expect("a temporary folder");
            Self(path)
        }

        fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).expect("write a test file");
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn self_signed() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("a test certificate");
        (cert.pem(), signing_key.serialize_pem())
    }

    fn files(cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert,
            key,
            client_ca,
        }
    }

    #[test]
    fn a_certificate_and_its_key_load_with_or_without_client_cas() {
        let dir = Dir::new();
        let (cert, key) = self_signed();
        let cert = dir.file("cert.pem", cert);
        let key = dir.file("key.pem", key);
        let tls = TlsAcceptor::load(files(cert.clone(), key.clone(), None)).expect("loads");
        assert_eq!(transport(Some(&tls)), "tls");
        assert_eq!(
            tls.config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let mtls = TlsAcceptor::load(files(cert.clone(), key, Some(cert))).expect("loads");
        assert_eq!(transport(Some(&mtls)), "mtls");
        assert_eq!(transport(None), "plaintext");
    }

    #[test]
    fn bad_files_are_refused_naming_the_setting_and_the_file() {
        let dir = Dir::new();
        let (cert_pem, key_pem) = self_signed();
        let (_, other_key_pem) = self_signed();
        let cert = dir.file("cert.pem", &cert_pem);
        let key = dir.file("key.pem", &key_pem);
        let missing = dir.0.join("missing.pem");
        let garbage = dir.file("garbage.pem", "not pem at all\n");
        let broken = dir.file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END NOT A CERTIFICATE-----\n",
        );
        let other_key = dir.file("other-key.pem", &other_key_pem);
        let cases = [
            (
                files(missing.clone(), key.clone(), None),
                "cannot read TLS_CERT_FILE",
                &missing,
                "a missing certificate file",
            ),
            (
                files(cert.clone(), missing.clone(), None),
                "cannot read TLS_KEY_FILE",
                &missing,
                "a missing key file",
            ),
            (
                files(garbage.clone(), key.clone(), None),
                "no PEM certificate",
                &garbage,
                "a certificate file without a certificate",
            ),
            (
                files(broken.clone(), key.clone(), None),
                "not valid PEM",
                &broken,
                "a certificate file with a broken PEM section",
            ),
            (
                files(cert.clone(), cert.clone(), None),
                "no unencrypted private key",
                &cert,
                "a key file holding a certificate",
            ),
            (
                files(cert.clone(), other_key.clone(), None),
                "cannot be used with the certificate",
                &other_key,
                "a key that is not the certificate's",
            ),
            (
                files(cert.clone(), key.clone(), Some(garbage.clone())),
                "TLS_CLIENT_CA_FILE",
                &garbage,
                "a client CA file without a certificate",
            ),
        ];
        for (files, expected, path, case) in cases {
            let error = TlsAcceptor::load(files)
                .err()
                .unwrap_or_else(|| panic!("{case} is refused"))
                .to_string();
            assert!(error.contains(expected), "{case}: {error}");
            assert!(
                error.contains(&path.display().to_string()),
                "{case} names the file: {error}"
            );
        }
    }

    #[test]
    fn the_settings_go_together() {
        let path = || Some(PathBuf::from("x.pem"));
        let args = |cert, key, client_ca| TlsArgs {
            tls_cert_file: cert,
            tls_key_file: key,
            tls_client_ca_file: client_ca,
            ..TlsArgs::default()
        };
        assert!(matches!(args(None, None, None).files(), Ok(None)));
        assert!(matches!(args(path(), path(), path()).files(), Ok(Some(_))));
        assert!(matches!(
            args(path(), None, None).files(),
            Err(TlsError::CertificateWithoutKey)
        ));
        assert!(matches!(
            args(None, path(), None).files(),
            Err(TlsError::CertificateWithoutKey)
        ));
        assert!(matches!(
            args(None, None, path()).files(),
            Err(TlsError::ClientCaWithoutCertificate)
        ));
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_config_and_a_good_one_replaces_it() {
        let dir = Dir::new();
        let (cert_pem, key_pem) = self_signed();
        let cert = dir.file("cert.pem", &cert_pem);
        let key = dir.file("key.pem", &key_pem);
        let tls = TlsAcceptor::load(files(cert.clone(), key.clone(), None)).expect("loads");
        let before = tls.config();

        std::fs::write(&key, "garbage").expect("break the key");
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config()), "the old config stays");

        let (cert_pem, key_pem) = self_signed();
        std::fs::write(&cert, cert_pem).expect("a new certificate");
        std::fs::write(&key, key_pem).expect("a new key");
        tls.reload().expect("the new pair loads");
        assert!(
            !Arc::ptr_eq(&before, &tls.config()),
            "the new config is served"
        );
    }
}

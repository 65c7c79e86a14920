//! How the link reaches the broker: plain TCP for `amqp://`, rustls for
//! `amqps://` (aws-lc, the system's roots plus `AMQP_CA_FILE`), and every
//! way that can fail named plainly, never with the URL's password.
//!
//! lapin's own TLS features are left off: they pull p12-keystore and a second
//! copy of the RustCrypto hashes. lapin instead takes a connect function
//! (`Connection::connector`) whose stream type is the runtime's; `Kit` is
//! tokio with a stream type that may be TLS.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_compat::Compat;
use async_rs::Tokio;
use async_rs::traits::{Executor, Reactor, RuntimeKit};
use async_rs::util::Task;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::Stream;
use lapin::tcp::AsyncTcpStream;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::broker_url::redact;

/// The environment variable naming a PEM file of extra CA certificates.
pub const CA_FILE_VAR: &str = "AMQP_CA_FILE";

/// Why a connection to the broker could not be opened, in words a user can
/// act on. Carried inside the `lapin::Error` the link answers (see
/// [`connect_error`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "the TLS certificate of {endpoint} is not trusted (unknown issuer): \
         set AMQP_CA_FILE to a PEM file holding the CA that signed it"
    )]
    UntrustedCertificate {
        /// `host:port` of the broker.
        endpoint: String,
    },
    #[error(
        "the TLS certificate of {endpoint} is not valid for the host name {host}: \
         use a host name the certificate names"
    )]
    WrongHostName {
        /// `host:port` of the broker.
        endpoint: String,
        /// The host name the URL asked for.
        host: String,
    },
    #[error("{endpoint} speaks TLS but the URL says amqp://: use amqps://")]
    TlsPortWithPlainUrl {
        /// `host:port` of the broker.
        endpoint: String,
    },
    #[error(
        "{endpoint} did not answer the TLS handshake ({detail}): is it a plain AMQP port? \
         Use amqp:// there, or the broker's TLS port (usually 5671)"
    )]
    PlainPortWithTlsUrl {
        /// `host:port` of the broker.
        endpoint: String,
        /// What rustls saw.
        detail: String,
    },
    #[error("the TLS handshake with {endpoint} failed: {detail}")]
    Tls {
        /// `host:port` of the broker.
        endpoint: String,
        /// What rustls said.
        detail: String,
    },
    #[error("AMQP_CA_FILE {path}: {reason}", path = path.display())]
    CaFile {
        /// The file named by `AMQP_CA_FILE`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    #[error("no trusted root certificates: the system has none and AMQP_CA_FILE is not set")]
    NoRoots,
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    #[error("no AMQP connection to {endpoint} within {timeout:?}")]
    Timeout {
        /// `host:port` of the broker.
        endpoint: String,
        /// The bound that passed.
        timeout: Duration,
    },
}

impl From<ConnectError> for lapin::Error {
    fn from(error: ConnectError) -> Self {
        io::Error::other(error).into()
    }
}

/// The [`ConnectError`] inside an error the link answered, if it holds one.
pub fn connect_error(error: &lapin::Error) -> Option<&ConnectError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(found) = current.downcast_ref::<ConnectError>() {
            return Some(found);
        }
        // io::Error's `source` skips the error it wraps; look inside it too.
        if let Some(inner) = current.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
            && let Some(found) = inner.downcast_ref::<ConnectError>()
        {
            return Some(found);
        }
        source = current.source();
    }
    None
}

/// Trust for `amqps://`: built at the first TLS connection (reading the
/// system's store costs milliseconds), then reused by the link.
pub(super) struct Trust {
    /// `AMQP_CA_FILE`, read when the link was made.
    ca_file: Option<PathBuf>,
    /// The connector, once built.
    connector: tokio::sync::OnceCell<TlsConnector>,
}

impl Trust {
    pub(super) fn from_env() -> Self {
        let ca_file = std::env::var_os(CA_FILE_VAR).filter(|value| !value.is_empty()).map(PathBuf::from);
        Self { ca_file, connector: tokio::sync::OnceCell::new() }
    }

    async fn connector(&self) -> Result<TlsConnector, ConnectError> {
        self.connector.get_or_try_init(|| async { tls_connector(self.ca_file.as_deref()) }).await.cloned()
    }
}

/// A rustls connector trusting the system's roots and the certificates of `ca_file`.
fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, ConnectError> {
    let mut roots = RootCertStore::empty();
    // The system store: the same one the AWS SDK's HTTPS client trusts. Some
    // unreadable or odd system certificates are normal; only none is a problem.
    let native = rustls_native_certs::load_native_certs();
    let (_added, _skipped) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for certificate in ca_certificates(path)? {
            roots.add(certificate).map_err(|error| ConnectError::CaFile {
                path: path.to_owned(),
                reason: format!("a certificate in it is not usable as a CA: {error}"),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(ConnectError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConnectError::Tls { endpoint: String::new(), detail: error.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The certificates of a PEM file: at least one, all well formed.
fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let fail = |reason: String| ConnectError::CaFile { path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|error| fail(format!("cannot read it: {error}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| fail(format!("not a PEM certificate file: {error}")))?;
    if certificates.is_empty() {
        return Err(fail("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certificates)
}

/// Opens an AMQP connection to `url` (plain or TLS, by its scheme) within `timeout`.
pub(super) async fn connect(
    url: &str,
    properties: ConnectionProperties,
    trust: &Trust,
    timeout: Duration,
) -> Result<Connection, lapin::Error> {
    let uri = url.parse::<AMQPUri>().map_err(|reason| ConnectError::InvalidUrl {
        url: redact(url),
        // Some parse errors quote the whole URL, password included.
        reason: reason.replace(url, &redact(url)),
    })?;
    let endpoint = format!("{}:{}", uri.authority.host, uri.authority.port);
    let tls = match uri.scheme {
        AMQPScheme::AMQP => None,
        AMQPScheme::AMQPS => Some(trust.connector().await?),
    };
    let runtime = async_rs::Runtime::new(Kit(Tokio::current()));
    let opening = Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, _runtime| open_stream(&uri, tls.clone()).await.map_err(lapin::Error::from),
        properties,
    );
    // Bounded: a broker that drops packets must not hold every publisher
    // (and so every POST) for the TCP connect timeout.
    tokio::time::timeout(timeout, opening).await.map_err(|_| ConnectError::Timeout { endpoint, timeout })?
}

/// TCP, then TLS when asked, to the URI's host and port.
async fn open_stream(uri: &AMQPUri, tls: Option<TlsConnector>) -> Result<AsyncTcpStream<Io>, io::Error> {
    let host = uri.authority.host.as_str();
    let endpoint = format!("{host}:{}", uri.authority.port);
    // The error keeps its kind (callers tell a refused connection apart) and gains the endpoint.
    let tcp = tokio::net::TcpStream::connect((host, uri.authority.port))
        .await
        .map_err(|error| io::Error::new(error.kind(), format!("cannot reach {endpoint}: {error}")))?;
    tcp.set_nodelay(true)?;
    let stream: Io = match tls {
        None => Io(Box::new(Compat::new(SniffTls { inner: tcp, endpoint, first_read: true }))),
        Some(connector) => {
            let name = ServerName::try_from(host.to_owned()).map_err(|error| {
                io::Error::other(ConnectError::Tls { endpoint: endpoint.clone(), detail: error.to_string() })
            })?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|error| io::Error::other(handshake_error(&endpoint, host, &error)))?;
            Io(Box::new(Compat::new(stream)))
        }
    };
    Ok(AsyncTcpStream::Plain(stream))
}

/// Names what went wrong in a TLS handshake.
fn handshake_error(endpoint: &str, host: &str, error: &io::Error) -> ConnectError {
    let endpoint = endpoint.to_owned();
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnknownRevocationStatus,
        )) => ConnectError::UntrustedCertificate { endpoint },
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => ConnectError::WrongHostName { endpoint, host: host.to_owned() },
        // Bytes that are no TLS record: something else (an AMQP listener
        // sends its protocol header) answered the ClientHello.
        Some(rustls::Error::InvalidMessage(_)) => {
            ConnectError::PlainPortWithTlsUrl { endpoint, detail: error.to_string() }
        }
        _ if matches!(error.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
            ConnectError::PlainPortWithTlsUrl { endpoint, detail: error.to_string() }
        }
        _ => ConnectError::Tls { endpoint, detail: error.to_string() },
    }
}

/// Answers a TLS record where an AMQP frame was expected with a clear error
/// instead of letting lapin report a parse failure: a TLS listener answers the
/// AMQP protocol header with an alert (record type 21) or handshake (22).
struct SniffTls {
    /// The plain connection.
    inner: tokio::net::TcpStream,
    /// `host:port`, for the message.
    endpoint: String,
    /// Whether nothing was read yet.
    first_read: bool,
}

impl tokio::io::AsyncRead for SniffTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.first_read && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.first_read = false;
            if matches!(buf.filled()[before], 21 | 22) {
                let endpoint = self.endpoint.clone();
                return Poll::Ready(Err(io::Error::other(ConnectError::TlsPortWithPlainUrl { endpoint })));
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for SniffTls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Any byte stream lapin can drive.
trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// The stream type of `Kit`: plain or TLS, boxed.
pub(super) struct Io(Box<dyn Duplex>);

impl fmt::Debug for Io {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Io")
    }
}

impl AsyncRead for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_close(cx)
    }
}

/// async-rs's tokio kit with [`Io`] as its stream type; all else delegated.
#[derive(Clone, Debug)]
struct Kit(Tokio);

impl RuntimeKit for Kit {}

impl Executor for Kit {
    type Task<T: Send + 'static> = <Tokio as Executor>::Task<T>;

    fn block_on<T, F: Future<Output = T>>(&self, future: F) -> T {
        self.0.block_on(future)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(&self, future: F) -> Task<Self::Task<T>> {
        self.0.spawn(future)
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(&self, work: F) -> Task<Self::Task<T>> {
        self.0.spawn_blocking(work)
    }
}

impl Reactor for Kit {
    type TcpStream = Io;
    type Sleep = <Tokio as Reactor>::Sleep;

    // async-rs names this bound `AsSysFd`, a private alias of these two on unix.
    fn register<H: io::Read + io::Write + std::os::fd::AsFd + std::os::fd::AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        self.0.register(socket)
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.0.sleep(duration)
    }

    fn interval(&self, duration: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.0.interval(duration)
    }

    fn tcp_connect_addr(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let connecting = self.0.tcp_connect_addr(addr);
        async move { Ok(Io(Box::new(connecting.await?))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lapin's URL parser quotes the whole URL in some errors; ours never shows the password.
    #[tokio::test]
    async fn an_unparsable_url_is_reported_without_its_password() {
        for url in [
            "amqp:guest:hunter2@broker/vh",
            "amqps://guest:hunter2@broker/vh?heartbeat=soon",
            "http://guest:hunter2@broker",
        ] {
            let trust = Trust { ca_file: None, connector: tokio::sync::OnceCell::new() };
            let Err(error) = connect(url, ConnectionProperties::default(), &trust, Duration::from_secs(5)).await else {
                panic!("{url} must not connect");
            };
            let shown = format!("{error} {error:?}");
            assert!(matches!(connect_error(&error), Some(ConnectError::InvalidUrl { .. })), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}

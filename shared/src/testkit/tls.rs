//! A TLS endpoint in front of the test broker: accepts TLS on
//! `127.0.0.1:<free port>` with a certificate from a CA made by the test, and
//! forwards the bytes to a plain upstream (RabbitMQ on 127.0.0.1:5672), as a
//! managed broker's TLS listener would look from the client.
//!
//! It runs on a thread and runtime of its own, so that it keeps serving while
//! a test blocks or waits on other processes (real functions connecting to it).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The host names a good certificate names: what the tests' URLs use.
const GOOD_NAMES: &[&str] = &["localhost", "127.0.0.1"];
/// A name no test URL uses: the certificate of [`TlsTerminator::start_wrong_host`].
pub const WRONG_HOST: &str = "not-this-broker.invalid";

/// A running TLS terminator; stops when dropped.
pub struct TlsTerminator {
    /// The local port it accepts TLS on.
    pub port: u16,
    /// A PEM file holding the CA that signed its certificate (for `AMQP_CA_FILE`).
    pub ca_file: PathBuf,
    /// Where `ca_file` lives (removed on drop).
    dir: TempDir,
    /// TLS handshakes completed so far.
    handshakes: Arc<AtomicUsize>,
    /// Tells the serving thread to stop.
    stop: watch::Sender<bool>,
}

impl TlsTerminator {
    /// A terminator whose certificate names `localhost` and `127.0.0.1`.
    #[track_caller]
    pub fn start(upstream: SocketAddr) -> Self {
        Self::start_for(upstream, GOOD_NAMES)
    }

    /// A terminator whose certificate names only [`WRONG_HOST`]; its CA is
    /// still in `ca_file`, so only the host name check can fail.
    #[track_caller]
    pub fn start_wrong_host(upstream: SocketAddr) -> Self {
        Self::start_for(upstream, &[WRONG_HOST])
    }

    /// A terminator for the broker at `127.0.0.1:5672`.
    #[track_caller]
    pub fn start_for_local_broker() -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 5672)))
    }

    /// A terminator whose certificate names `names`.
    #[track_caller]
    pub fn start_for(upstream: SocketAddr, names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the test CA");
        let ca = new_ca();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the test CA");
        let config = server_config(&ca, names);
        let listener = StdListener::bind("127.0.0.1:0").expect("a free local port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("the bound address").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = watch::channel(false);
        let counted = Arc::clone(&handshakes);
        std::thread::Builder::new()
            .name(format!("tls-terminator-{port}"))
            .spawn(move || serve(listener, TlsAcceptor::from(config), upstream, counted, stopped))
            .expect("spawn the TLS terminator thread");
        Self { port, ca_file, dir, handshakes, stop }
    }

    /// `amqps://guest:guest@localhost:<port>/<vhost>` (vhost percent-encoded by the caller).
    pub fn url(&self, credentials: &str, vhost: &str) -> String {
        format!("amqps://{credentials}@localhost:{}/{vhost}", self.port)
    }

    /// TLS handshakes this terminator completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Writes the PEM of a CA that signed nothing here, for the untrusted case.
    pub fn unrelated_ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("unrelated-ca.pem");
        std::fs::write(&path, new_ca().pem()).expect("write the unrelated CA");
        path
    }

    /// The temporary directory holding the CA files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A fresh self-signed CA.
fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty names are valid");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "choreo test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a CA key");
    CertifiedIssuer::self_signed(params, key).expect("a self-signed CA")
}

/// A server configuration presenting a certificate for `names` signed by `ca`.
fn server_config(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> Arc<ServerConfig> {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("valid test host names");
    params.distinguished_name.push(DnType::CommonName, "choreo test broker");
    let key = KeyPair::generate().expect("a server key");
    let certificate = params.signed_by(&key, ca).expect("the CA signs the server certificate");
    let chain = vec![certificate.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc supports the default versions")
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .expect("a valid server certificate");
    Arc::new(config)
}

/// Accepts until told to stop; each connection is terminated and forwarded on a task.
fn serve(
    listener: StdListener,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                accepted = listener.accept() => {
                    let Ok((client, _)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let handshakes = Arc::clone(&handshakes);
                    tokio::spawn(async move {
                        // A failed handshake (a plain client, an untrusting one) just ends here.
                        let Ok(mut tls) = acceptor.accept(client).await else { return };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        let Ok(mut broker) = TcpStream::connect(upstream).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                    });
                }
            }
        }
    });
}

//! Real TLS on loopback, for the cold-path benchmark: a test certificate
//! authority, and proxies that terminate TLS in front of plain-HTTP servers
//! (moto, the Microsoft simulator, the flow receiver).
//!
//! A deployed function pays for a TLS handshake to every host it calls; a
//! local run over plain HTTP hides that cost. The chain is shaped like the
//! public ones (an RSA-2048 root, an intermediate and a leaf for
//! `127.0.0.1` and `localhost`), and each proxy records when every
//! connection was accepted and when its handshake finished, so the
//! benchmark can say where a cold invocation's time went. Functions trust the
//! root through `RELAY365_LOCAL_CA_FILE` (honoured only with `RELAY365_LOCAL=1`);
//! Python's libraries through `AWS_CA_BUNDLE` and `REQUESTS_CA_BUNDLE`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};
use tokio::net::{TcpListener, TcpStream};

/// The test authority and the server configuration its leaf serves.
pub struct TestCa {
    /// The root certificate (PEM), the one file clients trust.
    pub root_pem_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn rcgen_error(what: &'static str) -> impl Fn(rcgen::Error) -> String {
    move |e| format!("{what}: {e}")
}

impl TestCa {
    /// Makes a root, an intermediate and a leaf certificate, and writes the
    /// root to `dir/ca.pem`.
    ///
    /// # Errors
    /// A sentence naming the step that failed.
    pub fn create(dir: &Path) -> Result<Self, String> {
        let key = || KeyPair::generate_for(&PKCS_RSA_SHA256).map_err(rcgen_error("an RSA key"));
        let ca_params = |name: &str| -> Result<CertificateParams, String> {
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("CA parameters"))?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            Ok(p)
        };
        let root_key = key()?;
        let root_params = ca_params("relay365 benchmark root")?;
        let root = root_params
            .self_signed(&root_key)
            .map_err(rcgen_error("the root"))?;
        let root_issuer = Issuer::new(root_params, root_key);
        let mid_key = key()?;
        let mid_params = ca_params("relay365 benchmark intermediate")?;
        let mid = mid_params
            .signed_by(&mid_key, &root_issuer)
            .map_err(rcgen_error("the intermediate"))?;
        let mid_issuer = Issuer::new(mid_params, mid_key);
        let leaf_key = key()?;
        let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(rcgen_error("leaf parameters"))?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params
            .signed_by(&leaf_key, &mid_issuer)
            .map_err(rcgen_error("the leaf"))?;

        let private = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
            .map_err(|e| format!("the leaf key: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), mid.der().clone()], private)
            .map_err(|e| format!("the server certificate: {e}"))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every cold process is a new client: no session is ever resumed.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let root_pem_file = dir.join("ca.pem");
        std::fs::write(&root_pem_file, root.pem())
            .map_err(|e| format!("{}: {e}", root_pem_file.display()))?;
        Ok(Self {
            root_pem_file,
            server: Arc::new(server),
        })
    }
}

/// One connection a proxy accepted.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The proxy's name (the service it stands for).
    pub service: &'static str,
    /// When the TCP connection was accepted.
    pub accepted: Instant,
    /// When the TLS handshake finished (the client's `Finished` arrived), if it did.
    pub handshake_done: Option<Instant>,
}

/// What every proxy accepted, in order.
pub type Timeline = Arc<Mutex<Vec<Connection>>>;

/// A TLS-terminating proxy on 127.0.0.1 in front of a plain-HTTP server.
pub struct TlsProxy {
    /// `https://127.0.0.1:{port}`.
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TlsProxy {
    /// Listens on a free loopback port and forwards each connection, once
    /// its handshake is done, to `upstream` (`host:port`).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(
        service: &'static str,
        upstream: SocketAddr,
        ca: &TestCa,
        timeline: Timeline,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("https://{}", listener.local_addr()?);
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = &mut stopped => return,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let at = Instant::now();
                let index = {
                    let mut t = timeline.lock().unwrap_or_else(|p| p.into_inner());
                    t.push(Connection {
                        service,
                        accepted: at,
                        handshake_done: None,
                    });
                    t.len() - 1
                };
                let (acceptor, timeline) = (acceptor.clone(), timeline.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Some(c) = timeline.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index) {
                        c.handshake_done = Some(Instant::now());
                    }
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(Self { url, _stop: stop })
    }
}

/// `host:port` of a plain `http://` URL.
///
/// # Errors
/// When `url` has no host and port.
pub fn socket_of(url: &str) -> Result<SocketAddr, String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = u.host_str().ok_or_else(|| format!("{url} has no host"))?;
    let port = u
        .port_or_known_default()
        .ok_or_else(|| format!("{url} has no port"))?;
    format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("{url}: {e}"))
}

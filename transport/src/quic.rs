//! The QUIC endpoint every node runs: quinn over rustls (ring provider,
//! TLS 1.3 only), mutual TLS against the cluster CA, and the peer's role and
//! name read from its verified certificate. A peer with a certificate from
//! another CA, an expired one, or none is refused during the handshake, and
//! both sides say why ([`CertificateRefusal`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_certs::{NodeCredentials, NodeIdentity};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// The ALPN protocol name Ember speaks.
pub const ALPN: &[u8] = b"ember/1";

#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the cluster CA certificate cannot be used as a trust root: {0}")]
    BadCa(String),
    #[error("the client certificate verifier cannot be built: {0}")]
    Verifier(String),
    #[error("QUIC configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: SocketAddr, why: String },
    #[error("{addr} refused or dropped the handshake: {why}")]
    Handshake { addr: SocketAddr, why: String },
    #[error("{addr}: {refusal}")]
    CertificateRefused {
        addr: SocketAddr,
        refusal: CertificateRefusal,
    },
    #[error("{addr} presented no usable certificate: {why}")]
    PeerIdentity { addr: SocketAddr, why: String },
}

/// Which side of a connection refused a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// This node refused the peer's certificate.
    Us,
    /// The peer refused this node's certificate.
    Peer,
}

/// A TLS handshake that ended on a certificate: QUIC carries the TLS alert
/// as a crypto error (0x100 + alert) and the refusing side's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRefusal {
    pub by: RefusedBy,
    /// The TLS alert (RFC 8446 section 6): 42 bad_certificate,
    /// 45 certificate_expired, 48 unknown_ca, ...
    pub alert: u8,
    /// The refusing side's words, as it sent them.
    pub reason: String,
}

pub const ALERT_BAD_CERTIFICATE: u8 = 42;
pub const ALERT_CERTIFICATE_EXPIRED: u8 = 45;
pub const ALERT_UNKNOWN_CA: u8 = 48;
/// TLS's decrypt_error: here, a certificate whose issuer has the name of
/// the trusted CA but another key (two clusters made with the same
/// `--name`), or a key that does not match its certificate.
pub const ALERT_DECRYPT_ERROR: u8 = 51;
/// TLS 1.3's certificate_required: no certificate at all.
pub const ALERT_CERTIFICATE_REQUIRED: u8 = 116;

/// The RFC 8446 name of the TLS alerts a certificate check sends.
fn alert_name(alert: u8) -> &'static str {
    match alert {
        40 => "handshake_failure",
        ALERT_BAD_CERTIFICATE => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        ALERT_CERTIFICATE_EXPIRED => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        ALERT_UNKNOWN_CA => "unknown_ca",
        49 => "access_denied",
        ALERT_DECRYPT_ERROR => "decrypt_error",
        ALERT_CERTIFICATE_REQUIRED => "certificate_required",
        120 => "no_application_protocol",
        _ => "alert",
    }
}

impl CertificateRefusal {
    /// What is wrong with the refused certificate, in a phrase.
    pub fn problem(&self) -> &'static str {
        match (self.alert, self.by) {
            (ALERT_UNKNOWN_CA, RefusedBy::Peer) => "it is not signed by the cluster's CA",
            (ALERT_UNKNOWN_CA, RefusedBy::Us) => {
                "it is not signed by this node's CA (the ca.pem in its --certs directory)"
            }
            (ALERT_DECRYPT_ERROR, RefusedBy::Peer) => {
                "it is not signed by the cluster's CA (another CA of the same name signed it), \
                 or its key does not match it"
            }
            (ALERT_DECRYPT_ERROR, RefusedBy::Us) => {
                "it is not signed by this node's CA (another CA of the same name signed it), \
                 or its key does not match it"
            }
            (ALERT_CERTIFICATE_EXPIRED, _) => "it is expired or not yet valid",
            (ALERT_BAD_CERTIFICATE, _) => {
                "it does not name the host it was reached at, or is malformed"
            }
            (ALERT_CERTIFICATE_REQUIRED, _) => "there is none",
            _ => "it is not acceptable",
        }
    }

    /// What to do about it.
    fn remedy(&self) -> Option<&'static str> {
        match self.alert {
            ALERT_UNKNOWN_CA | ALERT_DECRYPT_ERROR => Some(
                "use certificates issued (`ember certs issue`) with the CA the cluster runs \
                 with, beside that CA's ca.pem",
            ),
            ALERT_CERTIFICATE_EXPIRED => Some(
                "see its dates with `ember certs show FILE`, issue a new one with `ember certs \
                 issue`, and check both machines' clocks",
            ),
            ALERT_BAD_CERTIFICATE => Some(
                "see its hosts with `ember certs show FILE`, and issue one with the --host \
                 peers dial",
            ),
            _ => None,
        }
    }

    /// The alert and the refusing side's words, for the record.
    pub fn alert_text(&self) -> String {
        let mut text = format!("TLS alert {} {}", self.alert, alert_name(self.alert));
        if !self.reason.is_empty() {
            text.push_str(": ");
            text.push_str(&self.reason);
        }
        text
    }
}

impl fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, whose) = match self.by {
            RefusedBy::Peer => ("the peer refused", "this node's"),
            RefusedBy::Us => ("this node refused", "the peer's"),
        };
        write!(f, "{who} {whose} certificate: {}", self.problem())?;
        if let Some(remedy) = self.remedy() {
            write!(f, "; {remedy}")?;
        }
        write!(f, " ({})", self.alert_text())
    }
}

/// The certificate refusal a connection ended with, if that is how it
/// ended: alerts this node sent come back as a local transport error,
/// alerts from the peer as its connection close.
pub fn certificate_refusal(error: &quinn::ConnectionError) -> Option<CertificateRefusal> {
    let (by, code, reason) = match error {
        quinn::ConnectionError::TransportError(e) => (RefusedBy::Us, e.code, e.reason.clone()),
        quinn::ConnectionError::ConnectionClosed(close) => (
            RefusedBy::Peer,
            close.error_code,
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        _ => return None,
    };
    let code = u64::from(code);
    // QUIC's crypto errors are 0x100 + the TLS alert (RFC 9001 section 4.8).
    if !(0x100..=0x1ff).contains(&code) {
        return None;
    }
    let alert = u8::try_from(code - 0x100).ok()?;
    let certificate_alert = matches!(
        alert,
        40..=49 | ALERT_DECRYPT_ERROR | ALERT_CERTIFICATE_REQUIRED
    );
    certificate_alert.then_some(CertificateRefusal { by, alert, reason })
}

/// Liveness settings of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicOptions {
    /// A connection with no traffic for this long is dead.
    pub idle_timeout: Duration,
    /// Keep-alive pings keep a quiet but live connection open.
    pub keep_alive: Duration,
    /// Bulk streams a peer may have open at once; more wait their turn.
    pub max_bulk_streams: u32,
}

impl Default for QuicOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(1),
            keep_alive: Duration::from_millis(250),
            max_bulk_streams: 32,
        }
    }
}

/// Unread bytes one stream, and one connection, may hold: what a peer can
/// make this node buffer before flow control stops it.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(creds: &NodeCredentials) -> Result<Arc<RootCertStore>, QuicError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(creds.ca.clone())
        .map_err(|e| QuicError::BadCa(e.to_string()))?;
    Ok(Arc::new(roots))
}

fn transport_config(options: &QuicOptions) -> Result<Arc<quinn::TransportConfig>, QuicError> {
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(options.idle_timeout)
        .map_err(|e| QuicError::Config(format!("idle timeout: {e}")))?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(options.keep_alive))
        // The control stream, then bulk streams.
        .max_concurrent_bidi_streams((1 + options.max_bulk_streams).into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .send_window(u64::from(CONNECTION_WINDOW));
    Ok(Arc::new(transport))
}

/// The server side: presents this node's certificate and requires one from
/// the cluster CA of every client.
pub fn server_config(
    creds: &NodeCredentials,
    options: &QuicOptions,
) -> Result<quinn::ServerConfig, QuicError> {
    Ok(ServerTls::new(creds, options)?.config)
}

/// What the server side of every connection is made of; each accepted
/// connection gets its own verifier, which remembers the certificate it
/// refuses so the refusal can be logged with the address that sent it.
#[derive(Debug, Clone)]
struct ServerTls {
    verifier: Arc<dyn ClientCertVerifier>,
    certified: Arc<CertifiedKey>,
    /// The endpoint's default configuration.
    config: quinn::ServerConfig,
}

impl ServerTls {
    fn new(creds: &NodeCredentials, options: &QuicOptions) -> Result<Self, QuicError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(creds)?, provider())
            .build()
            .map_err(|e| QuicError::Verifier(e.to_string()))?;
        let certified = Arc::new(CertifiedKey::from_der(
            vec![creds.cert.clone()],
            creds.key.clone_key(),
            &provider(),
        )?);
        let crypto = Self::crypto(Arc::clone(&verifier), &certified)?;
        let mut config = quinn::ServerConfig::with_crypto(crypto);
        config.transport_config(transport_config(options)?);
        Ok(Self {
            verifier,
            certified,
            config,
        })
    }

    fn crypto(
        verifier: Arc<dyn ClientCertVerifier>,
        certified: &Arc<CertifiedKey>,
    ) -> Result<Arc<QuicServerConfig>, QuicError> {
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(certified))));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
        Ok(Arc::new(crypto))
    }

    /// The endpoint's configuration with a verifier of its own, and where
    /// that verifier describes a certificate it refused.
    fn for_one_peer(&self) -> Result<(Arc<quinn::ServerConfig>, Refused), QuicError> {
        let refused = Refused::default();
        let verifier = Arc::new(RecordingVerifier {
            inner: Arc::clone(&self.verifier),
            refused: refused.clone(),
        });
        let mut config = self.config.clone();
        config.crypto = Self::crypto(verifier, &self.certified)?;
        Ok((Arc::new(config), refused))
    }
}

/// A description of the certificate a peer presented and was refused.
#[derive(Debug, Clone, Default)]
struct Refused(Arc<Mutex<Option<String>>>);

impl Refused {
    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut seen| seen.take())
    }
}

/// What a refused certificate says about itself, for the log.
fn describe_certificate(der: &CertificateDer<'_>) -> String {
    match ember_certs::inspect(der, "the peer's certificate") {
        Ok(info) => {
            let role = info
                .role
                .map_or_else(|| "no Ember role".to_string(), |r| r.to_string());
            format!(
                "'{}' ({role}), issued by '{}', valid from {} to {}",
                info.common_name.as_deref().unwrap_or(&info.subject),
                info.issuer,
                ember_certs::utc(info.not_before),
                ember_certs::utc(info.not_after)
            )
        }
        Err(e) => format!("an unreadable certificate ({e})"),
    }
}

/// Checks client certificates as `inner` does, and keeps a description of
/// one it refuses.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    refused: Refused,
}

impl ClientCertVerifier for RecordingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if verdict.is_err()
            && let Ok(mut seen) = self.refused.0.lock()
        {
            *seen = Some(describe_certificate(end_entity));
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// The client side: trusts only the cluster CA and presents this node's
/// certificate.
pub fn client_config(
    creds: &NodeCredentials,
    options: &QuicOptions,
) -> Result<quinn::ClientConfig, QuicError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(creds)?)
        .with_client_auth_cert(vec![creds.cert.clone()], creds.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(options)?);
    Ok(config)
}

/// A connection to a peer whose certificate was verified.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub connection: quinn::Connection,
    pub peer: NodeIdentity,
}

/// The verified peer's identity, from the certificate it presented.
fn peer_identity(connection: &quinn::Connection) -> Result<NodeIdentity, QuicError> {
    let addr = connection.remote_address();
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| QuicError::PeerIdentity {
            addr,
            why: "no certificate".to_string(),
        })?;
    let leaf = certs.first().ok_or_else(|| QuicError::PeerIdentity {
        addr,
        why: "an empty certificate chain".to_string(),
    })?;
    ember_certs::identity_of(leaf).map_err(|e| QuicError::PeerIdentity {
        addr,
        why: e.to_string(),
    })
}

/// A node's QUIC endpoint: it accepts peers and connects to them.
#[derive(Debug, Clone)]
pub struct QuicEndpoint {
    endpoint: quinn::Endpoint,
    identity: NodeIdentity,
    server: Arc<ServerTls>,
}

impl QuicEndpoint {
    /// Binds `addr` (port 0 for any) and serves and dials with `creds`.
    pub fn bind(
        addr: SocketAddr,
        creds: &NodeCredentials,
        options: &QuicOptions,
    ) -> Result<Self, QuicError> {
        let server = ServerTls::new(creds, options)?;
        let mut endpoint = quinn::Endpoint::server(server.config.clone(), addr)
            .map_err(|source| QuicError::Bind { addr, source })?;
        endpoint.set_default_client_config(client_config(creds, options)?);
        Ok(Self {
            endpoint,
            identity: creds.identity.clone(),
            server: Arc::new(server),
        })
    }

    /// Serves and dials with `creds` over `socket`, a simulated one: the
    /// same QUIC and TLS as on a real network, with the endpoint's random
    /// choices (connection ids and the like) drawn from `seed`.
    pub fn bind_socket(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        creds: &NodeCredentials,
        options: &QuicOptions,
        seed: [u8; 32],
    ) -> Result<Self, QuicError> {
        let addr = socket
            .local_addr()
            .map_err(|e| QuicError::Config(e.to_string()))?;
        let mut config = quinn::EndpointConfig::default();
        config.rng_seed(Some(seed));
        let server = ServerTls::new(creds, options)?;
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            config,
            Some(server.config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| QuicError::Bind { addr, source })?;
        endpoint.set_default_client_config(client_config(creds, options)?);
        Ok(Self {
            endpoint,
            identity: creds.identity.clone(),
            server: Arc::new(server),
        })
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn local_addr(&self) -> Result<SocketAddr, std::io::Error> {
        self.endpoint.local_addr()
    }

    /// Connects to the node at `addr`, whose certificate must name
    /// `server_name` (a host name or IP address in its SANs).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<PeerConnection, QuicError> {
        let connecting =
            self.endpoint
                .connect(addr, server_name)
                .map_err(|e| QuicError::Connect {
                    addr,
                    why: e.to_string(),
                })?;
        let connection = connecting
            .await
            .map_err(|e| match certificate_refusal(&e) {
                Some(refusal) => QuicError::CertificateRefused { addr, refusal },
                None => QuicError::Handshake {
                    addr,
                    why: e.to_string(),
                },
            })?;
        let peer = peer_identity(&connection)?;
        Ok(PeerConnection { connection, peer })
    }

    /// The next peer to begin a handshake. Finish each apart
    /// ([`Handshake::finish`]): a peer that stalls halfway (cut off, or
    /// never answering) must not hold up the handshakes behind it.
    pub async fn incoming(&self) -> Option<Handshake> {
        let incoming = self.endpoint.accept().await?;
        Some(Handshake {
            incoming,
            server: Arc::clone(&self.server),
        })
    }

    /// The next peer to complete its handshake, one handshake at a time.
    /// Refused handshakes are logged and skipped; `None` once the endpoint
    /// is closed.
    pub async fn accept(&self) -> Option<PeerConnection> {
        while let Some(handshake) = self.incoming().await {
            if let Some(peer) = handshake.finish().await {
                return Some(peer);
            }
        }
        None
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"endpoint closed");
    }
}

/// A peer's handshake under way, taken from [`QuicEndpoint::incoming`].
pub struct Handshake {
    incoming: quinn::Incoming,
    server: Arc<ServerTls>,
}

impl Handshake {
    /// Where the peer dials from.
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Completes the handshake: the peer, or `None` (logged) if it was
    /// refused or dropped.
    pub async fn finish(self) -> Option<PeerConnection> {
        let addr = self.incoming.remote_address();
        let (connecting, refused) = match self.server.for_one_peer() {
            Ok((config, refused)) => (self.incoming.accept_with(config), refused),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot record refused certificates");
                (self.incoming.accept(), Refused::default())
            }
        };
        let connected = match connecting {
            Ok(connecting) => connecting.await,
            Err(e) => Err(e),
        };
        match connected {
            Ok(connection) => match peer_identity(&connection) {
                Ok(peer) => return Some(PeerConnection { connection, peer }),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "refused a peer");
                    connection.close(quinn::VarInt::from_u32(1), b"no Ember role");
                }
            },
            Err(e) => match (certificate_refusal(&e), refused.take()) {
                (Some(refusal), Some(certificate)) => tracing::warn!(
                    "refused the certificate {addr} presented, {certificate}: {} ({})",
                    refusal.problem(),
                    refusal.alert_text()
                ),
                (Some(refusal), None) => {
                    tracing::warn!("the TLS handshake with {addr} failed: {refusal}")
                }
                _ => tracing::warn!(
                    %addr,
                    error = %e,
                    "refused a connection during the TLS handshake"
                ),
            },
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ember_certs::{IssueRequest, Role, init_ca, issue, load_node};
    use time::{Duration as Days, OffsetDateTime};

    use super::*;

    fn node(dir: &Path, role: Role, name: &str) -> NodeCredentials {
        issue(dir, &IssueRequest::new(role, name, vec![], 5)).unwrap();
        load_node(dir, name).unwrap()
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A server endpoint and a task that reports the first accepted peer.
    fn serve(
        creds: &NodeCredentials,
    ) -> (
        QuicEndpoint,
        tokio::task::JoinHandle<Option<PeerConnection>>,
    ) {
        let server = QuicEndpoint::bind(loopback(), creds, &QuicOptions::default()).unwrap();
        let accepting = server.clone();
        let task = tokio::spawn(async move {
            tokio::time::timeout(std::time::Duration::from_secs(3), accepting.accept())
                .await
                .ok()
                .flatten()
        });
        (server, task)
    }

    /// Whether a client's connection survives: a refused client may finish
    /// its side of the handshake before the server rejects its certificate.
    async fn usable(client: &QuicEndpoint, addr: SocketAddr) -> bool {
        let Ok(conn) = client.connect(addr, "localhost").await else {
            return false;
        };
        let exchange = async {
            let (mut send, mut recv) = conn.connection.open_bi().await.ok()?;
            send.write_all(b"ping").await.ok()?;
            send.finish().ok()?;
            recv.read_to_end(16).await.ok()
        };
        tokio::time::timeout(std::time::Duration::from_secs(3), exchange)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    #[tokio::test]
    async fn peers_of_one_cluster_connect_and_know_each_others_role() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "t", 5, false).unwrap();
        let cm = node(dir.path(), Role::ClusterManager, "cm");
        let worker = node(dir.path(), Role::Worker, "w1");
        let (server, accepted) = serve(&cm);
        let addr = server.local_addr().unwrap();
        let client = QuicEndpoint::bind(loopback(), &worker, &QuicOptions::default()).unwrap();
        let conn = client.connect(addr, "localhost").await.unwrap();
        assert_eq!(
            conn.peer,
            NodeIdentity {
                role: Role::ClusterManager,
                name: "cm".into()
            }
        );
        let server_side = accepted
            .await
            .unwrap()
            .expect("the server accepts the worker");
        assert_eq!(
            server_side.peer,
            NodeIdentity {
                role: Role::Worker,
                name: "w1".into()
            }
        );

        // Frames cross the connection both ways.
        let (mut send, mut recv) = conn.connection.open_bi().await.unwrap();
        crate::frame::write_frame(&mut send, &"hello".to_string(), 1024)
            .await
            .unwrap();
        let (mut s_send, mut s_recv) = server_side.connection.accept_bi().await.unwrap();
        let got: Option<String> = crate::frame::read_frame(&mut s_recv, 1024).await.unwrap();
        assert_eq!(got.as_deref(), Some("hello"));
        crate::frame::write_frame(&mut s_send, &42u32, 1024)
            .await
            .unwrap();
        let back: Option<u32> = crate::frame::read_frame(&mut recv, 1024).await.unwrap();
        assert_eq!(back, Some(42));
        client.close();
        server.close();
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_refused_both_ways() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        init_ca(ours.path(), "ours", 5, false).unwrap();
        init_ca(theirs.path(), "theirs", 5, false).unwrap();
        let cm = node(ours.path(), Role::ClusterManager, "cm");
        let intruder = node(theirs.path(), Role::Worker, "intruder");

        let (server, accepted) = serve(&cm);
        let client = QuicEndpoint::bind(loopback(), &intruder, &QuicOptions::default()).unwrap();
        // The intruder does not trust our CA either, so it refuses the server.
        let err = client
            .connect(server.local_addr().unwrap(), "localhost")
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                QuicError::CertificateRefused {
                    refusal: CertificateRefusal {
                        by: RefusedBy::Us,
                        alert: ALERT_UNKNOWN_CA,
                        ..
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains(
                "this node refused the peer's certificate: it is not signed by this node's CA"
            ),
            "{err}"
        );
        assert!(
            accepted.await.unwrap().is_none(),
            "the server accepted nobody"
        );
    }

    /// How the server ended a client's connection, waiting up to 3 s.
    async fn refusal_seen_by(
        client: &QuicEndpoint,
        addr: SocketAddr,
    ) -> Option<CertificateRefusal> {
        let conn = match client.connect(addr, "localhost").await {
            Err(QuicError::CertificateRefused { refusal, .. }) => return Some(refusal),
            Err(_) => return None,
            Ok(conn) => conn,
        };
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(3), conn.connection.closed())
                .await
                .ok()?;
        certificate_refusal(&closed)
    }

    #[tokio::test]
    async fn a_client_learns_why_the_server_refused_its_certificate() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        init_ca(ours.path(), "ours", 5, false).unwrap();
        init_ca(theirs.path(), "theirs", 5, false).unwrap();
        let cm = node(ours.path(), Role::ClusterManager, "cm");
        // Trusts our CA, so only the server has something to refuse.
        let foreign = NodeCredentials {
            ca: cm.ca.clone(),
            ..node(theirs.path(), Role::Client, "stranger")
        };
        let (server, accepted) = serve(&cm);
        let client = QuicEndpoint::bind(loopback(), &foreign, &QuicOptions::default()).unwrap();
        let refusal = refusal_seen_by(&client, server.local_addr().unwrap())
            .await
            .expect("the server's refusal reaches the client");
        assert_eq!(
            (refusal.by, refusal.alert),
            (RefusedBy::Peer, ALERT_UNKNOWN_CA)
        );
        assert!(
            refusal.to_string().starts_with(
                "the peer refused this node's certificate: it is not signed by the cluster's CA"
            ),
            "{refusal}"
        );
        assert!(accepted.await.unwrap().is_none());

        let now = OffsetDateTime::now_utc();
        let mut old = IssueRequest::new(Role::Client, "old", vec![], 1);
        old.not_before = now - Days::days(3);
        old.not_after = now - Days::days(1);
        issue(ours.path(), &old).unwrap();
        let expired = load_node(ours.path(), "old").unwrap();
        let (server, accepted) = serve(&cm);
        let client = QuicEndpoint::bind(loopback(), &expired, &QuicOptions::default()).unwrap();
        let refusal = refusal_seen_by(&client, server.local_addr().unwrap())
            .await
            .expect("the server's refusal reaches the client");
        assert_eq!(
            (refusal.by, refusal.alert),
            (RefusedBy::Peer, ALERT_CERTIFICATE_EXPIRED)
        );
        assert!(
            refusal
                .to_string()
                .contains("it is expired or not yet valid"),
            "{refusal}"
        );
        assert!(accepted.await.unwrap().is_none());
    }

    #[test]
    fn only_crypto_errors_read_as_certificate_refusals() {
        let closed = |code: quinn::TransportErrorCode| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: bytes::Bytes::from_static(b"invalid peer certificate: UnknownIssuer"),
            })
        };
        let refusal = certificate_refusal(&closed(quinn::TransportErrorCode::crypto(48))).unwrap();
        assert_eq!(
            refusal.to_string(),
            "the peer refused this node's certificate: it is not signed by the cluster's CA; \
             use certificates issued (`ember certs issue`) with the CA the cluster runs with, \
             beside that CA's ca.pem (TLS alert 48 unknown_ca: invalid peer certificate: UnknownIssuer)"
        );
        assert_eq!(
            certificate_refusal(&closed(quinn::TransportErrorCode::crypto(42))).map(|r| r.alert),
            Some(ALERT_BAD_CERTIFICATE)
        );
        assert_eq!(
            certificate_refusal(&closed(quinn::TransportErrorCode::PROTOCOL_VIOLATION)),
            None
        );
        assert_eq!(certificate_refusal(&quinn::ConnectionError::TimedOut), None);
    }

    #[tokio::test]
    async fn an_expired_or_missing_client_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "t", 5, false).unwrap();
        let cm = node(dir.path(), Role::ClusterManager, "cm");
        let now = OffsetDateTime::now_utc();
        let mut old = IssueRequest::new(Role::Worker, "old", vec![], 1);
        old.not_before = now - Days::days(3);
        old.not_after = now - Days::days(1);
        issue(dir.path(), &old).unwrap();
        let expired = load_node(dir.path(), "old").unwrap();

        let (server, accepted) = serve(&cm);
        let addr = server.local_addr().unwrap();
        let client = QuicEndpoint::bind(loopback(), &expired, &QuicOptions::default()).unwrap();
        assert!(
            !usable(&client, addr).await,
            "an expired certificate gets no working connection"
        );
        assert!(accepted.await.unwrap().is_none());

        // No client certificate at all.
        let (server, accepted) = serve(&cm);
        let addr = server.local_addr().unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(&cm).unwrap())
            .with_no_client_auth();
        let mut tls = tls;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let anonymous =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
        endpoint.set_default_client_config(anonymous);
        let outcome = async {
            let conn = endpoint.connect(addr, "localhost").ok()?.await.ok()?;
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            send.write_all(b"ping").await.ok()?;
            send.finish().ok()?;
            recv.read_to_end(16).await.ok()
        };
        let worked = tokio::time::timeout(std::time::Duration::from_secs(3), outcome)
            .await
            .ok()
            .flatten();
        assert!(
            worked.is_none(),
            "a client without a certificate gets nowhere"
        );
        assert!(accepted.await.unwrap().is_none());
    }
}

//! The QUIC endpoint every node runs: quinn over rustls (ring provider,
//! TLS 1.3 only), mutual TLS against the cluster CA, and the peer's role and
//! name read from its verified certificate. A peer with a certificate from
//! another CA, an expired one, or none is refused during the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ember_certs::{NodeCredentials, NodeIdentity};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

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
    #[error("{addr} presented no usable certificate: {why}")]
    PeerIdentity { addr: SocketAddr, why: String },
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
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(creds)?, provider())
        .build()
        .map_err(|e| QuicError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![creds.cert.clone()], creds.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config(options)?);
    Ok(config)
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
}

impl QuicEndpoint {
    /// Binds `addr` (port 0 for any) and serves and dials with `creds`.
    pub fn bind(
        addr: SocketAddr,
        creds: &NodeCredentials,
        options: &QuicOptions,
    ) -> Result<Self, QuicError> {
        let mut endpoint = quinn::Endpoint::server(server_config(creds, options)?, addr)
            .map_err(|source| QuicError::Bind { addr, source })?;
        endpoint.set_default_client_config(client_config(creds, options)?);
        Ok(Self {
            endpoint,
            identity: creds.identity.clone(),
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
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            config,
            Some(server_config(creds, options)?),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| QuicError::Bind { addr, source })?;
        endpoint.set_default_client_config(client_config(creds, options)?);
        Ok(Self {
            endpoint,
            identity: creds.identity.clone(),
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
        let connection = connecting.await.map_err(|e| QuicError::Handshake {
            addr,
            why: e.to_string(),
        })?;
        let peer = peer_identity(&connection)?;
        Ok(PeerConnection { connection, peer })
    }

    /// The next peer to complete its handshake. Refused handshakes are
    /// logged and skipped; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<PeerConnection> {
        while let Some(incoming) = self.endpoint.accept().await {
            let addr = incoming.remote_address();
            match incoming.await {
                Ok(connection) => match peer_identity(&connection) {
                    Ok(peer) => return Some(PeerConnection { connection, peer }),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "refused a peer");
                        connection.close(quinn::VarInt::from_u32(1), b"no Ember role");
                    }
                },
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "refused a connection during the TLS handshake")
                }
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
            err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"),
            "{err}"
        );
        assert!(
            accepted.await.unwrap().is_none(),
            "the server accepted nobody"
        );
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

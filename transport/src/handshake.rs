//! The first frame on every connection: each side says which protocol it
//! speaks, its role and its node id, and refuses a peer on another protocol
//! with an error that both sides can log.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{FrameError, read_frame, write_frame};

/// Wire protocol spoken by this build; bump it on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a node says about itself when a connection opens.
///
/// These fields must never change shape: every Ember version has to be able
/// to read any other's `Hello`, or a mismatch would surface as a garbled
/// frame instead of [`HandshakeError::VersionMismatch`]. New fields go in
/// with `#[serde(default)]`; older peers ignore them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u32,
    /// What the node does in the cluster, e.g. `driver` or `executor`.
    pub role: String,
    pub node: String,
    /// Differs each time a node starts: two connections from one
    /// incarnation are a simultaneous open, from two a restart.
    #[serde(default)]
    pub incarnation: u64,
}

impl Hello {
    /// A hello for this build's protocol.
    pub fn new(role: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            role: role.into(),
            node: node.into(),
            incarnation: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{}", mismatch_message(*ours, *theirs, peer))]
    VersionMismatch {
        ours: u32,
        theirs: u32,
        peer: String,
    },
    #[error("the peer closed the connection before saying hello")]
    Closed,
    #[error("handshake failed: {0}")]
    Frame(#[from] FrameError),
}

fn mismatch_message(ours: u32, theirs: u32, peer: &str) -> String {
    let older = if theirs < ours {
        format!("peer {peer}")
    } else {
        "this node".to_string()
    };
    format!(
        "peer {peer} speaks Ember protocol {theirs}, this node speaks {ours}: \
         upgrade {older} so both run the same Ember version"
    )
}

/// Accepts `theirs` if it speaks our protocol.
pub fn check_hello(ours: &Hello, theirs: &Hello) -> Result<(), HandshakeError> {
    if ours.protocol != theirs.protocol {
        return Err(HandshakeError::VersionMismatch {
            ours: ours.protocol,
            theirs: theirs.protocol,
            peer: theirs.node.clone(),
        });
    }
    Ok(())
}

/// Sends our hello, reads the peer's and checks it; returns the peer's.
///
/// Both sides send before reading; a hello is far smaller than any stream
/// buffer, so neither side waits on the other.
pub async fn exchange_hello<R, W>(
    r: &mut R,
    w: &mut W,
    ours: &Hello,
    max: usize,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    write_frame(w, ours, max).await?;
    let theirs: Hello = read_frame(r, max).await?.ok_or(HandshakeError::Closed)?;
    check_hello(ours, &theirs)?;
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_FRAME, decode, encode};

    #[test]
    fn same_protocol_is_accepted() {
        let driver = Hello::new("driver", "node-a");
        let executor = Hello::new("executor", "node-b");
        assert!(check_hello(&driver, &executor).is_ok());
        assert!(check_hello(&executor, &driver).is_ok());
    }

    #[test]
    fn a_version_mismatch_says_who_to_upgrade_on_both_sides() {
        let old = Hello::new("driver", "node-a");
        let new = Hello {
            protocol: PROTOCOL_VERSION + 1,
            ..Hello::new("executor", "node-b")
        };

        let on_old = check_hello(&old, &new).unwrap_err();
        assert!(matches!(
            &on_old,
            HandshakeError::VersionMismatch { ours, theirs, peer }
                if *ours == PROTOCOL_VERSION && *theirs == PROTOCOL_VERSION + 1 && peer == "node-b"
        ));
        assert_eq!(
            on_old.to_string(),
            "peer node-b speaks Ember protocol 2, this node speaks 1: \
             upgrade this node so both run the same Ember version"
        );

        let on_new = check_hello(&new, &old).unwrap_err();
        assert_eq!(
            on_new.to_string(),
            "peer node-a speaks Ember protocol 1, this node speaks 2: \
             upgrade peer node-a so both run the same Ember version"
        );
    }

    #[test]
    fn a_newer_hello_with_extra_fields_still_reads() {
        #[derive(Serialize)]
        struct FutureHello {
            protocol: u32,
            role: String,
            node: String,
            features: Vec<String>,
        }
        let future = FutureHello {
            protocol: 9,
            role: "executor".to_string(),
            node: "node-z".to_string(),
            features: vec!["zstd".to_string()],
        };
        let frame = encode(&future, DEFAULT_MAX_FRAME).unwrap();
        let theirs: Hello = decode(&frame[4..]).unwrap();
        let err = check_hello(&Hello::new("driver", "node-a"), &theirs).unwrap_err();
        assert!(matches!(
            err,
            HandshakeError::VersionMismatch { theirs: 9, .. }
        ));
    }

    #[tokio::test]
    async fn both_ends_of_an_exchange_learn_the_peer_or_the_mismatch() {
        let (a, b) = tokio::io::duplex(1024);
        let (mut a_r, mut a_w) = tokio::io::split(a);
        let (mut b_r, mut b_w) = tokio::io::split(b);
        let driver = Hello::new("driver", "node-a");
        let executor = Hello::new("executor", "node-b");
        let (got_a, got_b) = tokio::join!(
            exchange_hello(&mut a_r, &mut a_w, &driver, DEFAULT_MAX_FRAME),
            exchange_hello(&mut b_r, &mut b_w, &executor, DEFAULT_MAX_FRAME),
        );
        assert_eq!(got_a.unwrap(), executor);
        assert_eq!(got_b.unwrap(), driver);

        let (a, b) = tokio::io::duplex(1024);
        let (mut a_r, mut a_w) = tokio::io::split(a);
        let (mut b_r, mut b_w) = tokio::io::split(b);
        let newer = Hello {
            protocol: PROTOCOL_VERSION + 1,
            ..executor.clone()
        };
        let (got_a, got_b) = tokio::join!(
            exchange_hello(&mut a_r, &mut a_w, &driver, DEFAULT_MAX_FRAME),
            exchange_hello(&mut b_r, &mut b_w, &newer, DEFAULT_MAX_FRAME),
        );
        assert!(matches!(got_a, Err(HandshakeError::VersionMismatch { .. })));
        assert!(matches!(got_b, Err(HandshakeError::VersionMismatch { .. })));
    }

    #[tokio::test]
    async fn a_peer_that_closes_without_hello_is_reported() {
        let mut r: &[u8] = &[];
        let mut w = Vec::new();
        let got = exchange_hello(&mut r, &mut w, &Hello::new("driver", "a"), 1024).await;
        assert!(matches!(got, Err(HandshakeError::Closed)));
    }
}

//! What travels on a connection's control stream after the hello: one
//! [`Header`] per frame, followed in the same frame by the message body
//! (itself named msgpack) when there is one. The header says where the body
//! goes, so the node can route it without knowing the body's type.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::down::ExitReason;
use crate::frame::{FrameError, HEADER_LEN};

/// QUIC application error codes Ember closes connections and streams with.
/// The peer's log shows the code and the reason text.
pub mod codes {
    /// Closed on purpose: the node is shutting down.
    pub const NORMAL: u32 = 0;
    /// Bytes that are not the Ember protocol: garbage, a truncated or empty
    /// frame, an unknown header.
    pub const PROTOCOL: u32 = 1;
    /// A frame or bulk message above the configured limit.
    pub const TOO_LARGE: u32 = 2;
    /// The hello failed: another protocol version, a node id that does not
    /// match the certificate, or no hello in time.
    pub const HANDSHAKE: u32 = 3;
    /// No frame from the peer within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u32 = 4;
    /// The peer does not read what it is sent; the queue towards it is full.
    pub const SLOW_PEER: u32 = 5;
    /// A bulk stream for an inbox that is not open here.
    pub const NO_SUCH_ACTOR: u32 = 7;
    /// A newer connection from the same node took this one's place.
    pub const REPLACED: u32 = 8;
}

/// Why an actor's node turned a message down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("no actor of that name is registered there")]
    NoSuchActor,
    #[error("the actor stopped before answering")]
    Gone,
    #[error("a {role} certificate may not send to this actor")]
    Forbidden { role: String },
    #[error("it cannot read the message ({0}); check that every node runs the same Ember version")]
    Unreadable(String),
    #[error("its answer cannot be sent back: {0}")]
    Unanswerable(String),
}

/// The routing part of every control frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Header {
    /// A one-way message for actor `to`; the body follows.
    Tell { to: String },
    /// A request for actor `to`; the body follows and a `Reply` or
    /// `Refused` with the same id comes back.
    Ask { id: u64, to: String },
    /// The answer to ask `id`; the body follows.
    Reply { id: u64 },
    /// Ask `id` (or, without an id, a tell) to `to` was turned down.
    Refused {
        id: Option<u64>,
        to: String,
        why: Refusal,
    },
    /// Tell this node when actor `target` ends.
    Monitor { target: String },
    /// Actor `actor`, which this node monitored, has ended.
    Down { actor: String, reason: ExitReason },
    /// Nothing to say, but still here.
    Heartbeat,
}

/// One control frame: length prefix, header, then the body if any.
pub(crate) fn envelope<B: Serialize>(
    header: &Header,
    body: Option<&B>,
    max: usize,
) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(64).writer();
    out.get_mut().put_u32(0);
    rmp_serde::encode::write_named(&mut out, header)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if let Some(body) = body {
        rmp_serde::encode::write_named(&mut out, body)
            .map_err(|e| FrameError::Encode(e.to_string()))?;
    }
    let mut buf = out.into_inner();
    let len = buf.len() - HEADER_LEN;
    let max = max.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLargeToSend { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLargeToSend { len, max })?;
    buf[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf.freeze())
}

/// A frame with only a header.
pub(crate) fn header_only(header: &Header, max: usize) -> Result<Bytes, FrameError> {
    envelope::<()>(header, None, max)
}

/// Splits a frame payload into its header and the body bytes after it.
pub(crate) fn open(payload: Bytes) -> Result<(Header, Bytes), FrameError> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(&payload[..]));
    de.set_max_depth(32);
    let header = Header::deserialize(&mut de).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let used = usize::try_from(de.get_ref().position()).unwrap_or(payload.len());
    let body = payload.slice(used.min(payload.len())..);
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame::{FrameDecoder, decode};

    fn roundtrip(header: Header, body: Option<&String>) -> (Header, Bytes) {
        let frame = envelope(&header, body, 1 << 20).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.push(&frame).unwrap();
        open(decoder.next_frame().unwrap().unwrap()).unwrap()
    }

    #[test]
    fn header_and_body_come_apart_again() {
        let body = "hello".to_string();
        let (header, rest) = roundtrip(
            Header::Ask {
                id: 7,
                to: "echo".into(),
            },
            Some(&body),
        );
        assert_eq!(
            header,
            Header::Ask {
                id: 7,
                to: "echo".into()
            }
        );
        assert_eq!(decode::<String>(&rest).unwrap(), "hello");

        let (header, rest) = roundtrip(Header::Heartbeat, None);
        assert_eq!(header, Header::Heartbeat);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_body_above_the_limit_is_not_sent() {
        let body = "x".repeat(100);
        let err = envelope(&Header::Tell { to: "a".into() }, Some(&body), 50).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLargeToSend { max: 50, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_header_is_malformed() {
        #[derive(Serialize)]
        enum Future {
            Teleport { to: String },
        }
        let bytes = rmp_serde::to_vec_named(&Future::Teleport { to: "x".into() }).unwrap();
        assert!(matches!(
            open(Bytes::from(bytes)),
            Err(FrameError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn any_payload_opens_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = open(Bytes::from(bytes));
        }
    }
}

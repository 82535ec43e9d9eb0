//! Wire framing between nodes: each message is a 4-byte big-endian length
//! followed by that many bytes of named msgpack. Owns the size limit, a
//! sans-I/O incremental decoder, and thin async read/write helpers.

use std::io::Cursor;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload accepted unless configured otherwise: big enough for task
/// descriptions and plans, small enough that a bad peer cannot exhaust memory.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Bytes of the length prefix in front of every payload.
pub const HEADER_LEN: usize = 4;

/// Nesting limit for decoded messages; deeper input is rejected as malformed
/// instead of recursing until the stack overflows.
const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "frame of {len} bytes exceeds the limit of {max} bytes: raise \
         `ember.transport.maxFrameBytes` on every node if messages this large are expected, \
         otherwise the peer is not speaking the Ember protocol"
    )]
    TooLarge { len: usize, max: usize },
    #[error(
        "a message of {len} bytes exceeds the frame limit of {max} bytes: raise \
         `ember.transport.maxFrameBytes` on every node if messages this large are expected"
    )]
    TooLargeToSend { len: usize, max: usize },
    #[error(
        "received a frame announcing 0 bytes, which Ember never sends: the peer is not \
         speaking the Ember protocol or the stream is corrupted; closing it"
    )]
    Empty,
    #[error(
        "the stream ended in the middle of a frame: the peer closed or failed while \
         sending, and that message is lost"
    )]
    Truncated,
    #[error(
        "frame payload is not a message this node understands ({0}): check that every \
         node runs the same Ember version"
    )]
    Malformed(String),
    #[error("could not encode the message for the wire: {0}")]
    Encode(String),
    #[error("transport I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The limit actually enforced: the length prefix cannot express more than
/// `u32::MAX`, whatever was configured.
fn effective_max(max: usize) -> usize {
    max.min(u32::MAX as usize)
}

/// Serializes `msg` as one frame (length prefix included).
///
/// Uses named msgpack so structs travel as maps and enums by variant name:
/// a peer with extra fields or a reordered struct still decodes.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Bytes, FrameError> {
    let max = effective_max(max);
    let mut out = BytesMut::new().writer();
    // Reserve the prefix now and fill it in once the payload length is known.
    out.get_mut().put_u32(0);
    rmp_serde::encode::write_named(&mut out, msg).map_err(|e| FrameError::Encode(e.to_string()))?;
    let mut buf = out.into_inner();
    let len = buf.len() - HEADER_LEN;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLargeToSend { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLargeToSend { len, max })?;
    buf[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf.freeze())
}

/// Deserializes one frame payload (without its length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(payload));
    de.set_max_depth(MAX_DEPTH);
    let msg = T::deserialize(&mut de).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let used = de.get_ref().position();
    let total = payload.len() as u64;
    if used != total {
        // One frame carries one message; leftovers mean a corrupted or foreign stream.
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            total.saturating_sub(used)
        )));
    }
    Ok(msg)
}

/// Why a decoder stopped; kept so every later call reports the same cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    TooLarge { len: usize, max: usize },
    Empty,
}

impl Failure {
    fn to_error(self) -> FrameError {
        match self {
            Failure::TooLarge { len, max } => FrameError::TooLarge { len, max },
            Failure::Empty => FrameError::Empty,
        }
    }
}

/// Incremental frame decoder with no I/O: feed it bytes as they arrive with
/// [`push`](Self::push) and take complete payloads with
/// [`next_frame`](Self::next_frame).
///
/// A length prefix above the limit is rejected as soon as its 4 bytes are
/// seen, so if the caller drains frames after each push the buffer never
/// holds more than `max + 4` bytes plus the bytes of one push. After an error
/// the decoder stays failed and the caller should close the stream.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: BytesMut,
    failed: Option<Failure>,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            max: effective_max(max),
            buf: BytesMut::new(),
            failed: None,
        }
    }

    /// Appends received bytes and checks the pending frame's length prefix.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(failure) = self.failed {
            return Err(failure.to_error());
        }
        self.buf.extend_from_slice(bytes);
        self.check_header().map(|_| ())
    }

    /// The payload of the next complete frame, or `None` until more bytes
    /// arrive.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(failure) = self.failed {
            return Err(failure.to_error());
        }
        let Some(len) = self.check_header()? else {
            return Ok(None);
        };
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        // Check the following frame's prefix now rather than on the next push;
        // a bad one is recorded and reported by the next call, after this good frame.
        let _ = self.check_header();
        Ok(Some(payload))
    }

    /// Bytes held for frames not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Reports end of stream: [`FrameError::Truncated`] if a frame was left
    /// incomplete.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(failure) = self.failed {
            return Err(failure.to_error());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }

    /// The pending frame's payload length once its prefix is complete.
    fn check_header(&mut self) -> Result<Option<usize>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        let failure = if len == 0 {
            Failure::Empty
        } else if len > self.max {
            Failure::TooLarge { len, max: self.max }
        } else {
            return Ok(Some(len));
        };
        self.failed = Some(failure);
        // The stream is dead; give the memory back now.
        self.buf = BytesMut::new();
        Err(failure.to_error())
    }
}

/// Writes `msg` as one frame and flushes it.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode(msg, max)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads and decodes one frame: `Ok(None)` on a clean end of stream between
/// frames, [`FrameError::Truncated`] if the stream ends inside one.
pub async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_payload(r, max).await? {
        Some(payload) => decode(&payload).map(Some),
        None => Ok(None),
    }
}

/// Reads one frame's payload without decoding it.
pub async fn read_payload<R>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let max = effective_max(max);
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grow with the bytes that actually arrive, not with what the prefix
    // promises, so a peer that announces a big frame and stalls costs little.
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    let got = r.take(len as u64).read_to_end(&mut payload).await?;
    if got < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping,
        Launch { task: u64, stage: u32, plan: String },
        Pair(i64, bool),
        Block(Block),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Block {
        id: String,
        bytes: Vec<u8>,
        checksum: Option<u32>,
    }

    fn samples() -> Vec<Msg> {
        vec![
            Msg::Ping,
            Msg::Launch {
                task: 7,
                stage: 2,
                plan: "SELECT 1".to_string(),
            },
            Msg::Pair(-3, true),
            Msg::Block(Block {
                id: "shuffle_0_1_2".to_string(),
                bytes: (0..=255).collect(),
                checksum: Some(42),
            }),
        ]
    }

    fn stream_of(msgs: &[Msg]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| encode(m, DEFAULT_MAX_FRAME).unwrap().to_vec())
            .collect()
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled) and decodes every frame.
    fn decode_chunked(bytes: &[u8], sizes: &[usize], max: usize) -> Result<Vec<Msg>, FrameError> {
        let mut dec = FrameDecoder::new(max);
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            i += 1;
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            dec.push(chunk)?;
            while let Some(payload) = dec.next_frame()? {
                out.push(decode(&payload)?);
            }
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn messages_round_trip_through_encode_and_decode() {
        for msg in samples() {
            let frame = encode(&msg, DEFAULT_MAX_FRAME).unwrap();
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            assert_eq!(decode::<Msg>(&frame[4..]).unwrap(), msg);
        }
    }

    #[test]
    fn a_stream_split_at_every_byte_boundary_decodes_the_same() {
        let msgs = samples();
        let bytes = stream_of(&msgs);
        for cut in 0..=bytes.len() {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut out = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                dec.push(part).unwrap();
                while let Some(p) = dec.next_frame().unwrap() {
                    out.push(decode::<Msg>(&p).unwrap());
                }
            }
            assert_eq!(out, msgs, "split at byte {cut}");
            dec.finish().unwrap();
        }
        // One byte at a time too.
        assert_eq!(
            decode_chunked(&bytes, &[1], DEFAULT_MAX_FRAME).unwrap(),
            msgs
        );
    }

    #[test]
    fn an_oversized_length_is_rejected_after_just_the_header() {
        let max = 1024;
        let mut dec = FrameDecoder::new(max);
        let header = 1_000_000u32.to_be_bytes();
        dec.push(&header[..3]).unwrap();
        assert_eq!(dec.next_frame().unwrap(), None);
        let err = dec.push(&header[3..]).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 1_000_000,
                    max: 1024
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ember.transport.maxFrameBytes"));
        assert_eq!(dec.buffered(), 0);
        // The decoder stays failed and buffers nothing more.
        let err = dec.push(&[0u8; 4096]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
        assert!(matches!(dec.finish(), Err(FrameError::TooLarge { .. })));
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn an_oversized_frame_behind_a_good_one_is_rejected_before_its_body() {
        let max = 64;
        let mut bytes = encode(&Msg::Ping, max).unwrap().to_vec();
        bytes.extend_from_slice(&(max as u32 + 1).to_be_bytes());
        let mut dec = FrameDecoder::new(max);
        dec.push(&bytes).unwrap();
        assert_eq!(
            decode::<Msg>(&dec.next_frame().unwrap().unwrap()).unwrap(),
            Msg::Ping
        );
        // The bad prefix came with the good frame; it fails before any body arrives.
        assert_eq!(dec.buffered(), 0);
        assert!(matches!(
            dec.push(&[0u8; 10]),
            Err(FrameError::TooLarge { len: 65, max: 64 })
        ));
    }

    #[test]
    fn encode_refuses_a_message_over_the_limit() {
        let big = Msg::Block(Block {
            id: "b".to_string(),
            bytes: vec![7; 2000],
            checksum: None,
        });
        assert!(matches!(
            encode(&big, 1000),
            Err(FrameError::TooLargeToSend { max: 1000, .. })
        ));
        assert!(encode(&big, 10_000).is_ok());
    }

    #[test]
    fn a_zero_length_frame_is_an_error() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert!(matches!(dec.push(&[0, 0, 0, 0]), Err(FrameError::Empty)));
        assert!(matches!(dec.next_frame(), Err(FrameError::Empty)));
    }

    #[test]
    fn garbage_and_truncated_input_give_errors_not_panics() {
        let garbage: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: ember\r\n\r\n",
            &[0xff; 64],
            &[0, 0, 0, 3, 0xc1, 0xc1, 0xc1],
            &[0, 0, 0, 1, 0x93],
        ];
        for bytes in garbage {
            assert!(
                decode_chunked(bytes, &[1, 3, 7], 1024).is_err(),
                "{bytes:?}"
            );
        }

        let bytes = stream_of(&samples());
        for cut in 1..bytes.len() {
            let result = decode_chunked(&bytes[..cut], &[5], DEFAULT_MAX_FRAME);
            // A cut at a frame boundary is a shorter valid stream; anywhere else is truncated.
            if let Err(err) = result {
                assert!(matches!(err, FrameError::Truncated), "cut {cut}: {err}");
            }
        }
        assert!(matches!(
            decode_chunked(&bytes[..bytes.len() - 1], &[5], DEFAULT_MAX_FRAME),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn hostile_payloads_are_malformed_without_huge_allocations_or_stack_overflow() {
        // A bin32 claiming 4 GiB, an array claiming 4 billion elements, and deep nesting.
        let bin = [0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            decode::<Block>(&bin),
            Err(FrameError::Malformed(_))
        ));
        let array = [0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            decode::<Vec<u64>>(&array),
            Err(FrameError::Malformed(_))
        ));
        let nested = vec![0x91; 100_000];
        assert!(matches!(
            decode::<Msg>(&nested),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode::<serde::de::IgnoredAny>(&nested),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn an_unknown_variant_is_malformed() {
        #[derive(Serialize)]
        enum Newer {
            Ping,
            Rebalance { shards: u32 },
        }
        let frame = encode(&Newer::Rebalance { shards: 3 }, DEFAULT_MAX_FRAME).unwrap();
        let err = decode::<Msg>(&frame[4..]).unwrap_err();
        assert!(
            matches!(&err, FrameError::Malformed(why) if why.contains("Rebalance")),
            "{err}"
        );
        let frame = encode(&Newer::Ping, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode::<Msg>(&frame[4..]).unwrap(), Msg::Ping);
    }

    #[test]
    fn a_field_added_by_a_newer_peer_is_ignored() {
        #[derive(Serialize)]
        struct NewerBlock {
            id: String,
            compression: String,
            bytes: Vec<u8>,
            checksum: Option<u32>,
        }
        let newer = NewerBlock {
            id: "b".to_string(),
            compression: "zstd".to_string(),
            bytes: vec![1, 2],
            checksum: None,
        };
        let frame = encode(&newer, DEFAULT_MAX_FRAME).unwrap();
        let block: Block = decode(&frame[4..]).unwrap();
        assert_eq!(block.bytes, vec![1, 2]);
    }

    #[test]
    fn trailing_bytes_after_a_message_are_malformed() {
        let frame = encode(&Msg::Ping, DEFAULT_MAX_FRAME).unwrap();
        let mut payload = frame[4..].to_vec();
        payload.push(0xc0);
        assert!(matches!(
            decode::<Msg>(&payload),
            Err(FrameError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn read_frame_reads_until_a_clean_end_of_stream() {
        let msgs = samples();
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn({
            let msgs = msgs.clone();
            async move {
                for m in &msgs {
                    write_frame(&mut client, m, DEFAULT_MAX_FRAME)
                        .await
                        .unwrap();
                }
                // Dropping the client closes the stream at a frame boundary.
            }
        });
        let mut got = Vec::new();
        while let Some(m) = read_frame::<_, Msg>(&mut server, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
        {
            got.push(m);
        }
        writer.await.unwrap();
        assert_eq!(got, msgs);
    }

    #[tokio::test]
    async fn read_frame_reports_truncation_and_oversize() {
        let bytes = stream_of(&[Msg::Ping, Msg::Pair(1, false)]);
        let first = encode(&Msg::Ping, DEFAULT_MAX_FRAME).unwrap().len();

        // Cut inside the second frame's body.
        let mut r = &bytes[..bytes.len() - 1];
        assert_eq!(
            read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME)
                .await
                .unwrap(),
            Some(Msg::Ping)
        );
        assert!(matches!(
            read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME).await,
            Err(FrameError::Truncated)
        ));

        // Cut inside the second frame's header.
        let mut r = &bytes[..first + 2];
        read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert!(matches!(
            read_frame::<_, Msg>(&mut r, DEFAULT_MAX_FRAME).await,
            Err(FrameError::Truncated)
        ));

        // A prefix over the limit fails before any body is read.
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let mut r = &huge[..];
        assert!(matches!(
            read_frame::<_, Msg>(&mut r, 1024).await,
            Err(FrameError::TooLarge { max: 1024, .. })
        ));
        assert_eq!(r.len(), 16);

        let mut empty: &[u8] = &[];
        assert!(
            read_frame::<_, Msg>(&mut empty, 1024)
                .await
                .unwrap()
                .is_none()
        );
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            Just(Msg::Ping),
            (any::<u64>(), any::<u32>(), ".{0,40}").prop_map(|(task, stage, plan)| Msg::Launch {
                task,
                stage,
                plan
            }),
            (any::<i64>(), any::<bool>()).prop_map(|(a, b)| Msg::Pair(a, b)),
            (
                "[a-z_0-9]{0,20}",
                proptest::collection::vec(any::<u8>(), 0..300),
                any::<Option<u32>>()
            )
                .prop_map(|(id, bytes, checksum)| Msg::Block(Block {
                    id,
                    bytes,
                    checksum
                })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_messages_survive_any_chunking(
            msgs in proptest::collection::vec(arb_msg(), 0..8),
            sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let bytes = stream_of(&msgs);
            prop_assert_eq!(decode_chunked(&bytes, &sizes, DEFAULT_MAX_FRAME).unwrap(), msgs);
        }

        #[test]
        fn any_bytes_never_panic_or_overfill_the_buffer(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            sizes in proptest::collection::vec(1usize..128, 1..8),
            max in 1usize..512,
        ) {
            let mut dec = FrameDecoder::new(max);
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                i += 1;
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                if dec.push(chunk).is_err() {
                    prop_assert_eq!(dec.buffered(), 0);
                    break;
                }
                prop_assert!(dec.buffered() <= max + HEADER_LEN + chunk.len());
                loop {
                    match dec.next_frame() {
                        Ok(Some(payload)) => {
                            prop_assert!(!payload.is_empty() && payload.len() <= max);
                            let _ = decode::<Msg>(&payload);
                        }
                        Ok(None) => break,
                        Err(_) => break,
                    }
                }
                prop_assert!(dec.buffered() < max + HEADER_LEN);
            }
        }
    }
}

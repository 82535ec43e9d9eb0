//! Fuzzes the frame decoder: arbitrary bytes, fed in several chunkings, must
//! give frames or errors, never a panic, and never more buffered bytes than
//! the limit allows.
#![no_main]

use ember_transport::frame::{FrameDecoder, HEADER_LEN, decode};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// Small limit so that the fuzzer reaches the oversize path easily.
const MAX: usize = 4096;

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Only decoded, never read: the fuzzer checks decoding itself.
enum Probe {
    Ping,
    Launch {
        task: u64,
        plan: String,
    },
    Pair(i64, bool),
    Block {
        id: String,
        bytes: Vec<u8>,
        checksum: Option<u32>,
    },
    Nested(Vec<Probe>),
}

fuzz_target!(|data: &[u8]| {
    for chunk in [1, 3, 64, data.len().max(1)] {
        let mut decoder = FrameDecoder::new(MAX);
        'stream: for part in data.chunks(chunk) {
            if decoder.push(part).is_err() {
                assert_eq!(decoder.buffered(), 0);
                break;
            }
            assert!(decoder.buffered() <= MAX + HEADER_LEN + part.len());
            loop {
                match decoder.next_frame() {
                    Ok(Some(payload)) => {
                        assert!(!payload.is_empty() && payload.len() <= MAX);
                        let _ = decode::<Probe>(&payload);
                    }
                    Ok(None) => break,
                    Err(_) => break 'stream,
                }
            }
        }
        let _ = decoder.finish();
    }
});

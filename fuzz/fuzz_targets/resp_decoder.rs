//! The RESP scanners on arbitrary bytes: no panic, and input fed in two
//! pieces (split where the first byte says) scans exactly as when fed whole,
//! since pipelines reach poolside in arbitrary pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolside::resp::{CommandScanner, Limits, ProtocolError, ReplyScanner};

type Frames = Vec<Vec<Vec<u8>>>;

/// Frames scanned from `input` fed as `input[..cut]` then all of it, and the
/// error that stopped scanning, if any.
fn commands(input: &[u8], cut: usize) -> (Frames, Option<ProtocolError>) {
    let limits = Limits {
        max_frame_bytes: 4096,
        max_args: 64,
    };
    let mut scanner = CommandScanner::new(limits);
    let mut frames = Vec::new();
    for end in [cut, input.len()] {
        let buf = &input[..end];
        loop {
            match scanner.next_frame(buf) {
                Ok(Some(f)) => {
                    assert!(f.start <= f.end && f.end <= buf.len());
                    let args = (0..f.argc()).map(|i| scanner.arg(buf, &f, i).unwrap().to_vec());
                    frames.push(args.collect());
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Reply end offsets, fed the same way.
fn replies(input: &[u8], cut: usize) -> (Vec<usize>, Option<ProtocolError>) {
    let mut scanner = ReplyScanner::default();
    let mut ends = Vec::new();
    let mut at = 0;
    for end in [cut, input.len()] {
        loop {
            match scanner.scan(&input[..end], at) {
                Ok(Some(next)) => {
                    assert!(next > at && next <= end);
                    ends.push(next);
                    at = next;
                }
                Ok(None) => break,
                Err(e) => return (ends, Some(e)),
            }
        }
    }
    (ends, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(selector) * input.len() / 255;
    assert_eq!(commands(input, cut), commands(input, input.len()));
    assert_eq!(replies(input, cut), replies(input, input.len()));
});

//! Property tests of the RESP scanners, in the normal suite (no nightly):
//! a valid pipeline split at every byte boundary yields the same frames, and
//! arbitrary bytes never panic the scanners, the command table or the policy.

use bytes::{Buf, BytesMut};
use poolside::command::classify;
use poolside::proxy::Policy;
use poolside::resp::{CommandScanner, Limits, ReplyScanner};
use proptest::prelude::*;

type Command = Vec<Vec<u8>>;

/// A command either as a RESP array (any bytes) or as an inline line.
fn command() -> impl Strategy<Value = (Command, bool)> {
    prop_oneof![
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..5)
            .prop_map(|args| (args, false)),
        prop::collection::vec("[A-Za-z0-9_:]{1,8}", 1..4)
            .prop_map(|words| { (words.into_iter().map(String::into_bytes).collect(), true) }),
    ]
}

fn encode(commands: &[(Command, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (args, inline) in commands {
        if *inline {
            let words: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            out.extend(words.join(&b' '));
            out.extend_from_slice(b"\r\n");
            continue;
        }
        out.extend(format!("*{}\r\n", args.len()).into_bytes());
        for a in args {
            out.extend(format!("${}\r\n", a.len()).into_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Feeds `input` in the given pieces the way a session does: scan what is
/// buffered, drop the bytes of finished frames, read more, repeat.
fn scan_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<Command> {
    let mut scanner = CommandScanner::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(fed, input.len());
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        let mut consumed = 0;
        while let Some(f) = scanner.next_frame(&buf).expect("valid input") {
            frames.push(
                (0..f.argc())
                    .map(|i| scanner.arg(&buf, &f, i).unwrap().to_vec())
                    .collect(),
            );
            consumed = f.end;
        }
        buf.advance(consumed);
        scanner.consume(consumed);
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_single_split_yields_the_same_frames(commands in prop::collection::vec(command(), 1..6)) {
        let input = encode(&commands);
        let expected: Vec<Command> = commands.iter().map(|(c, _)| c.clone()).collect();
        prop_assert_eq!(&scan_in_pieces(&input, &[]), &expected);
        for cut in 0..=input.len() {
            prop_assert_eq!(&scan_in_pieces(&input, &[cut]), &expected, "split at {}", cut);
        }
    }

    #[test]
    fn any_chunking_yields_the_same_frames(
        commands in prop::collection::vec(command(), 1..8),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let input = encode(&commands);
        let expected: Vec<Command> = commands.iter().map(|(c, _)| c.clone()).collect();
        let mut cuts: Vec<usize> = cuts.drain(..).map(|i| i.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(scan_in_pieces(&input, &cuts), expected);
    }

    #[test]
    fn random_bytes_never_panic_the_command_path(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let limits = Limits { max_frame_bytes: 256, max_args: 8 };
        let policy = Policy::new(&["FLUSHALL".to_string(), "SCRIPT KILL".to_string()]);
        let mut scanner = CommandScanner::new(limits);
        let cut = cut.index(bytes.len() + 1);
        // A session closes the client at the first error; so does this.
        'feed: for end in [cut, bytes.len()] {
            let buf = &bytes[..end];
            loop {
                match scanner.next_frame(buf) {
                    Ok(Some(f)) => {
                        prop_assert!(f.start <= f.end && f.end <= buf.len());
                        let name = scanner.arg(buf, &f, 0).unwrap_or_default();
                        let _ = classify(name, scanner.arg(buf, &f, 1));
                        let _ = policy.denied(name, scanner.arg(buf, &f, 1));
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_reply_scanner(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut scanner = ReplyScanner::default();
        let cut = cut.index(bytes.len() + 1);
        let mut at = 0;
        'feed: for end in [cut, bytes.len()] {
            loop {
                match scanner.scan(&bytes[..end], at) {
                    Ok(Some(next)) => {
                        prop_assert!(next > at && next <= end);
                        at = next;
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

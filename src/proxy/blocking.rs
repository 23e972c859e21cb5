//! How long a blocking command may wait in Redis before it answers, from
//! its own timeout argument: the response timeout is counted on top of it,
//! and a command that may wait forever (`BLPOP key 0`) is never cut off.

use std::time::Duration;

pub use crate::backend::Wait;
use crate::resp::{CommandScanner, Frame};

/// The wait `f` (a command of the blocking class) may ask for.
pub fn wait_of(scanner: &CommandScanner, buf: &[u8], f: &Frame) -> Wait {
    let arg = |i: usize| scanner.arg(buf, f, i);
    let name = arg(0).unwrap_or_default().to_ascii_uppercase();
    let last = f.argc().saturating_sub(1);
    match name.as_slice() {
        b"BLMPOP" | b"BZMPOP" => seconds(arg(1)),
        b"WAIT" | b"WAITAOF" => millis(arg(last)),
        b"XREAD" | b"XREADGROUP" => {
            let block =
                (1..f.argc()).find(|&i| arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"BLOCK")));
            match block {
                Some(i) => millis(arg(i + 1)),
                None => Wait::None,
            }
        }
        _ => seconds(arg(last)),
    }
}

fn seconds(arg: Option<&[u8]>) -> Wait {
    let value = arg
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<f64>().ok());
    match value {
        Some(s) if s > 0.0 && s.is_finite() && s < 1e9 => Wait::For(Duration::from_secs_f64(s)),
        _ => Wait::Forever,
    }
}

fn millis(arg: Option<&[u8]>) -> Wait {
    let value = arg
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.parse::<u64>().ok());
    match value {
        Some(ms) if ms > 0 => Wait::For(Duration::from_millis(ms)),
        _ => Wait::Forever,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{write_command, Limits};

    fn wait(args: &[&str]) -> Wait {
        let mut buf = bytes::BytesMut::new();
        write_command(
            &mut buf,
            args.iter()
                .map(|a| a.as_bytes())
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let mut scanner = CommandScanner::new(Limits::default());
        let f = scanner.next_frame(&buf).expect("valid").expect("whole");
        wait_of(&scanner, &buf, &f)
    }

    #[test]
    fn reads_each_commands_own_timeout() {
        assert_eq!(
            wait(&["BLPOP", "a", "b", "1.5"]),
            Wait::For(Duration::from_millis(1500))
        );
        assert_eq!(wait(&["BLPOP", "a", "0"]), Wait::Forever);
        assert_eq!(
            wait(&["blmove", "a", "b", "LEFT", "RIGHT", "2"]),
            Wait::For(Duration::from_secs(2))
        );
        assert_eq!(
            wait(&["BLMPOP", "3", "1", "a", "LEFT"]),
            Wait::For(Duration::from_secs(3))
        );
        assert_eq!(
            wait(&["WAIT", "1", "250"]),
            Wait::For(Duration::from_millis(250))
        );
        assert_eq!(wait(&["WAIT", "1", "0"]), Wait::Forever);
        assert_eq!(
            wait(&["XREAD", "BLOCK", "100", "STREAMS", "s", "$"]),
            Wait::For(Duration::from_millis(100))
        );
        assert_eq!(wait(&["XREAD", "STREAMS", "s", "0"]), Wait::None);
        assert_eq!(wait(&["BLPOP", "a", "soon"]), Wait::Forever);
        assert_eq!(
            Wait::None.max(Wait::For(Duration::from_secs(1))),
            Wait::For(Duration::from_secs(1))
        );
        assert_eq!(
            Wait::For(Duration::from_secs(1)).max(Wait::Forever),
            Wait::Forever
        );
    }
}

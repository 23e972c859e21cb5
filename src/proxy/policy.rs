//! The command policy: a profile's deny-list, checked for every command
//! before it can reach Redis (pipelines, MULTI and pub/sub included).

use bytes::BytesMut;

use crate::resp::write_error;

#[derive(Debug, Clone)]
struct Entry {
    name: Vec<u8>,
    /// `None` refuses every subcommand.
    sub: Option<Vec<u8>>,
    /// As the refusal names it: `FLUSHALL`, `SCRIPT KILL`.
    shown: String,
}

/// A compiled deny-list. Checking a command against an empty list is one
/// branch; against a list, a length test and a case-insensitive compare per
/// entry of that length, without allocating.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    entries: Vec<Entry>,
    /// Bit `n` set when some entry's name is `n` bytes long (n < 64).
    name_lengths: u64,
}

impl Policy {
    /// Entries are `NAME` or `NAME SUB`, case-insensitive (validated at start).
    pub fn new(deny: &[String]) -> Policy {
        let mut policy = Policy::default();
        for entry in deny {
            let mut words = entry.split_whitespace().map(str::to_ascii_uppercase);
            let Some(name) = words.next() else { continue };
            let sub = words.next();
            let shown = match &sub {
                Some(sub) => format!("{name} {sub}"),
                None => name.clone(),
            };
            if name.len() < 64 {
                policy.name_lengths |= 1 << name.len();
            }
            policy.entries.push(Entry {
                name: name.into_bytes(),
                sub: sub.map(String::into_bytes),
                shown,
            });
        }
        policy
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry refusing this command (name plus first argument), if any.
    #[inline]
    pub fn denied(&self, name: &[u8], sub: Option<&[u8]>) -> Option<&str> {
        if self.entries.is_empty()
            || (name.len() < 64 && self.name_lengths & (1 << name.len()) == 0)
        {
            return None;
        }
        self.entries
            .iter()
            .find(|e| {
                e.name.eq_ignore_ascii_case(name)
                    && match (&e.sub, sub) {
                        (None, _) => true,
                        (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                        (Some(_), None) => false,
                    }
            })
            .map(|e| e.shown.as_str())
    }
}

/// `-ERR command 'X' is disabled by poolside policy`.
pub fn write_refusal(out: &mut BytesMut, shown: &str) {
    write_error(
        out,
        &format!("ERR command '{shown}' is disabled by poolside policy"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> Policy {
        Policy::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn matches_names_case_insensitively() {
        let p = policy(&["flushall", "KEYS"]);
        assert_eq!(p.denied(b"FLUSHALL", None), Some("FLUSHALL"));
        assert_eq!(p.denied(b"keys", Some(b"*")), Some("KEYS"));
        assert_eq!(p.denied(b"GET", Some(b"k")), None);
        assert_eq!(p.denied(b"FLUSHAL", None), None);
        assert!(policy(&[]).denied(b"FLUSHALL", None).is_none());
    }

    #[test]
    fn subcommand_entries_refuse_only_that_subcommand() {
        let p = policy(&["SCRIPT KILL", "CONFIG"]);
        assert_eq!(p.denied(b"script", Some(b"kill")), Some("SCRIPT KILL"));
        assert_eq!(p.denied(b"SCRIPT", Some(b"LOAD")), None);
        assert_eq!(p.denied(b"SCRIPT", None), None);
        assert_eq!(p.denied(b"config", Some(b"get")), Some("CONFIG"));
        assert_eq!(p.denied(b"CONFIG", None), Some("CONFIG"));
    }

    #[test]
    fn long_names_are_compared_too() {
        let long = "X".repeat(80);
        let p = policy(&[long.as_str()]);
        assert!(p.denied(long.as_bytes(), None).is_some());
        assert!(p.denied(&[b'X'; 79], None).is_none());
    }

    #[test]
    fn refusal_text() {
        let mut out = BytesMut::new();
        write_refusal(&mut out, "SCRIPT KILL");
        assert_eq!(
            &out[..],
            b"-ERR command 'SCRIPT KILL' is disabled by poolside policy\r\n"
        );
    }
}

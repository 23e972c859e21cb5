//! Where a command's keys are: a table read from the cluster's own
//! `COMMAND` reply (first key, last key, step, and whether the keys move
//! with the arguments), so every command the servers know is routed as
//! they would route it, module commands included. The commands whose keys
//! move with their arguments are read here as Redis' own `getkeys`
//! procedures read them.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::sentinel::value::Value;

/// One command's key positions, from `COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    first: i64,
    last: i64,
    step: i64,
    movable: bool,
    /// Flagged `readonly`: a replica may serve it.
    readonly: bool,
}

/// Command name (lower case; `name|sub` for subcommands) to key positions.
#[derive(Debug, Default)]
pub struct KeyTable {
    specs: HashMap<Vec<u8>, KeySpec>,
    /// Container commands (CLIENT, OBJECT, XINFO...): their keys are the
    /// subcommand's.
    containers: std::collections::HashSet<Vec<u8>>,
}

/// What a command's keys say about where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// No key: any node will do.
    None,
    /// The argument indices of its keys.
    At(Vec<usize>),
}

impl KeyTable {
    /// Reads a `COMMAND` reply (RESP2).
    pub fn from_command_reply(reply: &Value) -> KeyTable {
        let mut table = KeyTable::default();
        for entry in reply.items() {
            table.add(entry, None);
        }
        table
    }

    fn add(&mut self, entry: &Value, parent: Option<&[u8]>) {
        let items = entry.items();
        let (Some(name), Some(flags)) = (items.first().and_then(Value::text), items.get(2)) else {
            return;
        };
        let int = |i: usize| match items.get(i) {
            Some(Value::Int(n)) => *n,
            _ => 0,
        };
        let flagged = |flag: &str| flags.items().iter().any(|f| f.text() == Some(flag));
        let spec = KeySpec {
            first: int(3),
            last: int(4),
            step: int(5),
            movable: flagged("movablekeys"),
            readonly: flagged("readonly"),
        };
        let name = name.to_ascii_lowercase().into_bytes();
        if let Some(subs) = items.get(9).filter(|s| !s.items().is_empty()) {
            if parent.is_none() {
                self.containers.insert(name.clone());
                for sub in subs.items() {
                    self.add(sub, Some(&name));
                }
            }
        }
        self.specs.insert(name, spec);
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The command `args` only reads (the servers flag it `readonly`).
    pub fn is_readonly(&self, args: &[&[u8]]) -> bool {
        self.spec(args).is_some_and(|spec| spec.readonly)
    }

    /// The command's key positions (a container's by its subcommand).
    /// Looked up for every command routed: names are lower-cased on the
    /// stack, not in an allocation.
    fn spec(&self, args: &[&[u8]]) -> Option<&KeySpec> {
        let name = *args.first()?;
        let mut buf = [0u8; NAME_BUF];
        let lower = lowered(&[name], &mut buf);
        if self.containers.contains(&*lower) {
            let sub = *args.get(1)?;
            let mut full = [0u8; NAME_BUF];
            self.specs.get(&*lowered(&[name, b"|", sub], &mut full))
        } else {
            self.specs.get(&*lower)
        }
    }

    /// Where the keys of the command `args` (`args[0]` its name) are.
    pub fn keys(&self, args: &[&[u8]]) -> Keys {
        let Some(spec) = self.spec(args) else {
            return Keys::None;
        };
        if spec.movable {
            let mut buf = [0u8; NAME_BUF];
            if let Some(keys) = movable_keys(&lowered(&args[..1], &mut buf), args) {
                return keys;
            }
        }
        legacy_keys(spec, args.len())
    }
}

/// Longest lower-cased name (with its `|subcommand`) kept on the stack.
const NAME_BUF: usize = 64;

/// `parts` joined and lower-cased: in `buf` when they fit, else allocated.
fn lowered<'b>(parts: &[&[u8]], buf: &'b mut [u8; NAME_BUF]) -> Cow<'b, [u8]> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > NAME_BUF {
        return Cow::Owned(parts.concat().to_ascii_lowercase());
    }
    let mut at = 0;
    for part in parts {
        for (d, s) in buf[at..].iter_mut().zip(part.iter()) {
            *d = s.to_ascii_lowercase();
        }
        at += part.len();
    }
    Cow::Borrowed(&buf[..len])
}

/// The legacy `first, last, step` range over `argc` arguments.
fn legacy_keys(spec: &KeySpec, argc: usize) -> Keys {
    if spec.first <= 0 || spec.step <= 0 {
        return Keys::None;
    }
    let argc = argc as i64;
    let last = if spec.last < 0 {
        argc + spec.last
    } else {
        spec.last.min(argc - 1)
    };
    let at: Vec<usize> = (spec.first..=last)
        .step_by(spec.step as usize)
        .filter(|i| *i < argc)
        .map(|i| i as usize)
        .collect();
    if at.is_empty() {
        Keys::None
    } else {
        Keys::At(at)
    }
}

/// `numkeys` at `at`, keys right after it.
fn counted(args: &[&[u8]], at: usize, also: &[usize]) -> Option<Keys> {
    let n: usize = std::str::from_utf8(args.get(at)?).ok()?.parse().ok()?;
    let mut keys: Vec<usize> = also.to_vec();
    // A count past the arguments is Redis' error to answer, not a panic here.
    keys.extend(at + 1..(at + 1).saturating_add(n).min(args.len()));
    Some(if keys.is_empty() {
        Keys::None
    } else {
        Keys::At(keys)
    })
}

/// The keys of the commands whose key positions depend on their arguments;
/// `None` for one not read here (its legacy range is used).
fn movable_keys(name: &[u8], args: &[&[u8]]) -> Option<Keys> {
    match name {
        b"eval" | b"evalsha" | b"eval_ro" | b"evalsha_ro" | b"fcall" | b"fcall_ro" => {
            counted(args, 2, &[])
        }
        b"zunion" | b"zinter" | b"zdiff" | b"zintercard" | b"sintercard" | b"lmpop" | b"zmpop" => {
            counted(args, 1, &[])
        }
        b"zunionstore" | b"zinterstore" | b"zdiffstore" => counted(args, 2, &[1]),
        b"blmpop" | b"bzmpop" => counted(args, 2, &[]),
        b"xread" | b"xreadgroup" => {
            let streams = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            let rest = args.len() - streams - 1;
            Some(Keys::At((streams + 1..streams + 1 + rest / 2).collect()))
        }
        b"sort" | b"sort_ro" | b"georadius" | b"georadiusbymember" => {
            let mut keys = vec![1];
            if let Some(store) = args.iter().position(|a| {
                a.eq_ignore_ascii_case(b"STORE") || a.eq_ignore_ascii_case(b"STOREDIST")
            }) {
                if store + 1 < args.len() {
                    keys.push(store + 1);
                }
            }
            Some(Keys::At(keys).filter_len(args.len()))
        }
        b"migrate" => {
            if args.get(3).is_some_and(|k| !k.is_empty()) {
                return Some(Keys::At(vec![3]));
            }
            let from = args.iter().position(|a| a.eq_ignore_ascii_case(b"KEYS"))?;
            Some(Keys::At((from + 1..args.len()).collect()))
        }
        _ => None,
    }
}

impl Keys {
    fn filter_len(self, argc: usize) -> Keys {
        match self {
            Keys::At(at) => {
                let at: Vec<usize> = at.into_iter().filter(|i| *i < argc).collect();
                if at.is_empty() {
                    Keys::None
                } else {
                    Keys::At(at)
                }
            }
            none => none,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, first: i64, last: i64, step: i64, flags: &[&str]) -> Value {
        Value::Array(vec![
            Value::Str(name.into()),
            Value::Int(-2),
            Value::Array(
                flags
                    .iter()
                    .map(|f| Value::Str(f.as_bytes().to_vec()))
                    .collect(),
            ),
            Value::Int(first),
            Value::Int(last),
            Value::Int(step),
        ])
    }

    fn table() -> KeyTable {
        let mut object = match entry("object", 0, 0, 0, &[]) {
            Value::Array(items) => items,
            _ => unreachable!(),
        };
        object.extend([
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Array(vec![entry("object|encoding", 2, 2, 1, &[])]),
        ]);
        KeyTable::from_command_reply(&Value::Array(vec![
            entry("get", 1, 1, 1, &[]),
            entry("mset", 1, -1, 2, &[]),
            entry("ping", 0, 0, 0, &[]),
            entry("eval", 0, 0, 0, &["movablekeys"]),
            entry("xread", 0, 0, 0, &["movablekeys"]),
            entry("zunionstore", 1, 1, 1, &["movablekeys"]),
            Value::Array(object),
        ]))
    }

    fn keys(args: &[&str]) -> Keys {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        table().keys(&args)
    }

    #[test]
    fn reads_ranges_steps_and_subcommands() {
        assert_eq!(keys(&["GET", "k"]), Keys::At(vec![1]));
        assert_eq!(keys(&["mset", "a", "1", "b", "2"]), Keys::At(vec![1, 3]));
        assert_eq!(keys(&["PING"]), Keys::None);
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), Keys::At(vec![2]));
        assert_eq!(keys(&["OBJECT"]), Keys::None);
        assert_eq!(keys(&["NOSUCH", "k"]), Keys::None);
        // Arity errors are Redis' to answer: no key past the end.
        assert_eq!(keys(&["GET"]), Keys::None);
    }

    #[test]
    fn reads_movable_keys() {
        assert_eq!(
            keys(&["EVAL", "s", "2", "a", "b", "x"]),
            Keys::At(vec![3, 4])
        );
        assert_eq!(keys(&["EVAL", "s", "0"]), Keys::None);
        assert_eq!(
            keys(&["EVAL", "s", "18446744073709551615", "a"]),
            Keys::At(vec![3])
        );
        assert_eq!(
            keys(&["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"]),
            Keys::At(vec![4, 5])
        );
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            Keys::At(vec![1, 3, 4])
        );
    }
}

//! The few RESP2 replies Sentinel and ROLE answer with, as values: the
//! data path never builds these (it passes bytes through).

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    Str(Vec<u8>),
    Error(String),
    Array(Vec<Value>),
}

impl Value {
    /// A string's text (simple or bulk).
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            _ => &[],
        }
    }

    /// `field` of a flat `[k1, v1, k2, v2, ...]` array (`SENTINEL master`).
    pub fn field(&self, field: &str) -> Option<&str> {
        self.items()
            .chunks(2)
            .find(|kv| kv[0].text() == Some(field))
            .and_then(|kv| kv.get(1)?.text())
    }
}

/// Parses one whole value from the start of `buf`: the value and its
/// length, `None` if `buf` holds less than one value or is not RESP2.
pub fn parse(buf: &[u8]) -> Option<(Value, usize)> {
    let line_end = memchr::memmem::find(buf, b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).ok()?;
    let after = line_end + 2;
    match *buf.first()? {
        b'+' => Some((Value::Str(line.as_bytes().to_vec()), after)),
        b'-' => Some((Value::Error(line.to_string()), after)),
        b':' => Some((Value::Int(line.parse().ok()?), after)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((Value::Nil, after));
            }
            let end = after.checked_add(usize::try_from(len).ok()?)?;
            (buf.len() >= end.checked_add(2)?)
                .then(|| (Value::Str(buf[after..end].to_vec()), end + 2))
        }
        b'*' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((Value::Nil, after));
            }
            let mut items = Vec::with_capacity(len.min(64) as usize);
            let mut at = after;
            for _ in 0..len {
                let (item, used) = parse(&buf[at..])?;
                items.push(item);
                at += used;
            }
            Some((Value::Array(items), at))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_sentinel_answers() {
        let (v, used) = parse(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\nrest").unwrap();
        assert_eq!(used, 29);
        assert_eq!(v.items()[0].text(), Some("127.0.0.1"));
        let (v, _) =
            parse(b"*4\r\n$4\r\nname\r\n$1\r\nm\r\n$5\r\nflags\r\n$6\r\nmaster\r\n").unwrap();
        assert_eq!(v.field("flags"), Some("master"));
        assert_eq!(v.field("nope"), None);
        assert_eq!(parse(b"*-1\r\n").unwrap().0, Value::Nil);
        assert_eq!(parse(b"$-1\r\n").unwrap().0, Value::Nil);
        assert_eq!(parse(b":12\r\n").unwrap().0, Value::Int(12));
        assert!(matches!(parse(b"-ERR x\r\n").unwrap().0, Value::Error(e) if e == "ERR x"));
        assert_eq!(parse(b"*2\r\n$1\r\na\r\n"), None);
        assert_eq!(parse(b"$3\r\nab"), None);
        assert_eq!(parse(b"?x\r\n"), None);
        assert_eq!(parse(b"$9223372036854775807\r\nab\r\n"), None);
        assert_eq!(parse(b"*9223372036854775807\r\n"), None);
    }
}

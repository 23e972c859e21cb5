//! Replies Redis gives about the pooled connection that a client must see
//! as about itself: HELLO's `id`, CLIENT INFO's `id=` and `name=`. Everything
//! else in them is Redis' own bytes.

use bytes::{BufMut, BytesMut};

use crate::resp::{decimal, find_crlf};

/// Replaces the integer after the `id` key of the HELLO reply at
/// `out[start..]` (RESP2 array or RESP3 map) with `id`.
pub fn hello_id(out: &mut BytesMut, start: usize, id: u64) {
    const KEY: &[u8] = b"$2\r\nid\r\n:";
    let Some(at) = memchr::memmem::find(&out[start..], KEY) else {
        return;
    };
    let digits_at = start + at + KEY.len();
    let Some(eol) = find_crlf(out, digits_at) else {
        return;
    };
    let mut buf = [0; 20];
    let tail = out.split_off(eol);
    out.truncate(digits_at);
    out.put_slice(decimal(id, &mut buf));
    out.unsplit(tail);
}

/// Rewrites the `CLIENT INFO` line at `out[start..]` (`$` bulk in RESP2,
/// `=` verbatim `txt:` in RESP3) with the client's `id` and `name`.
pub fn client_info(out: &mut BytesMut, start: usize, id: u64, name: Option<&[u8]>) {
    let kind = out[start];
    if kind != b'$' && kind != b'=' {
        return; // an error reply: passed on as it is
    }
    let Some(eol) = find_crlf(out, start + 1) else {
        return;
    };
    let body_at = eol + 2;
    let prefix = if kind == b'=' { 4 } else { 0 }; // "txt:"
                                                   // A null or too short reply (never from Redis) is passed on as it is.
    if out.len() < body_at + prefix + 2 {
        return;
    }
    let mut body_end = out.len() - 2;
    let newline = body_end > body_at + prefix && out[body_end - 1] == b'\n';
    if newline {
        body_end -= 1;
    }
    let mut body = Vec::with_capacity(body_end - body_at + 16);
    body.extend_from_slice(&out[body_at..body_at + prefix]);
    let mut buf = [0; 20];
    for (i, field) in out[body_at + prefix..body_end]
        .split(|b| *b == b' ')
        .enumerate()
    {
        if i > 0 {
            body.push(b' ');
        }
        if field.starts_with(b"id=") {
            body.extend_from_slice(b"id=");
            body.extend_from_slice(decimal(id, &mut buf));
        } else if field.starts_with(b"name=") {
            body.extend_from_slice(b"name=");
            body.extend_from_slice(name.unwrap_or_default());
        } else {
            body.extend_from_slice(field);
        }
    }
    if newline {
        body.push(b'\n');
    }
    out.truncate(start);
    out.put_u8(kind);
    out.put_slice(decimal(body.len() as u64, &mut buf));
    out.put_slice(b"\r\n");
    out.put_slice(&body);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_gets_the_clients_id_in_both_protocols() {
        let resp3 = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n";
        let mut out = BytesMut::from(&b"+OK\r\n"[..]);
        out.extend_from_slice(resp3);
        hello_id(&mut out, 5, 12345);
        assert_eq!(
            &out[..],
            b"+OK\r\n%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$2\r\nid\r\n:12345\r\n$4\r\nmode\r\n"
        );
    }

    #[test]
    fn client_info_names_the_client_with_a_new_length() {
        let line = b"id=7 addr=127.0.0.1:1 name= db=0 resp=2\n";
        let mut out = BytesMut::new();
        out.extend_from_slice(format!("${}\r\n", line.len()).as_bytes());
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        client_info(&mut out, 0, 42, Some(b"worker-1"));
        let want = b"id=42 addr=127.0.0.1:1 name=worker-1 db=0 resp=2\n";
        let mut expected = format!("${}\r\n", want.len()).into_bytes();
        expected.extend_from_slice(want);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(&out[..], &expected[..]);

        for odd in [&b"$-1\r\n"[..], b"=1\r\nx\r\n", b"$0\r\n\r\n"] {
            let mut out = BytesMut::from(odd);
            client_info(&mut out, 0, 1, None);
            assert_eq!(&out[..], odd, "passed on as it is");
        }
        let mut out = BytesMut::from(&b"=15\r\ntxt:id=7 name=\n\r\n"[..]);
        client_info(&mut out, 0, 9, None);
        assert_eq!(&out[..], b"=15\r\ntxt:id=9 name=\n\r\n");
    }
}

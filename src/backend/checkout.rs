//! The request/reply round trip on one connection the client holds for the
//! batch (transaction mode, and every pinned or non-shareable batch in
//! multiplexed mode): one write of the whole batch, then its replies in
//! order, interleaved with the local answers.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::plan::{Part, Plan, Remote, EXECABORT};
use super::{prepare, rewrite, ClientView, Failed, Out, Refused, Wants, SPILL_BYTES};
use crate::error::{Error, Refusal};
use crate::pool::{ReplyHead, ReplyPart, UpstreamConn, UpstreamError};
use crate::resp::write_error;

/// Runs `plan` on `conn`. Replies of the steps before a failure stay in
/// `out` (or were spilled to the client); [`Failed::answered`] says how many
/// steps that is. Replies must keep coming: `limit` counts from the write,
/// and again from every spill (time spent waiting for a slow client is not
/// Redis' delay). `prefix` is scratch space for the preparing commands.
pub async fn round_trip(
    conn: &mut UpstreamConn,
    plan: &Plan,
    client: &mut ClientView<'_>,
    limit: Option<Duration>,
    prefix: &mut BytesMut,
    sink: &mut Out<'_>,
) -> Result<Refused, Failed> {
    let mut refused = Refused::default();
    let lost = |e: crate::pool::UpstreamError, answered| Failed {
        error: Error::ConnectionLost(e.cause()),
        answered,
    };
    // Prepared even when only a stream starts: its replies must come in the
    // client's protocol.
    prefix.clear();
    let preparing = prepare::write(Wants::of(conn), *client.wants, prefix);
    if preparing > 0 || !plan.upstream.is_empty() {
        conn.write_batch(&[prefix, &plan.upstream])
            .await
            .map_err(|e| lost(e, 0))?;
    }
    let after = |l: Duration| (Instant::now() + l, l.as_millis() as u64);
    let mut deadline = limit.map(after);
    for _ in 0..preparing {
        let out = &mut *sink.buf;
        let mark = out.len();
        let checked = match read_within(conn, out, deadline).await {
            Ok(Ok(start)) => prepare::check(&out[start..]),
            Ok(Err(_)) => Err(Error::PrepareFailed),
            Err(timed_out) => Err(timed_out),
        };
        out.truncate(mark);
        checked.map_err(|error| Failed { error, answered: 0 })?;
    }
    client.wants.apply_to(conn);
    for (i, part) in plan.parts(0).enumerate() {
        let (kind, silent) = match part {
            Part::Local(answer) => {
                sink.buf.extend_from_slice(answer);
                continue;
            }
            Part::Remote(kind) => (kind, false),
            Part::Silent(kind) => (kind, true),
        };
        let spill = |sink: &mut Out<'_>| sink.buf.len() >= SPILL_BYTES && sink.can_spill();
        if spill(sink) {
            sink.spill(false)
                .await
                .map_err(|error| Failed { error, answered: i })?;
            deadline = limit.map(after);
        }
        // Replies poolside rewrites or reads whole are read whole; any other
        // reply may be forwarded in parts.
        let whole = silent
            || !sink.can_spill()
            || matches!(
                kind,
                Remote::Hello(_) | Remote::ClientInfo | Remote::ExecAborted
            )
            || (matches!(kind, Remote::Exec) && client.pin.follows_exec());
        if !whole {
            let mut head = ReplyHead::default();
            // A reply cut short while none of it reached the client is
            // taken back, so the error that answers it stays framed.
            let reply_mark = sink.buf.len();
            loop {
                let read = read_part_within(conn, sink.buf, &mut head, deadline).await;
                let error = match read {
                    Ok(Ok(ReplyPart::Done)) => break,
                    Ok(Ok(ReplyPart::More)) => None,
                    Ok(Err(e)) => Some(lost(e, i)),
                    Err(error) => Some(Failed { error, answered: i }),
                };
                if let Some(failed) = error {
                    if !sink.torn() {
                        sink.buf.truncate(reply_mark);
                    }
                    return Err(failed);
                }
                sink.spill(true)
                    .await
                    .map_err(|error| Failed { error, answered: i })?;
                deadline = limit.map(after);
            }
            sink.reply_done();
            refused.tally(Refusal::of(head.as_slice()));
            client.pin.apply(kind, head.as_slice(), client.wants, conn);
            continue;
        }
        let out = &mut *sink.buf;
        let start = match read_within(conn, out, deadline).await {
            Ok(read) => read.map_err(|e| lost(e, i))?,
            Err(error) => return Err(Failed { error, answered: i }),
        };
        refused.tally(Refusal::of(&out[start..]));
        client.pin.apply(kind, &out[start..], client.wants, conn);
        match kind {
            _ if silent => out.truncate(start),
            Remote::ExecAborted => {
                out.truncate(start);
                write_error(out, EXECABORT);
            }
            Remote::Hello(_) => rewrite::hello_id(out, start, client.id),
            Remote::ClientInfo => rewrite::client_info(out, start, client.id, client.name),
            _ => {}
        }
    }
    conn.finish_batch();
    Ok(refused)
}

/// The next part of a reply read with [`UpstreamConn::read_reply_part`],
/// within `deadline` like [`read_within`].
async fn read_part_within(
    conn: &mut UpstreamConn,
    out: &mut BytesMut,
    head: &mut ReplyHead,
    deadline: Option<(Instant, u64)>,
) -> Result<Result<ReplyPart, UpstreamError>, Error> {
    let read = conn.read_reply_part(out, SPILL_BYTES, head);
    match deadline {
        None => Ok(read.await),
        Some((at, ms)) => tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| Error::TimedOut { ms }),
    }
}

/// The next reply, unless `deadline` (and the limit it came from, in ms)
/// passes first: then `Err(TimedOut)`, and the connection must be discarded.
pub(super) async fn read_within(
    conn: &mut UpstreamConn,
    out: &mut BytesMut,
    deadline: Option<(Instant, u64)>,
) -> Result<Result<usize, UpstreamError>, Error> {
    match deadline {
        None => Ok(conn.read_reply(out).await),
        Some((at, ms)) => tokio::time::timeout_at(at, conn.read_reply(out))
            .await
            .map_err(|_| Error::TimedOut { ms }),
    }
}

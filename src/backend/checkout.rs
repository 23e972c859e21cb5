//! The request/reply round trip on one connection the client holds for the
//! batch (transaction mode, and every pinned or non-shareable batch in
//! multiplexed mode): one write of the whole batch, then its replies in
//! order, interleaved with the local answers.

use bytes::BytesMut;

use super::plan::{Part, Plan, Remote, EXECABORT};
use super::{prepare, rewrite, ClientView, Failed, Wants};
use crate::error::Error;
use crate::pool::UpstreamConn;
use crate::resp::write_error;

/// Runs `plan` on `conn`. Replies of the steps before a failure stay in
/// `out`; [`Failed::answered`] says how many steps that is. `prefix` is
/// scratch space for the preparing commands.
pub async fn round_trip(
    conn: &mut UpstreamConn,
    plan: &Plan,
    client: &mut ClientView<'_>,
    prefix: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<(), Failed> {
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
    for _ in 0..preparing {
        let mark = out.len();
        let checked = match conn.read_reply(out).await {
            Ok(start) => prepare::check(&out[start..]),
            Err(_) => Err(Error::PrepareFailed),
        };
        out.truncate(mark);
        checked.map_err(|error| Failed { error, answered: 0 })?;
    }
    client.wants.apply_to(conn);
    for (i, part) in plan.parts(0).enumerate() {
        let (kind, silent) = match part {
            Part::Local(answer) => {
                out.extend_from_slice(answer);
                continue;
            }
            Part::Remote(kind) => (kind, false),
            Part::Silent(kind) => (kind, true),
        };
        let start = conn.read_reply(out).await.map_err(|e| lost(e, i))?;
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
    Ok(())
}

//! The request/reply round trip on one connection the client holds for the
//! batch (transaction mode, and every pinned or non-shareable batch in
//! multiplexed mode): one write of the whole batch, then its replies in
//! order, interleaved with the local answers.

use bytes::BytesMut;

use super::plan::{Part, Plan, Remote, EXECABORT};
use super::{prepare, Failed, Pin, Wants};
use crate::error::Error;
use crate::pool::UpstreamConn;
use crate::resp::write_error;

/// Runs `plan` on `conn`. Replies of the steps before a failure stay in
/// `out`; [`Failed::answered`] says how many steps that is. `prefix` is
/// scratch space for the preparing commands.
pub async fn round_trip(
    conn: &mut UpstreamConn,
    plan: &Plan,
    wants: &mut Wants,
    pin: &mut Pin,
    prefix: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<(), Failed> {
    let lost = |e: crate::pool::UpstreamError, answered| Failed {
        error: Error::ConnectionLost(e.cause()),
        answered,
    };
    prefix.clear();
    let mut preparing = 0;
    if !plan.upstream.is_empty() {
        preparing = prepare::write(Wants { db: conn.db() }, *wants, prefix);
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
        conn.selected(wants.db);
    }
    for (i, part) in plan.parts(0).enumerate() {
        match part {
            Part::Local(answer) => out.extend_from_slice(answer),
            Part::Remote(kind) => {
                let start = conn.read_reply(out).await.map_err(|e| lost(e, i))?;
                pin.apply(kind, &out[start..], wants, conn);
                if kind == Remote::ExecAborted {
                    out.truncate(start);
                    write_error(out, EXECABORT);
                }
            }
        }
    }
    conn.finish_batch();
    Ok(())
}

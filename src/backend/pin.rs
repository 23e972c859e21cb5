//! What a client's transaction, WATCH and session pins look like, and how
//! each upstream reply changes them.

use super::{Remote, Wants};
use crate::pool::UpstreamConn;
use crate::resp::ReplyScanner;

/// Transaction and pinning state; while any of it holds, the client keeps its connection.
#[derive(Debug, Default)]
pub struct Pin {
    pub multi: bool,
    pub watch: bool,
    pub session: bool,
    pub queued: u32,
    /// `SELECT`s queued inside MULTI: (position in the transaction, db).
    pub queued_selects: Vec<(u32, u32)>,
    /// A command was refused by the policy while queueing: EXEC must abort.
    pub doomed: bool,
}

impl Pin {
    pub fn active(&self) -> bool {
        self.multi || self.watch || self.session
    }

    /// Updates client and pinning state from one reply.
    pub fn apply(
        &mut self,
        kind: Remote,
        reply: &[u8],
        wants: &mut Wants,
        conn: &mut UpstreamConn,
    ) {
        let ok = reply.first() == Some(&b'+');
        let queued = self.multi && reply.starts_with(b"+QUEUED\r\n");
        match kind {
            Remote::Select(Some(db)) if queued => {
                self.queued_selects.push((self.queued, db));
            }
            Remote::Select(Some(db)) if ok && !self.multi => {
                wants.db = db;
                conn.selected(db);
            }
            Remote::Multi if ok => {
                self.multi = true;
                self.queued = 0;
                self.queued_selects.clear();
                return;
            }
            Remote::Exec | Remote::Discard | Remote::ExecAborted => {
                if matches!(kind, Remote::Exec) && !self.queued_selects.is_empty() {
                    self.apply_queued_selects(reply, wants, conn);
                }
                if self.multi || reply.first() != Some(&b'-') {
                    self.multi = false;
                    self.watch = false;
                }
                self.queued_selects.clear();
                return;
            }
            // Queued inside MULTI, a HELLO switches nothing until EXEC;
            // poolside does not follow it there (README: differences).
            Remote::Hello(Some(proto))
                if !queued && !matches!(reply.first(), Some(b'-' | b'!')) =>
            {
                wants.proto = proto;
                conn.switched(proto);
            }
            Remote::Watch if ok => self.watch = true,
            Remote::Unwatch => self.watch = false,
            Remote::PinSession => self.session = true,
            Remote::Dirty => {
                conn.mark_dirty();
                self.session = true;
            }
            _ => {}
        }
        if queued {
            self.queued += 1;
        }
    }

    /// EXEC ran the queued SELECTs: follow the ones whose element is `+OK`.
    fn apply_queued_selects(&mut self, reply: &[u8], wants: &mut Wants, conn: &mut UpstreamConn) {
        let Some(header_end) = crate::resp::find_crlf(reply, 1) else {
            return;
        };
        if reply[0] != b'*' {
            return;
        }
        let mut scanner = ReplyScanner::default();
        let mut at = header_end + 2;
        let mut index = 0u32;
        while let Ok(Some(end)) = scanner.scan(reply, at) {
            if let Some(&(_, db)) = self.queued_selects.iter().find(|(i, _)| *i == index) {
                if reply[at] == b'+' {
                    wants.db = db;
                    conn.selected(db);
                }
            }
            at = end;
            index += 1;
        }
    }
}

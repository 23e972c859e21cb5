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
    /// SELECTs and HELLOs queued inside MULTI: (position in the
    /// transaction, what it changes). EXEC runs them; their elements in
    /// EXEC's reply say which took effect.
    pub queued_selects: Vec<(u32, Queued)>,
    /// A command was refused by the policy while queueing: EXEC must abort.
    pub doomed: bool,
}

/// A connection-state change queued inside MULTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Select(u32),
    Hello(u8),
}

impl Pin {
    pub fn active(&self) -> bool {
        self.multi || self.watch || self.session
    }

    /// The EXEC to come must be read whole: it ran SELECTs or HELLOs whose
    /// results poolside follows.
    pub fn follows_exec(&self) -> bool {
        !self.queued_selects.is_empty()
    }

    /// Updates client and pinning state from one reply (for most kinds its
    /// first bytes are enough).
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
                self.queued_selects.push((self.queued, Queued::Select(db)));
            }
            Remote::Hello(Some(proto)) if queued => {
                self.queued_selects
                    .push((self.queued, Queued::Hello(proto)));
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
            Remote::Hello(Some(proto)) if !matches!(reply.first(), Some(b'-' | b'!')) => {
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

    /// EXEC ran the queued SELECTs and HELLOs: follow the ones whose element
    /// is not an error, so the connection's recorded state stays true.
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
            let ran = !matches!(reply[at], b'-' | b'!');
            match self.queued_selects.iter().find(|(i, _)| *i == index) {
                Some(&(_, Queued::Select(db))) if ran => {
                    wants.db = db;
                    conn.selected(db);
                }
                Some(&(_, Queued::Hello(proto))) if ran => {
                    wants.proto = proto;
                    conn.switched(proto);
                }
                _ => {}
            }
            at = end;
            index += 1;
        }
    }
}

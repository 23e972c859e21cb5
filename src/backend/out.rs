//! Where a batch's replies go ([`Out`]: spilled to the client as they
//! arrive once they are big), and how many of them refused their commands
//! because of where Redis is ([`Refused`]).

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Refusal};

/// A batch's replies this big are written to the client before the batch
/// ends, so no reply is ever held whole.
pub const SPILL_BYTES: usize = 128 * 1024;

/// Where a batch's replies go: `buf`, which the session writes to the
/// client when the batch is done. A batch whose replies outgrow
/// [`SPILL_BYTES`] has them written out early ("spilled") when the session
/// gave the client's socket, with its backpressure: a slow reader slows its
/// own upstream reads, and memory stays bounded whatever the reply sizes.
pub struct Out<'a> {
    pub buf: &'a mut BytesMut,
    client: Option<&'a mut (dyn AsyncWrite + Unpin + Send)>,
    torn: bool,
    /// Some of this batch's replies were written to the client already.
    pub(super) spilled: bool,
}

impl<'a> Out<'a> {
    /// `client`: `None` while the session reads the client itself (a
    /// blocking batch watching for the client to leave); replies are then
    /// only buffered.
    pub fn new(
        buf: &'a mut BytesMut,
        client: Option<&'a mut (dyn AsyncWrite + Unpin + Send)>,
    ) -> Self {
        Out {
            buf,
            client,
            torn: false,
            spilled: false,
        }
    }

    pub fn can_spill(&self) -> bool {
        self.client.is_some()
    }

    /// Part of a reply reached the client and the rest will not: its
    /// framing cannot be repaired, so the client must be closed, not answered.
    pub fn torn(&self) -> bool {
        self.torn
    }

    /// The reply that was spilled in parts is complete.
    pub(super) fn reply_done(&mut self) {
        self.torn = false;
    }

    /// Writes what is buffered to the client; `mid_reply`: the last reply in
    /// it is incomplete.
    pub(super) async fn spill(&mut self, mid_reply: bool) -> Result<(), Error> {
        if let Some(client) = self.client.as_mut() {
            self.torn = mid_reply;
            self.spilled = true;
            client
                .write_all(self.buf)
                .await
                .map_err(|_| Error::ClientGone)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The replies of one batch that refused their commands because of where
/// Redis is ([`Refusal`]), of how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    pub count: usize,
    pub of: usize,
    /// The last refusal seen.
    pub kind: Option<Refusal>,
    /// A reply is a cluster node's redirect (`-MOVED`, `-ASK`, `-TRYAGAIN`,
    /// `-CLUSTERDOWN`): the session follows it before the client sees it.
    pub redirected: bool,
}

impl Refused {
    pub(super) fn tally(&mut self, reply: Option<Refusal>) {
        self.of += 1;
        if let Some(kind) = reply {
            self.count += 1;
            self.kind = Some(kind);
        }
    }

    /// Every command was refused: nothing ran, so the batch may go once
    /// more to a fresh connection.
    pub(super) fn whole_batch(&self) -> bool {
        self.count > 0 && self.count == self.of
    }
}

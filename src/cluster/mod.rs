//! Redis Cluster (issue #13, in progress): the pieces of a cluster backend
//! that do no I/O, each checked against a real cluster-enabled Redis by
//! `tests/cluster_tables.rs`:
//!
//! - [`slot`]: a key's slot (CRC16, hash tags), as `CLUSTER KEYSLOT` answers;
//! - [`keys`]: where a command's keys are, from the servers' own `COMMAND`
//!   reply, as `COMMAND GETKEYS` answers;
//! - [`topology`]: the slot map read from `CLUSTER SLOTS`, and `MOVED`
//!   applied to it.
//!
//! Not built yet: the backend that splits a batch by slot owner over one
//! pool per node, follows `MOVED`/`ASK` and merges the replies (DESIGN.md's
//! `Mode` for it is described in `backend/mod.rs`). Until it is, a
//! `redis+cluster://` upstream is refused at start with that reason rather
//! than run as if the first seed were a standalone Redis.

pub mod keys;
pub mod slot;
pub mod topology;

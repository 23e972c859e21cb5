//! Redis Cluster: the pieces of the cluster backend
//! that do no I/O, each checked against a real cluster-enabled Redis by
//! `tests/cluster_tables.rs`:
//!
//! - [`slot`]: a key's slot (CRC16, hash tags), as `CLUSTER KEYSLOT` answers;
//! - [`keys`]: where a command's keys are, from the servers' own `COMMAND`
//!   reply, as `COMMAND GETKEYS` answers;
//! - [`topology`]: the slot map read from `CLUSTER SLOTS`, and `MOVED`
//!   applied to it.
//!
//! The backend that uses them (one pool per node, batches split by slot
//! owner, `MOVED`/`ASK` followed) is `backend/cluster.rs`.

pub mod keys;
pub mod slot;
pub mod topology;

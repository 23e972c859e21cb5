//! What a cluster-mode client (redis-py `RedisCluster`, ioredis `Cluster`,
//! node-redis `createCluster`) is told about the cluster: poolside is one
//! node that owns every slot, at the address the client connected to, so
//! the client sends everything to poolside, which routes it (or forwards it
//! to its standalone Redis). `CLUSTER SLOTS`, `SHARDS`, `NODES`, `INFO` and
//! `MYID` are answered here in the bytes a one-node Redis Cluster 7.0 gives,
//! with the address the client connected to as the node's IP. (Such a node
//! answers an empty host until it meets another, which redis-py reads as
//! "the host you asked" but ioredis skips, finding no node at all; a unix
//! socket client still gets the empty host.)

use std::fmt::Write;
use std::sync::OnceLock;

use bytes::BytesMut;

use crate::command::ClusterAsk;

/// poolside as a one-node cluster: its client port and a node id.
#[derive(Debug)]
pub struct ClusterFace {
    port: OnceLock<u16>,
    id: String,
}

impl Default for ClusterFace {
    fn default() -> ClusterFace {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let id = (0..40)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect();
        ClusterFace {
            port: OnceLock::new(),
            id,
        }
    }
}

impl ClusterFace {
    /// The TCP port clients connect to, once the listener has it.
    pub fn set_port(&self, port: u16) {
        let _ = self.port.set(port);
    }

    fn port(&self) -> u16 {
        self.port.get().copied().unwrap_or(0)
    }

    /// Writes the answer to `CLUSTER <ask>` in RESP `proto`, with `host`
    /// as the node's address.
    pub fn answer(&self, ask: ClusterAsk, host: &str, proto: u8, out: &mut BytesMut) {
        let (id, port) = (&self.id, self.port());
        let n = host.len();
        let map = |n: usize| {
            if proto == 3 {
                format!("%{n}\r\n")
            } else {
                format!("*{}\r\n", 2 * n)
            }
        };
        let mut s = String::new();
        match ask {
            ClusterAsk::Slots => {
                let _ = write!(
                    s,
                    "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n${n}\r\n{host}\r\n:{port}\r\n$40\r\n{id}\r\n"
                );
                s.push_str(&map(0));
            }
            ClusterAsk::MyId => {
                let _ = write!(s, "$40\r\n{id}\r\n");
            }
            ClusterAsk::Nodes => {
                let line =
                    format!("{id} {host}:{port}@0 myself,master - 0 0 0 connected 0-16383\n");
                let _ = write!(s, "${}\r\n{line}\r\n", line.len());
            }
            ClusterAsk::Info => {
                let text = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
                    cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
                    cluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:0\r\n\
                    cluster_my_epoch:0\r\ncluster_stats_messages_sent:0\r\n\
                    cluster_stats_messages_received:0\r\n\
                    total_cluster_links_buffer_limit_exceeded:0\r\n";
                match proto {
                    3 => _ = write!(s, "={}\r\ntxt:{text}\r\n", text.len() + 4),
                    _ => _ = write!(s, "${}\r\n{text}\r\n", text.len()),
                }
            }
            ClusterAsk::Shards => {
                s.push_str("*1\r\n");
                s.push_str(&map(2));
                s.push_str("$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n");
                s.push_str(&map(7));
                let _ = write!(
                    s,
                    "$2\r\nid\r\n$40\r\n{id}\r\n$4\r\nport\r\n:{port}\r\n$2\r\nip\r\n${n}\r\n{host}\r\n\
                     $8\r\nendpoint\r\n${n}\r\n{host}\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
                     $18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
                );
            }
        }
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a one-node Redis 7.0 cluster gave (its id and port replaced).
    #[test]
    fn answers_are_a_one_node_clusters() {
        let face = ClusterFace::default();
        face.set_port(7301);
        let id = face.id.clone();
        let answer = |ask, proto| {
            let mut out = BytesMut::new();
            face.answer(ask, "", proto, &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(
            answer(ClusterAsk::Slots, 2),
            format!("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:7301\r\n$40\r\n{id}\r\n*0\r\n")
        );
        assert!(answer(ClusterAsk::Slots, 3).ends_with("%0\r\n"));
        assert_eq!(
            answer(ClusterAsk::Nodes, 2),
            format!("$89\r\n{id} :7301@0 myself,master - 0 0 0 connected 0-16383\n\r\n")
        );
        let info = answer(ClusterAsk::Info, 2);
        assert!(info.starts_with("$312\r\ncluster_state:ok\r\n"), "{info}");
        assert!(answer(ClusterAsk::Info, 3).starts_with("=316\r\ntxt:cluster_state:ok"));
        let shards = answer(ClusterAsk::Shards, 2);
        assert!(shards.starts_with("*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n"));
        assert!(answer(ClusterAsk::Shards, 3).starts_with("*1\r\n%2\r\n"));
        // The address the client connected to, as a node that knows its own.
        let mut out = BytesMut::new();
        face.answer(ClusterAsk::Slots, "127.0.0.1", 2, &mut out);
        let slots = format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7301\r\n$40\r\n{id}\r\n*0\r\n"
        );
        assert_eq!(String::from_utf8_lossy(&out), slots);
        out.clear();
        face.answer(ClusterAsk::Nodes, "127.0.0.1", 2, &mut out);
        let line = format!("{id} 127.0.0.1:7301@0 myself,master - 0 0 0 connected 0-16383\n");
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("${}\r\n{line}\r\n", line.len())
        );
    }
}

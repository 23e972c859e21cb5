//! The slot map: which primary owns each slot, read from `CLUSTER SLOTS`.

use crate::config::url::join_host_port;
use crate::sentinel::value::Value;

use super::slot::SLOTS;

/// No node owns the slot.
pub const UNOWNED: u16 = u16::MAX;

/// One reading of the cluster's slot map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// `host:port` of each primary that owns slots, in first-seen order.
    pub primaries: Vec<String>,
    /// `host:port` of each primary's replicas (same index).
    pub replicas: Vec<Vec<String>>,
    /// Per slot: an index into `primaries`, or [`UNOWNED`].
    slots: Box<[u16]>,
}

impl Topology {
    /// The node at `addr` alone owns every slot (before the first reading
    /// nothing is known; tests and a one-node cluster).
    pub fn single(addr: &str) -> Topology {
        Topology {
            primaries: vec![addr.to_string()],
            replicas: vec![Vec::new()],
            slots: vec![0; SLOTS].into_boxed_slice(),
        }
    }

    /// The primary that owns `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        match self.slots.get(usize::from(slot)) {
            Some(&UNOWNED) | None => None,
            Some(&i) => Some(usize::from(i)),
        }
    }

    /// How many slots each primary owns (same order as `primaries`).
    pub fn slots_owned(&self) -> Vec<usize> {
        let mut owned = vec![0; self.primaries.len()];
        for &i in self.slots.iter() {
            if let Some(n) = owned.get_mut(usize::from(i)) {
                *n += 1;
            }
        }
        owned
    }

    /// For each primary that owns slots, one of them (its first), in
    /// `primaries` order: a command routed by it reaches that primary.
    pub fn a_slot_of_each(&self) -> Vec<u16> {
        let mut first = vec![None; self.primaries.len()];
        for (slot, &i) in self.slots.iter().enumerate() {
            if let Some(f) = first.get_mut(usize::from(i)) {
                f.get_or_insert(slot as u16);
            }
        }
        first.into_iter().flatten().collect()
    }

    pub fn unowned(&self) -> usize {
        self.slots.iter().filter(|&&i| i == UNOWNED).count()
    }

    /// `MOVED slot addr`: the slot is `addr`'s now (until the next reading).
    pub fn moved(&mut self, slot: u16, addr: &str) {
        let index = match self.primaries.iter().position(|p| p == addr) {
            Some(i) => i,
            None => {
                self.primaries.push(addr.to_string());
                self.replicas.push(Vec::new());
                self.primaries.len() - 1
            }
        };
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = index as u16;
        }
    }

    /// Reads a `CLUSTER SLOTS` reply. `asked` is the node that answered: a
    /// node that does not know its own address names itself with an empty
    /// host. Hostnames are taken as they are (ElastiCache answers with them).
    pub fn from_cluster_slots(reply: &Value, asked: &str) -> Result<Topology, String> {
        if let Value::Error(e) = reply {
            return Err(e.clone());
        }
        let asked_host = crate::pool::host_of(asked).to_string();
        let mut topology = Topology {
            primaries: Vec::new(),
            replicas: Vec::new(),
            slots: vec![UNOWNED; SLOTS].into_boxed_slice(),
        };
        for range in reply.items() {
            let items = range.items();
            let (Some(Value::Int(start)), Some(Value::Int(end))) = (items.first(), items.get(1))
            else {
                return Err("a CLUSTER SLOTS range without its slots".into());
            };
            let node = |v: &Value| -> Option<String> {
                let n = v.items();
                let host = n.first()?.text()?;
                let Value::Int(port) = n.get(1)? else {
                    return None;
                };
                let host = if host.is_empty() {
                    asked_host.as_str()
                } else {
                    host
                };
                // "?": the node's endpoint is unknown (cluster-announce-*).
                (host != "?" && *port > 0 && *port <= 65535)
                    .then(|| join_host_port(host, *port as u16))
            };
            let Some(primary) = items.get(2).and_then(node) else {
                continue;
            };
            let index = match topology.primaries.iter().position(|p| *p == primary) {
                Some(i) => i,
                None => {
                    topology.primaries.push(primary);
                    topology.replicas.push(Vec::new());
                    topology.primaries.len() - 1
                }
            };
            for replica in items.iter().skip(3).filter_map(node) {
                if !topology.replicas[index].contains(&replica) {
                    topology.replicas[index].push(replica);
                }
            }
            let (start, end) = (*start.max(&0) as usize, (*end as usize).min(SLOTS - 1));
            for s in topology.slots.iter_mut().take(end + 1).skip(start) {
                *s = index as u16;
            }
        }
        if topology.primaries.is_empty() {
            return Err("CLUSTER SLOTS named no node".into());
        }
        Ok(topology)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::value::parse;

    #[test]
    fn reads_cluster_slots_with_empty_and_named_hosts() {
        let reply = b"*2\r\n\
            *4\r\n:0\r\n:8191\r\n*3\r\n$0\r\n\r\n:7000\r\n$2\r\nid\r\n*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n\
            *3\r\n:8192\r\n:16383\r\n*4\r\n$15\r\nnode2.cache.aws\r\n:6379\r\n$2\r\nid\r\n*0\r\n";
        let (value, _) = parse(reply).unwrap();
        let t = Topology::from_cluster_slots(&value, "10.0.0.9:7000").unwrap();
        assert_eq!(t.primaries, ["10.0.0.9:7000", "node2.cache.aws:6379"]);
        assert_eq!(t.replicas[0], ["127.0.0.1:7003"]);
        assert_eq!(t.owner(0), Some(0));
        assert_eq!(t.owner(8191), Some(0));
        assert_eq!(t.owner(8192), Some(1));
        assert_eq!(t.slots_owned(), [8192, 8192]);
        assert_eq!(t.a_slot_of_each(), [0, 8192]);
        assert_eq!(t.unowned(), 0);
    }

    #[test]
    fn moved_slots_change_owner() {
        let mut t = Topology::single("a:1");
        t.moved(5, "b:2");
        assert_eq!(t.owner(5), Some(1));
        assert_eq!(t.primaries, ["a:1", "b:2"]);
        assert_eq!(t.slots_owned(), [SLOTS - 1, 1]);
    }

    #[test]
    fn a_reply_without_nodes_is_refused() {
        let (value, _) = parse(b"*0\r\n").unwrap();
        assert!(Topology::from_cluster_slots(&value, "a:1").is_err());
        let (value, _) = parse(b"-ERR This instance has cluster support disabled\r\n").unwrap();
        assert!(Topology::from_cluster_slots(&value, "a:1")
            .unwrap_err()
            .contains("cluster support disabled"));
    }
}

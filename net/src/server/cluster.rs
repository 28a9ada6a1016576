//! What the data plane knows of the cluster: who leads each partition and how to reach every
//! node. The control plane (crate `cluster`) builds a [`RouteTable`] from ZooKeeper and hands
//! it to every worker as a message; `net` itself knows nothing of ZooKeeper.
use std::collections::{BTreeMap, BTreeSet};

/// A live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub id: u32,
    /// `host:port` clients are redirected to.
    pub resp: String,
    /// `host:port` of its gRPC service.
    pub grpc: String,
}

impl NodeAddr {
    /// Host and port of the RESP address (`host:port`, IPv6 hosts without brackets).
    pub fn resp_host_port(&self) -> (&str, u16) {
        match self.resp.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().unwrap_or(0),
            ),
            None => (&self.resp, 0),
        }
    }

    /// The 40-character node name Redis Cluster clients expect (CLUSTER NODES, SHARDS, MYID):
    /// derived from the node id, so it is stable across restarts.
    pub fn name(id: u32) -> String {
        format!("{:040x}", 0x5e7_0000_0000u64 + id as u64)
    }
}

/// One partition's routing state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartRoute {
    /// Leader node id; `None` while no replica can lead (election pending or impossible).
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    /// All replicas, preferred leader first.
    pub replicas: Vec<u32>,
    /// In-sync replicas (leader included).
    pub isr: Vec<u32>,
    /// Version of the partition's state in ZooKeeper this comes from (each write of it, an
    /// ISR change or a new leader, makes a higher one): a table that reaches the replication
    /// thread late never undoes a newer ISR its leader wrote (`repl::refresh_roles`).
    pub state_version: i32,
}

/// The cluster as the workers see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    /// This node's id.
    pub me: u32,
    /// Cluster name (INFO, CLUSTER INFO).
    pub name: String,
    /// Live nodes by id.
    pub nodes: BTreeMap<u32, NodeAddr>,
    /// Index `p` = partition `p`.
    pub parts: Vec<PartRoute>,
    /// Current controller id and controller epoch.
    pub controller: Option<(u32, u64)>,
    /// True while this node's ZooKeeper session is lost: it leads nothing until it is back.
    pub fenced: bool,
    /// Sequence number of this table (newer tables replace older ones).
    pub version: u64,
    /// Unclean leader elections this node ran as controller (INFO cluster).
    pub unclean_elections: u64,
    /// Nodes in a controlled shutdown: a leader does not take them (back) into an ISR.
    pub shutting_down: BTreeSet<u32>,
    /// (node, partition): the node could not take up a leadership of the partition and has
    /// not written it since; the partition's leader does not take it into the ISR (it would
    /// hold up acks=all writes until dropped again).
    pub cannot_lead: BTreeSet<(u32, u32)>,
}

impl RouteTable {
    /// True when this node leads `p` right now.
    pub fn leads(&self, p: u32) -> bool {
        !self.fenced
            && self
                .parts
                .get(p as usize)
                .is_some_and(|r| r.leader == Some(self.me))
    }

    /// True when this node holds a replica of `p`.
    pub fn replicates(&self, p: u32) -> bool {
        self.parts
            .get(p as usize)
            .is_some_and(|r| r.replicas.contains(&self.me))
    }

    /// The RESP address of `p`'s leader, when it is known and alive.
    pub fn leader_addr(&self, p: u32) -> Option<&NodeAddr> {
        let l = self.parts.get(p as usize)?.leader?;
        self.nodes.get(&l)
    }
}

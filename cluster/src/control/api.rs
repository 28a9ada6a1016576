//! The control thread's interface: what it tells the rest of the node (a [`ClusterView`] after
//! every change it sees in ZooKeeper) and what the node asks of it ([`ControlRequest`]).
//!
//! The control thread owns the node's ZooKeeper session. ZooKeeper watch callbacks only post a
//! message to it; it re-reads what changed, acts as controller when it holds `/controller`, and
//! publishes the new view. Nothing else in the node talks to ZooKeeper.
use std::collections::BTreeMap;
use std::time::Instant;

use crate::zk::layout::{BrokerInfo, ClusterMeta, PartitionState};

/// One partition's state as last read from `/partitions/<p>/state`, with the znode version it
/// was read at (versions only grow: a node never applies an older one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub state: PartitionState,
    pub version: i32,
    /// Zxid of the write that made this version: a node whose broker registration (its
    /// broker epoch) is newer than this must not act on the leadership it names — it was
    /// given to an earlier incarnation of the node, which may have had data this one lacks.
    pub mzxid: i64,
}

/// Everything the data plane and the replication thread need to know about the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// This node's id.
    pub me: u32,
    pub meta: ClusterMeta,
    /// Live brokers (registered ephemeral znodes), by id.
    pub brokers: BTreeMap<u32, BrokerInfo>,
    /// Index `p` = partition `p`; `meta.partitions` entries.
    pub partitions: Vec<PartitionView>,
    /// The current controller (id, controller epoch), if any.
    pub controller: Option<(u32, u64)>,
    /// False while this node's ZooKeeper session is disconnected or expired: the node must
    /// then lead nothing (it may have been replaced) until the session is back and it has
    /// re-read its roles. Views published while fenced still carry the last known states.
    pub session_ok: bool,
    /// Creation zxid of this node's broker znode (its broker epoch).
    pub broker_epoch: i64,
    /// Nodes that asked for a controlled shutdown and should lead nothing.
    pub shutting_down: Vec<u32>,
    /// (node, partition) of every leadership a node could not take up and whose partition
    /// it has not written since (`/admin/cannot_lead`): a leader does not take such a node
    /// into that partition's ISR.
    pub cannot_lead: Vec<(u32, u32)>,
    /// Unclean leader elections this node made as controller since it started (each one is
    /// also logged at error level).
    pub unclean_elections: u64,
}

impl ClusterView {
    /// True when this node should act as leader of `p` right now.
    pub fn leads(&self, p: u32) -> bool {
        self.session_ok
            && self
                .partitions
                .get(p as usize)
                .is_some_and(|v| v.state.leader == Some(self.me))
    }
}

/// Asks a live replica for its log end offsets (the controller's election input). The node
/// implements it with a gRPC call carrying the controller epoch; `None` when the replica did
/// not answer in time (it then counts as log end 0, i.e. it can still win only if no other
/// in-sync replica answered). With `handover` (a preferred-leader election is about to move
/// these partitions away from that replica, their leader) the replica stops taking writes on
/// them and answers once every write it took is committed.
///
/// The control thread calls it for several replicas at once, each call on a thread of its own.
pub type LogEndProbe = std::sync::Arc<
    dyn Fn(&BrokerInfo, u64, &[u32], bool) -> Option<BTreeMap<u32, u64>> + Send + Sync + 'static,
>;

/// Called with every new view (on the control thread: must only post it on, never block).
pub type ViewSink = Box<dyn Fn(ClusterView) + Send + 'static>;

/// The outcome of an ISR change: the state's new znode version and the ISR written.
pub type IsrWritten = Result<(i32, Vec<u32>), String>;

/// What the node asks of its control thread.
pub enum ControlRequest {
    /// A leader changes the ISR of a partition it leads: a conditional write on the state's
    /// znode version, done only if this node still leads it in `leader_epoch`. `done` gets
    /// the new version and the ISR written (members the ISR in ZooKeeper lacks that are gone
    /// or shutting down are left out), or an error text (not leader any more, epoch moved on,
    /// ZooKeeper down). `storage` has the storage id each new member fetched with (see
    /// `PartitionState::isr_storage`).
    ChangeIsr {
        partition: u32,
        leader_epoch: u32,
        isr: Vec<u32>,
        storage: BTreeMap<u32, u64>,
        done: Box<dyn FnOnce(IsrWritten) + Send>,
    },
    /// Controlled shutdown: ask the controller to move this node's leaderships away and to
    /// take it out of every ISR; `done(true)` once no partition is led by this node, or
    /// `done(false)` at `deadline` (set by the asker: the control thread may be busy for a
    /// while, opening a session, before it reads the request).
    ControlledShutdown {
        deadline: Instant,
        done: Box<dyn FnOnce(bool) + Send>,
    },
    /// This node was named leader of `partition` in `leader_epoch` and cannot take it up (its
    /// log cannot begin the epoch: a full or failing disk). The controller is told (an
    /// ephemeral `/admin/cannot_lead` znode) and elects another in-sync replica if there is
    /// one; this node takes the replica's place as follower and leaves the ISR until it has
    /// caught up again. Ignored when that leadership is not this node's any more.
    CannotLead {
        partition: u32,
        leader_epoch: u32,
        reason: String,
    },
    /// This node writes the partition it reported with `CannotLead` again (a leadership
    /// began, or as follower it appended records of a newer epoch): the mark is withdrawn,
    /// so the controller does not move a leadership it has, and a preferred-leader election
    /// may name it again.
    LeadingAgain { partition: u32, leader_epoch: u32 },
    /// Close the session (ephemeral znodes go at once) and end the thread.
    Stop,
}

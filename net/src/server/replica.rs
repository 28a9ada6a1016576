//! A worker's side of replication (cluster mode): the role of each partition it owns, the high
//! watermark that gates replies, and the work the replication thread asks of it.
//!
//! The worker is the authority on its partitions: it becomes leader of a partition only from a
//! route table that says so (and begins the leader epoch in the store first), serves records
//! to followers only in its own leader epoch, and appends what a leader sent only as follower
//! in that leader's epoch. The replication thread never touches a store.
//!
//! Gating: with acks = all, a write's reply waits until the partition's high watermark (HW)
//! passes the log end of the turn that wrote it. Reads wait the same way when the partition
//! has records above the HW, so no reply ever shows a write that could still be lost. Each
//! turn that needs it leaves an entry `(epoch, [(partition, log end)])`; the worker's
//! *committed* epoch is the newest one whose entries, and all older ones, are covered.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{info, warn};
use simplekv_conf::Acks;

use super::cluster::RouteTable;

/// How long a reply may wait for the in-sync replicas before it fails (the write may or may
/// not survive; the client is told it is unknown, never that it succeeded).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a node that has just become follower of a partition answers `-TRYAGAIN` rather
/// than `MOVED` while it has not heard from the new leader yet (see `ClusterState::refusal`).
pub const LEADER_CHANGE_GRACE: Duration = Duration::from_millis(500);

/// How long a leader refuses writes on a partition it was asked to hand over, if its role
/// does not change meanwhile (the controller that asked went away).
pub const HANDOVER_HOLD: Duration = Duration::from_secs(2);

/// How long replies taken as leader wait, once the partition's node follows another leader,
/// for that leader's high watermark to pass them (they hold up every later reply of the
/// worker meanwhile).
pub const FOLLOWER_WAIT: Duration = Duration::from_secs(1);

/// Messages from workers to the replication driver (on the node's gRPC thread).
#[derive(Debug)]
pub enum FeedMsg {
    /// Records a leader partition handed to the OS in the turn that just ended (`from` is the
    /// first LSN they may hold; `bytes` are whole records), and its log end after them.
    Tail {
        partition: u32,
        leader_epoch: u32,
        from: u64,
        bytes: Vec<u8>,
        log_end: u64,
    },
    /// The worker was named leader of `partition` in `leader_epoch` and cannot take it up:
    /// its log cannot begin the epoch, or cannot take writes any more once begun (`reason`:
    /// a full or failing disk). The node tells the controller, which elects another in-sync
    /// replica if there is one. Sent at every try (one a second) while a leadership that
    /// could not begin stays this node's; once for one whose writes fail.
    CannotLead {
        partition: u32,
        leader_epoch: u32,
        reason: String,
    },
    /// The partition whose leadership in `leader_epoch` was reported with `CannotLead` is
    /// written again (a leadership began, its writes as leader went in again, or a probe
    /// found its log able to take writes): the controller may name this node leader again.
    LeadingAgain { partition: u32, leader_epoch: u32 },
    /// A PUBLISH on this node, for the subscribers of every other node (`pubsub`).
    Publish(Arc<super::pubsub::Publication>),
}

/// Where workers send [`FeedMsg`]s: a channel, and a function that wakes the replication
/// driver after a send (it runs on gRPC's completion-queue thread, which a channel alone
/// cannot wake).
#[derive(Clone)]
pub struct FeedTx {
    tx: Sender<FeedMsg>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl FeedTx {
    pub fn new(tx: Sender<FeedMsg>, wake: Arc<dyn Fn() + Send + Sync>) -> FeedTx {
        FeedTx { tx, wake }
    }

    pub fn send(&self, m: FeedMsg) -> Result<(), crossbeam_channel::SendError<FeedMsg>> {
        self.tx.send(m)?;
        (self.wake)();
        Ok(())
    }
}

/// What the replication driver asks of a worker (answered through `Msg::External`).
#[derive(Debug)]
pub enum ReplOp {
    /// Leader: records from `from`, up to about `max_bytes`. With `validate`, first check the
    /// follower's `(last_epoch, from)` against this log's leader-epoch history.
    Read {
        partition: u32,
        leader_epoch: u32,
        from: u64,
        max_bytes: usize,
        validate: Option<u32>,
    },
    /// Follower: append records the leader sent (with their LSNs and epochs); `leader_hw` is
    /// the leader's high watermark, `leader_horizon` its merge horizon (see
    /// `PartRepl::horizon`). Answered once the records are as durable as the fsync policy
    /// promises.
    Append {
        partition: u32,
        leader_epoch: u32,
        /// Where the push starts in the leader's log: this log's end, or it is refused.
        from: u64,
        bytes: Vec<u8>,
        leader_hw: u64,
        leader_horizon: u64,
    },
    /// Follower: the leader said the log diverges after `end` in `epoch`: cut it there (or at
    /// this log's own end of that epoch, whichever is lower).
    Truncate {
        partition: u32,
        leader_epoch: u32,
        epoch: u32,
        end: u64,
    },
    /// Follower: log end and last record epoch, to start fetching from.
    Position { partition: u32 },
    /// Log ends of the partitions present here (the controller's election input). With
    /// `handover`, the ones led here are about to move to another replica: no more writes on
    /// them, and the answer waits until every write already taken is committed.
    LogEnds {
        partitions: Vec<u32>,
        handover: bool,
    },
    /// Controlled shutdown: take no new writes (`-TRYAGAIN`, so clients retry on the next
    /// leader) and report how many turns still wait for the in-sync replicas.
    Resign,
    /// Leader: hard-link the closed segments and hints into a new directory, for an empty
    /// replica to copy (merges may replace the originals meanwhile; links keep the data).
    Snapshot { partition: u32, leader_epoch: u32 },
    /// Follower: an empty directory to receive a snapshot in, named after `token` (the
    /// copy's number, so that the copier can have it dropped even if this answer never
    /// reaches it).
    Staging {
        partition: u32,
        leader_epoch: u32,
        token: u64,
    },
    /// Follower: replace the log with the copy in `staging` (segments, hints and the
    /// leader's epoch history below the copy's end, opened and checked by the copier), if it
    /// is still the newest copy staged for the partition.
    Install {
        partition: u32,
        leader_epoch: u32,
        staging: std::path::PathBuf,
    },
    /// Follower: the copy staged with `token` failed; remove it if it is still the one
    /// staged (it holds the partition's merges back and takes disk space).
    DropCopy { partition: u32, token: u64 },
}

impl ReplOp {
    /// The first partition id the op names that this node does not have (ids come from the
    /// network: a request naming one must be answered, not index out of bounds).
    fn unknown_partition(&self, partitions: u32) -> Option<u32> {
        let one = |p: u32| (p >= partitions).then_some(p);
        match self {
            ReplOp::Read { partition, .. }
            | ReplOp::Append { partition, .. }
            | ReplOp::Truncate { partition, .. }
            | ReplOp::Position { partition }
            | ReplOp::Snapshot { partition, .. }
            | ReplOp::Staging { partition, .. }
            | ReplOp::Install { partition, .. }
            | ReplOp::DropCopy { partition, .. } => one(*partition),
            ReplOp::LogEnds { partitions: ps, .. } => ps.iter().copied().find_map(one),
            ReplOp::Resign => None,
        }
    }
}

/// The answers.
#[derive(Debug, Clone)]
pub enum ReplReply {
    Records {
        leader_epoch: u32,
        from: u64,
        bytes: Vec<u8>,
        next: u64,
        log_end: u64,
        log_start: u64,
        hw: u64,
    },
    Diverging {
        epoch: u32,
        end: u64,
        log_end: u64,
        hw: u64,
    },
    Position {
        log_end: u64,
        last_epoch: u32,
    },
    /// (partition, log end, high watermark).
    Ends(Vec<(u32, u64, u64)>),
    /// Turns still waiting for the in-sync replicas.
    Pending(usize),
    /// Leader: the follower's log is empty and this log has closed segments to copy.
    Bootstrap,
    /// A snapshot (or staging) directory, its files, where it ends, and the epoch history.
    Snapshot {
        dir: std::path::PathBuf,
        files: Vec<String>,
        end: u64,
        epochs: Vec<(u32, u64)>,
    },
    /// This node does not lead (or follow, for follower ops) the partition in that epoch.
    WrongRole {
        leader_epoch: u32,
    },
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not a replica here, or the route table says nobody leads.
    Idle,
    Leader {
        epoch: u32,
    },
    Follower {
        epoch: u32,
    },
}

/// Per-partition replication state on its owning worker.
#[derive(Debug)]
pub struct PartRepl {
    pub role: Role,
    /// High watermark: every record below it is on every in-sync replica.
    pub hw: u64,
    /// Leader: serve nothing after this instant (the in-sync followers went quiet).
    pub lease_until: Instant,
    /// Leader: log end already pushed to the replication thread.
    pub fed_to: u64,
    /// Leader: number of in-sync replicas, leader included.
    pub isr_len: usize,
    /// Leader: the partition has followers (replication factor > 1).
    pub has_followers: bool,
    /// Merge horizon: the lowest position of any replica, in sync or not, at most the HW;
    /// merges drop tombstones only below it. Leader: its own count (see `Msg::Hw`).
    /// Follower: the leader's, as last sent with records. 0 (keep every tombstone) until the
    /// leader of the current epoch says otherwise.
    pub horizon: u64,
    /// When the role last changed.
    pub role_since: Instant,
    /// Follower: the leader of this epoch has sent records (it has taken the leadership).
    pub heard_leader: bool,
    /// Leader: a preferred-leader election is moving the partition away; writes are refused
    /// until then (see `ReplOp::LogEnds`).
    pub handover_until: Option<Instant>,
    /// Leader: how many replicas the replication thread counted for the last `hw` it sent
    /// (`usize::MAX` before the first one of the leadership, and for a leader without
    /// followers, which is its whole ISR).
    pub hw_isr: usize,
}

impl PartRepl {
    /// Leader: a handover is under way (writes refused).
    pub fn handing_over(&self, now: Instant) -> bool {
        self.handover_until.is_some_and(|until| now < until)
    }

    fn new() -> PartRepl {
        PartRepl {
            role: Role::Idle,
            hw: 0,
            lease_until: Instant::now(),
            fed_to: 0,
            isr_len: 1,
            has_followers: false,
            horizon: 0,
            role_since: Instant::now(),
            heard_leader: false,
            handover_until: None,
            hw_isr: usize::MAX,
        }
    }
}

/// A turn whose replies wait for high watermarks: (epoch, [(partition, log end, cut)], since),
/// where `cut` says the partition's log was since cut below that end (the wait can never be
/// covered).
pub type TurnWait = (u64, Vec<(u32, u64, bool)>, Instant);

/// A worker's cluster state.
pub struct ClusterState {
    pub routes: Arc<RouteTable>,
    pub parts: Vec<PartRepl>,
    pub feed: FeedTx,
    /// Turns whose replies wait for the HW: (epoch, [(partition, log end, cut)], since).
    pub waits: VecDeque<TurnWait>,
    /// Leader partitions this turn's replies wait on.
    pub turn_parts: Vec<u32>,
    /// Partitions of `turn_parts` cut during this turn (after a role change in the same
    /// turn): their waits count as cut whatever their end.
    pub turn_cuts: Vec<u32>,
    /// Newest epoch all of whose waits are covered.
    pub repl_committed: u64,
    pub min_isr: usize,
    pub default_acks: Acks,
    /// How long a leader may go on serving without hearing from its in-sync followers.
    pub lease: Duration,
    /// Controlled shutdown under way: writes are refused so none is left unconfirmed when
    /// leadership moves.
    pub resigning: bool,
}

impl ClusterState {
    pub fn new(
        routes: Arc<RouteTable>,
        partitions: u32,
        feed: FeedTx,
        min_isr: usize,
        default_acks: Acks,
        lease: Duration,
    ) -> ClusterState {
        ClusterState {
            routes,
            parts: (0..partitions).map(|_| PartRepl::new()).collect(),
            feed,
            waits: VecDeque::new(),
            turn_parts: Vec::new(),
            turn_cuts: Vec::new(),
            repl_committed: 0,
            min_isr,
            default_acks,
            lease,
            resigning: false,
        }
    }

    pub fn role(&self, p: u32) -> Role {
        self.parts
            .get(p as usize)
            .map(|r| r.role)
            .unwrap_or(Role::Idle)
    }

    /// Notes that this turn's replies wait on `p`'s high watermark.
    pub fn wait_on(&mut self, p: u32) {
        if !self.turn_parts.contains(&p) {
            self.turn_parts.push(p);
        }
    }

    /// Advances `repl_committed` over covered turns; `last_ended` is the newest ended turn.
    /// Returns failed epochs with their error text.
    pub fn advance(&mut self, last_ended: u64, now: Instant) -> Vec<(u64, String)> {
        let mut failed = Vec::new();
        while let Some((e, parts, since)) = self.waits.front() {
            let mut covered = true;
            let mut lost = None;
            for &(p, end, cut) in parts {
                let r = &self.parts[p as usize];
                if cut {
                    lost = Some(
                        "ERR not acknowledged: the partition's new leader did not have everything this reply waited on; a write may or may not have been applied, a read can be tried again",
                    );
                    break;
                }
                // A leadership that moved to another replica (a preferred-leader election)
                // leaves this node following the new leader: the records stay in its log
                // unless that leader makes it cut them, and they are committed once the high
                // watermark it learns from that leader passes them (the leader checked its
                // log against this one's before sending anything). So the reply keeps waiting
                // for that instead of failing with an unknown outcome.
                let gave_up = matches!(r.role, Role::Follower { .. })
                    && now.saturating_duration_since(r.role_since) >= FOLLOWER_WAIT
                    && r.hw < end;
                if r.role == Role::Idle || gave_up {
                    lost = Some(
                        "ERR not acknowledged: this node stopped leading its partition before the in-sync replicas confirmed what this reply waited on; a write may or may not have been applied, a read can be tried again",
                    );
                    break;
                }
                if r.hw < end {
                    covered = false;
                }
            }
            // Covered while the in-sync replicas counted for the HW were fewer than
            // min_insync_replicas (they shrank after the write was taken): the records are
            // committed but on too few replicas for what acks=all promises, as Kafka's
            // NOT_ENOUGH_REPLICAS_AFTER_APPEND.
            if lost.is_none()
                && covered
                && parts.iter().any(|&(p, _, _)| {
                    let r = &self.parts[p as usize];
                    matches!(r.role, Role::Leader { .. }) && r.hw_isr < self.min_isr
                })
            {
                lost = Some(
                    "ERR not acknowledged: the in-sync replicas fell below min_insync_replicas before confirming this; a write was applied but may not survive a failure, a read can be tried again",
                );
            }
            if lost.is_none() && !covered && now.duration_since(*since) >= ACK_TIMEOUT {
                lost = Some(
                    "ERR not acknowledged by the in-sync replicas in time; a write may or may not have been applied, a read can be tried again",
                );
            }
            if let Some(msg) = lost {
                failed.push((*e, msg.to_string()));
            } else if !covered {
                break;
            }
            let e = *e;
            self.waits.pop_front();
            self.repl_committed = self.repl_committed.max(e);
        }
        if self.waits.is_empty() {
            self.repl_committed = self.repl_committed.max(last_ended);
        }
        failed
    }

    /// The error reply for a command on partition `p` that this node cannot serve as leader
    /// now, or `None` when it can; `key` gives the slot named in a MOVED.
    pub fn refusal(&self, p: u32, key: &[u8], now: Instant) -> Option<String> {
        self.refusal_at(p, crate::slot::key_slot(key), now)
    }

    /// `refusal` for a command about `slot` of partition `p` rather than a key of it.
    pub fn refusal_at(&self, p: u32, slot: u16, now: Instant) -> Option<String> {
        let rt = &self.routes;
        if rt.fenced {
            return Some(
                "TRYAGAIN this node lost its ZooKeeper session and serves nothing until it is back"
                    .into(),
            );
        }
        match self.role(p) {
            Role::Leader { .. } => {
                let r = &self.parts[p as usize];
                if r.has_followers && now > r.lease_until {
                    return Some(
                        "TRYAGAIN the partition's in-sync followers have not been heard from; its leadership is being checked"
                            .into(),
                    );
                }
                None
            }
            // A leadership that just moved here: the new leader may not know yet (its route
            // table comes through its own ZooKeeper watch) and send the client back with a
            // MOVED of its own; clients bounced between the two nodes (hundreds of redirects
            // in a few ms after a controlled shutdown). Until the new leader has sent records,
            // which it does only once it leads, for a short while: retry here.
            Role::Follower { .. }
                if !self.parts[p as usize].heard_leader
                    && now.saturating_duration_since(self.parts[p as usize].role_since)
                        < LEADER_CHANGE_GRACE =>
            {
                Some("TRYAGAIN the partition is changing leader".into())
            }
            _ => match rt.leader_addr(p) {
                Some(a) if a.id != rt.me => Some(super::cluster_cmds::moved(slot, &a.resp)),
                Some(_) => Some("TRYAGAIN the partition is changing leader".into()),
                // Its leader is gone and the controller is electing another.
                None if rt.parts.get(p as usize).is_some_and(|r| r.leader.is_some()) => {
                    Some("TRYAGAIN the partition's leader is down; electing a new one".into())
                }
                None => Some(super::cluster_cmds::CLUSTERDOWN.into()),
            },
        }
    }

    /// `p`'s log was cut to `cut` (a follower's truncation; 0 when a copy of the leader's
    /// replaced it): replies waiting on records above it fail.
    pub fn note_cut(&mut self, p: u32, cut: u64) {
        if self.turn_parts.contains(&p) && !self.turn_cuts.contains(&p) {
            self.turn_cuts.push(p);
        }
        for (_, parts, _) in self.waits.iter_mut() {
            for (wp, end, lost) in parts.iter_mut() {
                if *wp == p && *end > cut {
                    *lost = true;
                }
            }
        }
    }

    /// NOREPLICAS when an acks=all write would find too few in-sync replicas.
    pub fn too_few_replicas(&self, p: u32, acks: Acks) -> bool {
        acks == Acks::All && self.parts[p as usize].isr_len < self.min_isr
    }

    /// Applies a new route table to the roles of the partitions in `owned`. Returns the
    /// partitions whose role changed, with the new role.
    pub fn plan_roles(&self, rt: &RouteTable, owned: &[u32]) -> Vec<(u32, Role)> {
        let mut out = Vec::new();
        for &p in owned {
            let Some(pr) = rt.parts.get(p as usize) else {
                continue;
            };
            let role = if rt.fenced || !pr.replicas.contains(&rt.me) {
                Role::Idle
            } else if pr.leader == Some(rt.me) {
                Role::Leader {
                    epoch: pr.leader_epoch,
                }
            } else if pr.leader.is_some() {
                Role::Follower {
                    epoch: pr.leader_epoch,
                }
            } else {
                Role::Idle
            };
            if role != self.role(p) {
                out.push((p, role));
            }
        }
        out
    }

    pub fn log_role(p: u32, old: Role, new: Role) {
        match new {
            Role::Leader { epoch } => info!("partition {p}: leader in epoch {epoch}"),
            Role::Follower { epoch } => info!("partition {p}: follower in epoch {epoch}"),
            Role::Idle if matches!(old, Role::Leader { .. }) => {
                warn!("partition {p}: no longer leader")
            }
            Role::Idle => info!("partition {p}: idle"),
        }
    }
}

/// A WAIT parked on the partition's owner until enough followers have its log end.
pub struct ParkedWait {
    pub reply_to: super::router::ReplyTo,
    pub partition: u32,
    pub lsn: u64,
    pub numreplicas: i64,
    pub deadline: Option<Instant>,
}

impl Worker {
    /// Parks a WAIT (see `Op::Wait`).
    pub fn park_wait(
        &mut self,
        reply_to: super::router::ReplyTo,
        partition: u32,
        numreplicas: i64,
        timeout_ms: u64,
    ) {
        let lsn = self.store(partition).map_or(0, |s| s.log_end());
        let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
        self.parked_waits.push(ParkedWait {
            reply_to,
            partition,
            lsn,
            numreplicas,
            deadline,
        });
    }

    /// How many replicas have `partition`'s records below `lsn`: its in-sync followers once
    /// the high watermark passed it (this node leading it), else none.
    pub fn acked_replicas(&self, partition: u32, lsn: u64) -> i64 {
        let Some(c) = self.cluster.as_ref() else {
            return 0;
        };
        match c.parts.get(partition as usize) {
            Some(r) if matches!(r.role, Role::Leader { .. }) && r.hw >= lsn => {
                r.isr_len.saturating_sub(1) as i64
            }
            _ => 0,
        }
    }

    /// Answers parked WAITs that are satisfied or due: the number of in-sync followers that
    /// have the partition's records up to the log end it had when WAIT arrived (all of them
    /// once the high watermark passed it).
    pub fn check_waits(&mut self) {
        if self.parked_waits.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.parked_waits) {
            let have = self.acked_replicas(w.partition, w.lsn);
            // A WAIT of one of this worker's connections whose client went away: nobody to
            // answer once it is closed; answered now while it is closing (its peer hung up),
            // so that it can close (a WAIT with no timeout would otherwise hold it for good).
            let rt = w.reply_to;
            if rt.worker == self.id {
                match self
                    .conn_mut(rt.token)
                    .filter(|c| c.client.id == rt.conn_id)
                {
                    None => continue,
                    Some(c) if c.client.eof || c.client.dead => {
                        done.push((rt, have));
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if have >= w.numreplicas || w.deadline.is_some_and(|d| now >= d) {
                done.push((w.reply_to, have));
            } else {
                keep.push(w);
            }
        }
        self.parked_waits = keep;
        for (reply_to, n) in done {
            let resp = super::router::Response::new(reply_to, Payload::Int(n));
            self.respond(resp);
        }
    }
}

/// What a reply must wait for before it goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Nothing: a read of committed data, or a write with acks = 0.
    Now,
    /// The turn's commit (the fsync policy).
    Durable,
    /// The turn's commit and the in-sync replicas (acks = all, or a read of uncommitted data).
    Committed,
}

/// Epoch of the last record of a log (0 when it has none): what a follower tells its leader.
pub fn last_record_epoch(store: &simplekv_engine::Store) -> u32 {
    let end = store.log_end();
    store
        .epoch_cache()
        .entries()
        .iter()
        .rev()
        .find(|e| e.start_lsn < end)
        .map(|e| e.epoch)
        .unwrap_or(0)
}

use super::worker::Worker;
use crate::server::router::{Op, Payload};

impl Worker {
    pub fn default_acks(&self) -> Acks {
        self.cluster
            .as_ref()
            .map_or(Acks::Leader, |c| c.default_acks)
    }

    /// Takes a new route table: partitions owned here change role as it says.
    pub fn apply_routes(&mut self, rt: Arc<RouteTable>) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        if rt.version < c.routes.version {
            return;
        }
        let owned: Vec<u32> = self
            .owned
            .iter()
            .copied()
            .filter(|&p| self.store(p).is_some())
            .collect();
        let changes = c.plan_roles(&rt, &owned);
        for (p, role) in changes {
            let old = self.cluster.as_ref().map_or(Role::Idle, |c| c.role(p));
            // A log copy staged in the old role is not installed any more (`install_snapshot`
            // checks the role), and it no longer holds this partition's merges back.
            if let Some(dir) = self.staged_copy[p as usize].take() {
                let _ = std::fs::remove_dir_all(dir);
            }
            if matches!(old, Role::Leader { .. })
                && let Some(s) = self.store_mut(p)
            {
                // A merge the leader started may write records when installed (values it
                // dropped as expired get tombstones): not into a log that now only takes
                // the new leader's records, nor in an epoch that is over.
                s.abandon_merge();
            }
            let role = match role {
                Role::Leader { epoch } => match self.store_mut(p).map(|s| {
                    s.set_replica(false);
                    s.begin_epoch(epoch)
                }) {
                    Some(Ok(())) => {
                        if std::mem::take(&mut self.lead_failures) > 0 {
                            log::info!("partition {p}: leader epoch {epoch} began");
                        }
                        self.writes_again(p);
                        role
                    }
                    Some(Err(e)) => {
                        // Said at the first failure and every 30th after (one a second).
                        if self.lead_failures.is_multiple_of(30) {
                            log::error!(
                                "partition {p}: cannot begin leader epoch {epoch}: {e}; trying again every second"
                            );
                        }
                        self.lead_failures += 1;
                        self.lead_retry = Some(Instant::now() + Duration::from_secs(1));
                        self.lead_failed.insert(p, epoch);
                        if let Some(c) = self.cluster.as_ref() {
                            let _ = c.feed.send(FeedMsg::CannotLead {
                                partition: p,
                                leader_epoch: epoch,
                                reason: e.to_string(),
                            });
                        }
                        Role::Idle
                    }
                    None => Role::Idle,
                },
                Role::Follower { .. } => {
                    if let Some(s) = self.store_mut(p) {
                        s.set_replica(true);
                    }
                    role
                }
                Role::Idle => role,
            };
            if role == old {
                // A leadership that could not begin, again: nothing changes.
                continue;
            }
            let log_end = self.store(p).map_or(0, |s| s.log_end());
            let Some(c) = self.cluster.as_mut() else {
                return;
            };
            let lease = c.lease;
            let r = &mut c.parts[p as usize];
            if let Role::Leader { .. } = role {
                // Followers have not fetched from this leader yet: give them one lease.
                r.lease_until = Instant::now() + lease;
                r.fed_to = log_end;
            }
            r.role = role;
            r.role_since = Instant::now();
            r.hw_isr = usize::MAX;
            r.heard_leader = false;
            r.handover_until = None;
            // A new role, a new epoch: the horizon comes from its leader (or this node's count).
            r.horizon = 0;
            ClusterState::log_role(p, old, role);
        }
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        for (p, r) in c.parts.iter_mut().enumerate() {
            if let Some(pr) = rt.parts.get(p) {
                r.isr_len = pr.isr.len();
                r.has_followers = pr.replicas.len() > 1;
            }
        }
        c.routes = rt;
        self.advance_committed();
        self.release_after_change();
    }

    /// A partition this node could not lead can be written again (a leadership began, or
    /// `probe_failed_leaderships` found its log working): the controller is told, so that it
    /// may name this node leader again.
    fn writes_again(&mut self, p: u32) {
        if let Some(failed) = self.lead_failed.remove(&p)
            && let Some(c) = self.cluster.as_ref()
        {
            let _ = c.feed.send(FeedMsg::LeadingAgain {
                partition: p,
                leader_epoch: failed,
            });
        }
    }

    /// A partition this node could not lead, and now follows (or still leads, when no other
    /// in-sync replica could take over), may get no records to show that its disk works
    /// again: once a second its log is probed (`Store::probe_writes`: room for 256 KiB of
    /// records or the write that failed, and the epoch checkpoint written again, unchanged),
    /// and once that works the controller is told. A leader whose writes go in again says so
    /// without a probe.
    fn probe_failed_leaderships(&mut self) {
        const PROBE_ROOM: u64 = 256 << 10;
        if self.lead_failed.is_empty()
            || self
                .lead_probed
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.lead_probed = Some(Instant::now());
        let probed: Vec<(u32, bool)> = self
            .lead_failed
            .iter()
            .filter_map(|(&p, &failed)| match self.cluster.as_ref()?.role(p) {
                Role::Follower { .. } => Some((p, false)),
                Role::Leader { epoch } if epoch == failed => Some((p, true)),
                _ => None,
            })
            .collect();
        for (p, leads) in probed {
            let works = self.store_mut(p).is_some_and(|s| {
                (leads && s.disk_failure().is_none()) || s.probe_writes(PROBE_ROOM).is_ok()
            });
            if works {
                self.writes_again(p);
            }
        }
    }

    /// A partition led here whose log cannot take writes any more (`Store::disk_failure`: a
    /// full disk, or a failing one) is reported as one this node cannot lead in its epoch,
    /// once for its epoch until its writes work again: the controller moves it to another
    /// in-sync replica when there is one, as for a leadership that could not begin (no
    /// handover: as after a crash, acks=1 and acks=0 writes the followers had not fetched
    /// yet may be cut, and acks=all writes in flight get an error), and this node keeps it
    /// otherwise. `probe_failed_leaderships` finds out when it can write again.
    fn report_disk_failures(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let mut failing = Vec::new();
        for &p in &self.owned {
            let Role::Leader { epoch } = c.role(p) else {
                continue;
            };
            if self.lead_failed.get(&p) == Some(&epoch) {
                continue;
            }
            if let Some(reason) = self.store(p).and_then(|s| s.disk_failure()) {
                failing.push((p, epoch, reason.to_string()));
            }
        }
        for (p, epoch, reason) in failing {
            // Probed a second from now at the earliest, not right after the failure.
            self.lead_probed = Some(Instant::now());
            log::error!(
                "partition {p}: its log cannot take writes ({reason}); asking the controller to move its leadership (epoch {epoch}) to another in-sync replica"
            );
            self.lead_failed.insert(p, epoch);
            if let Some(c) = self.cluster.as_ref() {
                let _ = c.feed.send(FeedMsg::CannotLead {
                    partition: p,
                    leader_epoch: epoch,
                    reason,
                });
            }
        }
    }

    /// A leadership this node could not take up (the epoch could not begin: a full disk)
    /// is tried again from the route table it has, since no new table may come to wake it:
    /// the controller, told with `FeedMsg::CannotLead`, moves it to another in-sync replica
    /// when there is one, and otherwise leaves it with this node.
    pub fn retry_leadership(&mut self) {
        self.report_disk_failures();
        self.probe_failed_leaderships();
        if self.lead_retry.is_none_or(|t| Instant::now() < t) {
            return;
        }
        self.lead_retry = None;
        if let Some(rt) = self.cluster.as_ref().map(|c| c.routes.clone()) {
            self.apply_routes(rt);
        }
    }

    fn release_after_change(&mut self) {
        // Waits failed by a role change become error replies now, not at the next write.
        let tokens: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].is_some())
            .map(|i| i + super::worker::FIRST_CONN)
            .collect();
        for t in tokens {
            self.mark_conn_dirty(t);
        }
    }

    /// The replication thread's news about a partition led here.
    pub fn on_hw(
        &mut self,
        p: u32,
        leader_epoch: u32,
        hw: u64,
        lease_until: Instant,
        horizon: u64,
        isr: usize,
    ) {
        let log_end = self.store(p).map_or(0, |s| s.log_end());
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(r) = c.parts.get_mut(p as usize) else {
            return;
        };
        if r.role
            != (Role::Leader {
                epoch: leader_epoch,
            })
        {
            return;
        }
        r.hw = r.hw.max(hw.min(log_end));
        r.hw_isr = isr;
        // Replaced, never maxed: the lease shrinks when the ISR grows past this node alone
        // (its unlimited lease then ends). Messages come in order from one thread.
        r.lease_until = lease_until;
        r.horizon = horizon;
        self.advance_committed();
    }

    /// End of turn: records that leader partitions handed to the OS go to the replication
    /// thread, which streams them to the followers.
    pub fn feed_followers(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let mut todo = Vec::new();
        for &p in &self.owned {
            let r = &c.parts[p as usize];
            if let Role::Leader { epoch } = r.role
                && r.has_followers
                && let Some(s) = self.store(p)
                && s.log_end() > r.fed_to
            {
                todo.push((p, epoch, r.fed_to));
            }
        }
        for (p, epoch, from) in todo {
            let Some(s) = self.store(p) else { continue };
            let log_end = s.log_end();
            match s.read_records(from, usize::MAX) {
                Ok(b) => {
                    let next = if b.count > 0 { b.next_lsn } else { log_end };
                    if let Some(c) = self.cluster.as_mut() {
                        c.parts[p as usize].fed_to = next.max(from);
                        let _ = c.feed.send(FeedMsg::Tail {
                            partition: p,
                            leader_epoch: epoch,
                            from,
                            bytes: b.bytes,
                            log_end,
                        });
                    }
                }
                Err(e) => log::error!("partition {p}: reading new records for followers: {e}"),
            }
        }
    }

    /// End of turn: a leader without followers (replication factor 1) is its whole ISR, so
    /// what it logged is committed; no follower position will move its high watermark
    /// (nothing goes to the replication thread for it), so it moves here.
    pub fn commit_solo_leaders(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let mut moved = Vec::new();
        for &p in &self.owned {
            let r = &c.parts[p as usize];
            if matches!(r.role, Role::Leader { .. })
                && !r.has_followers
                && let Some(s) = self.store(p)
                && (s.log_end() > r.hw || r.horizon < s.log_end())
            {
                moved.push((p, s.log_end()));
            }
        }
        if moved.is_empty() {
            return;
        }
        if let Some(c) = self.cluster.as_mut() {
            for (p, end) in moved {
                let r = &mut c.parts[p as usize];
                r.hw = r.hw.max(end);
                // Every replica (this one) has every record: tombstones may go (the
                // replication thread's own figure for it lags, having no positions).
                r.horizon = end;
            }
        }
        self.advance_committed();
    }

    /// End of turn `e`: what its replies wait on.
    pub fn note_turn_waits(&mut self, e: u64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if c.turn_parts.is_empty() {
            return;
        }
        let parts = std::mem::take(&mut c.turn_parts);
        let cuts = std::mem::take(&mut c.turn_cuts);
        let mut waits = Vec::with_capacity(parts.len());
        for p in parts {
            let end = self.stores[p as usize].as_ref().map_or(0, |s| s.log_end());
            // A cut in this very turn (the partition changed role meanwhile) may have taken
            // records this turn wrote, whatever the log end is now.
            waits.push((p, end, cuts.contains(&p)));
        }
        if let Some(c) = self.cluster.as_mut() {
            c.waits.push_back((e, waits, Instant::now()));
        }
    }

    /// Cluster mode: the refusal for a command on partition `p`, if this node cannot serve it.
    /// `key` gives the slot for MOVED. Standalone: always `None`.
    pub fn cluster_refusal(&self, p: u32, key: &[u8], write: bool, acks: Acks) -> Option<String> {
        let c = self.cluster.as_ref()?;
        let owned_here = self.topo.worker_of(p) == self.id;
        if !owned_here {
            // The owner re-checks; here only what this worker can see from the routes. A
            // partition this node follows goes to its owner too, which knows whether the
            // leader has been heard from since the role changed (TRYAGAIN or MOVED, see
            // `ClusterState::refusal`).
            if c.routes.leads(p) || c.routes.replicates(p) {
                return None;
            }
        }
        // One clock read per command (it is a measurable share of a worker's time).
        let now = Instant::now();
        if let Some(r) = c.refusal(p, key, now) {
            return Some(r);
        }
        if write && c.resigning {
            return Some(
                "TRYAGAIN this node is shutting down; its partitions are moving to other nodes"
                    .into(),
            );
        }
        if write && c.parts.get(p as usize).is_some_and(|r| r.handing_over(now)) {
            return Some("TRYAGAIN the partition is moving to its preferred leader".into());
        }
        if write && c.too_few_replicas(p, acks) {
            return Some("NOREPLICAS Not enough good replicas to write.".into());
        }
        None
    }

    /// What a reply on partition `p` needs, given whether it wrote. Notes the partition for
    /// this turn's HW wait when it needs the replicas.
    pub fn need_for(&mut self, p: Option<u32>, wrote: bool, acks: Acks) -> Need {
        let Some(c) = self.cluster.as_mut() else {
            return if wrote { Need::Durable } else { Need::Now };
        };
        let Some(p) = p else {
            return if wrote { Need::Durable } else { Need::Now };
        };
        let r = &c.parts[p as usize];
        if !matches!(r.role, Role::Leader { .. }) {
            return if wrote { Need::Durable } else { Need::Now };
        }
        if wrote {
            return match acks {
                Acks::None => Need::Now,
                Acks::Leader => Need::Durable,
                Acks::All => {
                    c.wait_on(p);
                    Need::Committed
                }
            };
        }
        let hw = r.hw;
        let end = self.stores[p as usize].as_ref().map_or(0, |s| s.log_end());
        if hw < end {
            if let Some(c) = self.cluster.as_mut() {
                c.wait_on(p);
            }
            Need::Committed
        } else {
            Need::Now
        }
    }

    /// Partitions whose keys this worker serves to clients: all it owns standalone, the ones
    /// it leads in cluster mode.
    pub fn served(&self) -> Vec<u32> {
        match self.cluster.as_ref() {
            None => self.owned.clone(),
            Some(c) => self
                .owned
                .iter()
                .copied()
                .filter(|&p| matches!(c.role(p), Role::Leader { .. }))
                .collect(),
        }
    }

    /// Runs a replication request.
    pub fn repl_op(&mut self, op: ReplOp) -> (Payload, Need) {
        let reply = |r: ReplReply| Payload::Repl(Box::new(r));
        if let Some(p) = op.unknown_partition(self.topo.partitions) {
            let msg = format!("no partition {p}: the cluster has {}", self.topo.partitions);
            return (reply(ReplReply::Failed(msg)), Need::Now);
        }
        match op {
            ReplOp::Read {
                partition: p,
                leader_epoch,
                from,
                max_bytes,
                validate,
            } => {
                let role = self.cluster.as_ref().map(|c| c.role(p));
                if role
                    != Some(Role::Leader {
                        epoch: leader_epoch,
                    })
                {
                    let epoch = match role {
                        Some(Role::Leader { epoch } | Role::Follower { epoch }) => epoch,
                        _ => 0,
                    };
                    return (
                        reply(ReplReply::WrongRole {
                            leader_epoch: epoch,
                        }),
                        Need::Now,
                    );
                }
                if validate.is_some() {
                    // The horizon may have counted this replica at a position it no longer
                    // has (it lost records in a crash). Until the driver's next horizon, which
                    // counts it from `from`, no merge may drop tombstones at or above `from`,
                    // and one under way that may is given up.
                    if let Some(c) = self.cluster.as_mut() {
                        let r = &mut c.parts[p as usize];
                        r.horizon = r.horizon.min(from);
                    }
                    if let Some(s) = self.store_mut(p)
                        && s.abandon_merge_dropping_from(from)
                    {
                        info!(
                            "partition {p}: a replica is back at LSN {from}; the merge under way would drop tombstones it needs, so it was given up"
                        );
                    }
                }
                let hw = self.cluster.as_ref().map_or(0, |c| c.parts[p as usize].hw);
                let Some(s) = self.store(p) else {
                    return (reply(ReplReply::Failed("no store".into())), Need::Now);
                };
                // An empty replica copies the closed segments as files instead of replaying
                // them record by record. So does one whose log ends where merges here may have
                // dropped tombstones (it lost its tail in a crash, or was away while its
                // position was counted): fetched records would never delete what it holds
                // there. Records after validation come from positions this leader's merge
                // horizon counts, so only the first request needs the check.
                let empty = from == 0 && validate == Some(0) && s.active_base() > 0;
                if empty || (validate.is_some() && from < s.dropped_below()) {
                    return (reply(ReplReply::Bootstrap), Need::Now);
                }
                if let Some(last_epoch) = validate {
                    let ok = if last_epoch == 0 {
                        true
                    } else {
                        match s.end_offset_for_epoch(last_epoch) {
                            Some((e, end)) => e == last_epoch && end >= from,
                            None => false,
                        }
                    };
                    if !ok {
                        let (epoch, end) = s.end_offset_for_epoch(last_epoch).unwrap_or((0, 0));
                        return (
                            reply(ReplReply::Diverging {
                                epoch,
                                end,
                                log_end: s.log_end(),
                                hw,
                            }),
                            Need::Now,
                        );
                    }
                }
                match s.read_records(from, max_bytes) {
                    Ok(b) => {
                        let next = if b.count > 0 {
                            b.next_lsn
                        } else {
                            b.next_lsn.max(from)
                        };
                        (
                            reply(ReplReply::Records {
                                leader_epoch,
                                from,
                                bytes: b.bytes,
                                next,
                                log_end: s.log_end(),
                                log_start: s.log_start(),
                                hw,
                            }),
                            Need::Now,
                        )
                    }
                    Err(e) => (reply(ReplReply::Failed(e.to_string())), Need::Now),
                }
            }
            ReplOp::Append {
                partition: p,
                leader_epoch,
                from,
                bytes,
                leader_hw,
                leader_horizon,
            } => {
                let s = match self.follower_store(p, leader_epoch) {
                    Ok(s) => s,
                    Err(e) => return (e, Need::Now),
                };
                let before = s.log_end();
                if from != before {
                    // A push that does not start at this log's end: an earlier one failed
                    // (or was cut short) while this one was on its way. Appending it would
                    // leave a hole the leader cannot see (it would count this replica as
                    // having the records in it); the driver validates again instead.
                    let e = format!(
                        "a push from LSN {from} reached a log that ends at {before} (an earlier \
                         push failed); validating again"
                    );
                    return (reply(ReplReply::Failed(e)), Need::Now);
                }
                let r = s.append_records(&bytes);
                let log_end = s.log_end();
                let last_epoch = last_record_epoch(s);
                if r.is_err() && log_end > before {
                    // Whole batches before the one refused were taken: they are written and
                    // synced as any other.
                    self.mark_dirty(p);
                }
                match r {
                    Ok(n) => {
                        if n > 0 {
                            self.mark_dirty(p);
                        }
                        if let Some(c) = self.cluster.as_mut() {
                            let pr = &mut c.parts[p as usize];
                            pr.heard_leader = true;
                            pr.hw = pr.hw.max(leader_hw.min(log_end));
                            // Replaced, not maxed: the leader lowers it when a replica comes
                            // back with less than it had (a wiped disk).
                            pr.horizon = leader_horizon;
                        }
                        // Durable also without records of its own (a high watermark update):
                        // the position it reports is the leader's acknowledgement, and
                        // records of an earlier push may still be on their way to disk.
                        (
                            reply(ReplReply::Position {
                                log_end,
                                last_epoch,
                            }),
                            Need::Durable,
                        )
                    }
                    Err(e) => (reply(ReplReply::Failed(e.to_string())), Need::Now),
                }
            }
            ReplOp::Truncate {
                partition: p,
                leader_epoch,
                epoch,
                end,
            } => {
                let s = match self.follower_store(p, leader_epoch) {
                    Ok(s) => s,
                    Err(e) => return (e, Need::Now),
                };
                let own = s.end_offset_for_epoch(epoch).map_or(0, |(_, e)| e);
                let cut = end.min(own);
                if cut < s.log_end() {
                    warn!(
                        "partition {p}: log diverges from the leader's after LSN {cut} (leader epoch {epoch} ends at {end}); truncating"
                    );
                    // The journal must not bring the cut records back at the next start.
                    if let Err(e) = self.prepare_log_cut() {
                        return (reply(ReplReply::Failed(e)), Need::Now);
                    }
                    // Before cutting: a cut that fails half-way may have removed records.
                    if let Some(c) = self.cluster.as_mut() {
                        c.note_cut(p, cut);
                    }
                    let Some(s) = self.store_mut(p) else {
                        return (reply(ReplReply::Failed("no store".into())), Need::Now);
                    };
                    if let Err(e) = s.truncate_to(cut) {
                        return (reply(ReplReply::Failed(e.to_string())), Need::Now);
                    }
                    // A cut inside a write batch moves back to the batch's start: what waited
                    // on the records between is lost too.
                    let end = s.log_end();
                    if end < cut
                        && let Some(c) = self.cluster.as_mut()
                    {
                        c.note_cut(p, end);
                    }
                }
                let Some(s) = self.store(p) else {
                    return (reply(ReplReply::Failed("no store".into())), Need::Now);
                };
                let log_end = s.log_end();
                let last_epoch = last_record_epoch(s);
                // The high watermark this follower knew may lie above the cut: records
                // appended again below it are not committed until the leader says so (a
                // follower's merges only rewrite what lies below it).
                if let Some(c) = self.cluster.as_mut() {
                    let pr = &mut c.parts[p as usize];
                    pr.hw = pr.hw.min(log_end);
                }
                (
                    reply(ReplReply::Position {
                        log_end,
                        last_epoch,
                    }),
                    Need::Durable,
                )
            }
            // Told once the records below the position are as durable as the fsync policy
            // promises: it may become the leader's acknowledgement.
            ReplOp::Position { partition: p } => match self.store(p) {
                Some(s) => (
                    reply(ReplReply::Position {
                        log_end: s.log_end(),
                        last_epoch: last_record_epoch(s),
                    }),
                    Need::Durable,
                ),
                None => (reply(ReplReply::Failed("no store".into())), Need::Now),
            },
            ReplOp::Snapshot {
                partition: p,
                leader_epoch,
            } => {
                if let Some(wrong) = self.wrong_role(
                    p,
                    Role::Leader {
                        epoch: leader_epoch,
                    },
                ) {
                    return (wrong, Need::Now);
                }
                let Some(s) = self.store(p) else {
                    return (reply(ReplReply::Failed("no store".into())), Need::Now);
                };
                match snapshot_links(s) {
                    Ok(r) => (reply(r), Need::Now),
                    Err(e) => (reply(ReplReply::Failed(e.to_string())), Need::Now),
                }
            }
            ReplOp::Staging {
                partition: p,
                leader_epoch,
                token,
            } => {
                if let Some(wrong) = self.wrong_role(
                    p,
                    Role::Follower {
                        epoch: leader_epoch,
                    },
                ) {
                    return (wrong, Need::Now);
                }
                if self.merge_busy[p as usize] {
                    // Its output would be written into the directory the copy replaces.
                    if let Some(s) = self.store_mut(p) {
                        s.abandon_merge();
                    }
                    return (
                        reply(ReplReply::Failed(
                            "a merge of the old log is finishing; the copy starts after it".into(),
                        )),
                        Need::Now,
                    );
                }
                let Some(s) = self.store(p) else {
                    return (reply(ReplReply::Failed("no store".into())), Need::Now);
                };
                // A directory of its own per copy: a copy still running (one given up for
                // taking too long) must not write into this one, and its install is refused.
                let dir = sibling(s.dir(), &staging_name(token));
                if let Some(old) = self.staged_copy[p as usize].take() {
                    let _ = std::fs::remove_dir_all(old);
                }
                // Empty: copy numbers start again with the process.
                let made = match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => std::fs::create_dir_all(&dir),
                };
                match made {
                    Ok(()) => (
                        reply(ReplReply::Snapshot {
                            dir: self.staged_copy[p as usize].insert(dir).clone(),
                            files: Vec::new(),
                            end: 0,
                            epochs: Vec::new(),
                        }),
                        Need::Now,
                    ),
                    Err(e) => (reply(ReplReply::Failed(e.to_string())), Need::Now),
                }
            }
            ReplOp::Install {
                partition: p,
                leader_epoch,
                staging,
            } => (self.install_snapshot(p, leader_epoch, &staging), Need::Now),
            ReplOp::DropCopy {
                partition: p,
                token,
            } => {
                let dir = self
                    .store(p)
                    .map(|s| sibling(s.dir(), &staging_name(token)));
                if dir.is_some() && self.staged_copy[p as usize] == dir {
                    let staging = self.staged_copy[p as usize].take().unwrap_or_default();
                    if let Err(e) = std::fs::remove_dir_all(&staging) {
                        warn!(
                            "partition {p}: cannot remove the failed copy {}: {e}",
                            staging.display()
                        );
                    }
                }
                (reply(ReplReply::Pending(0)), Need::Now)
            }
            ReplOp::Resign => match self.cluster.as_mut() {
                Some(c) => {
                    c.resigning = true;
                    (reply(ReplReply::Pending(c.waits.len())), Need::Now)
                }
                None => (reply(ReplReply::Pending(0)), Need::Now),
            },
            ReplOp::LogEnds {
                partitions,
                handover,
            } => {
                let ends = partitions
                    .iter()
                    .filter_map(|&p| {
                        let hw = self.cluster.as_ref().map_or(0, |c| c.parts[p as usize].hw);
                        self.store(p).map(|s| (p, s.log_end(), hw))
                    })
                    .collect();
                if !handover {
                    return (reply(ReplReply::Ends(ends)), Need::Now);
                }
                // Writes taken before this turn ends are answered before this reply (replies
                // go out in turn order once committed); later ones are refused.
                let until = Instant::now() + HANDOVER_HOLD;
                if let Some(c) = self.cluster.as_mut() {
                    for &p in &partitions {
                        if let Some(r) = c.parts.get_mut(p as usize)
                            && matches!(r.role, Role::Leader { .. })
                        {
                            r.handover_until = Some(until);
                        }
                    }
                }
                (reply(ReplReply::Ends(ends)), Need::Committed)
            }
        }
    }

    /// The partition and first key an op works on (cluster mode checks), if it has keys.
    pub fn op_key<'a>(&self, op: &'a Op) -> Option<(u32, std::borrow::Cow<'a, [u8]>)> {
        let key: std::borrow::Cow<'a, [u8]> = match op {
            Op::Keyed { partition, args } => {
                let s = args.slices();
                let k = crate::cmd::key_of(&s)?.to_vec();
                return Some((*partition, k.into()));
            }
            Op::MGet { keys } => keys.first()?.1.as_slice().into(),
            Op::Del { keys, .. } | Op::Exists { keys, .. } => keys.first()?.as_slice().into(),
            Op::MSet { pairs, .. } | Op::MSetNx { pairs } => pairs.keys().next()?.into(),
            Op::Move { src, .. } => src.as_slice().into(),
            Op::Combine(c) => c.all_keys().next()?.into(),
            _ => return None,
        };
        Some((self.topo.partition_of(&key), key))
    }
}

/// Whether every key of a multi-key op hashes to one slot. In cluster mode an op runs on one
/// partition's leader, checked by its first key; the front doors refuse requests that span
/// slots (`CROSSSLOT`), and a worker refuses such an op too rather than touch a partition
/// it may only follow.
pub fn op_in_one_slot(op: &Op) -> bool {
    fn same<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> bool {
        let Some(first) = keys.next() else {
            return true;
        };
        let slot = crate::slot::key_slot(first);
        keys.all(|k| crate::slot::key_slot(k) == slot)
    }
    match op {
        Op::MGet { keys } => same(keys.iter().map(|(_, k)| k.as_slice())),
        Op::Del { keys, .. } | Op::Exists { keys, .. } => same(keys.iter().map(|k| k.as_slice())),
        Op::MSet { pairs, .. } | Op::MSetNx { pairs } => same(pairs.keys()),
        Op::Move { src, dst, .. } => same([src.as_slice(), dst.as_slice()].into_iter()),
        Op::Combine(c) => same(c.all_keys()),
        _ => true,
    }
}

/// `<partition dir>.<what>`: beside the partition's directory, never inside it (a store
/// opening after a crash must not mistake it for part of the log).
/// What a staged copy's directory is called after its partition's (see `sibling`).
fn staging_name(token: u64) -> String {
    format!("incoming-{token:016x}")
}

fn sibling(dir: &std::path::Path, what: &str) -> std::path::PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}"));
    dir.with_file_name(name)
}

/// Removes what an interrupted copy left beside partition directory `dir` (a staged or
/// replaced log, a leader's hard-linked snapshot). Called with the partition's store open,
/// whose lock keeps any other server away from them.
pub fn remove_leftover_copies(dir: &std::path::Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(what) = n.strip_prefix(&prefix) else {
            continue;
        };
        if what.starts_with("incoming") || what == "aside" || what.starts_with("snapshot-") {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => info!(
                    "removed {} left by an interrupted log copy",
                    e.path().display()
                ),
                Err(err) => warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

/// Puts back a partition directory that a crash left renamed aside (`exchange_dirs` on a file
/// system without the exchange); called before the partition opens.
pub fn restore_aside(dir: &std::path::Path) {
    let aside = sibling(dir, "aside");
    if !dir.exists() && aside.is_dir() {
        match std::fs::rename(&aside, dir) {
            Ok(()) => warn!(
                "{}: put back the log an interrupted copy had set aside",
                dir.display()
            ),
            Err(e) => warn!("cannot put back {}: {e}", aside.display()),
        }
    }
}

/// Swaps directories `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`) and makes it
/// durable.
fn exchange_dirs(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other(format!("{} has a NUL byte", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let unsupported = matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        );
        if !unsupported {
            return Err(e);
        }
        // A file system without the exchange: two renames. A crash between them leaves the
        // log that was at `b` aside, and `restore_aside` puts it back at the next start.
        let aside = a.with_extension("aside");
        match std::fs::remove_dir_all(&aside) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(b, &aside)?;
        if let Err(e) = std::fs::rename(a, b) {
            std::fs::rename(&aside, b)?;
            return Err(e);
        }
        std::fs::rename(&aside, a)?;
    }
    let parent = b.parent().unwrap_or(std::path::Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

/// Hard links of a leader's closed segments and hints in a fresh directory (see
/// `ReplOp::Snapshot`); the copier removes it when done.
fn snapshot_links(s: &simplekv_engine::Store) -> std::io::Result<ReplReply> {
    let dir = sibling(s.dir(), &format!("snapshot-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    for f in s.closed_segment_files() {
        let Some(name) = f.file_name() else { continue };
        match std::fs::hard_link(&f, dir.join(name)) {
            Ok(()) => files.push(name.to_string_lossy().into_owned()),
            // A hint file may be replaced meanwhile; the follower rebuilds what is missing.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && f.extension().is_some_and(|x| x == "hint") => {}
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
    }
    let end = s.active_base();
    let epochs = s
        .epoch_cache()
        .entries()
        .iter()
        .filter(|e| e.start_lsn < end)
        .map(|e| (e.epoch, e.start_lsn))
        .collect();
    Ok(ReplReply::Snapshot {
        dir,
        files,
        end,
        epochs,
    })
}

impl Worker {
    /// Partition `p`'s store when this node follows it in `leader_epoch`; otherwise the reply.
    fn follower_store(
        &mut self,
        p: u32,
        leader_epoch: u32,
    ) -> Result<&mut simplekv_engine::Store, Payload> {
        if let Some(wrong) = self.wrong_role(
            p,
            Role::Follower {
                epoch: leader_epoch,
            },
        ) {
            return Err(wrong);
        }
        self.store_mut(p)
            .ok_or_else(|| Payload::Repl(Box::new(ReplReply::Failed("no store".into()))))
    }

    /// `None` when partition `p` is in `role` here; otherwise the WrongRole reply.
    fn wrong_role(&self, p: u32, role: Role) -> Option<Payload> {
        (self.cluster.as_ref().map(|c| c.role(p)) != Some(role))
            .then(|| Payload::Repl(Box::new(ReplReply::WrongRole { leader_epoch: 0 })))
    }

    /// Opens `dir` as partition `p`'s store, a replica's.
    fn open_replica(
        &mut self,
        p: u32,
        dir: &std::path::Path,
        opts: simplekv_engine::Options,
    ) -> Result<&mut simplekv_engine::Store, String> {
        let mut s = simplekv_engine::Store::open(dir, opts).map_err(|e| e.to_string())?;
        s.set_replica(true);
        // Keyspace notifications: the writes it takes as leader are recorded from the start.
        s.set_change_tap(self.notify.taps_on);
        Ok(self.stores[p as usize].insert(s))
    }

    /// Replaces a follower's log with a copied snapshot (see `ReplOp::Install`): an empty log,
    /// or one the leader cannot bring up to date record by record (`ReplOp::Read`). The
    /// staged directory gets the epoch history first and then takes the partition
    /// directory's place in one atomic exchange, so a crash leaves either log whole.
    fn install_snapshot(
        &mut self,
        p: u32,
        leader_epoch: u32,
        staging: &std::path::Path,
    ) -> Payload {
        let fail = |m: String| Payload::Repl(Box::new(ReplReply::Failed(m)));
        // A role change drops the staged copy, so a copy for an older role fails here too.
        if self.staged_copy[p as usize].as_deref() != Some(staging) {
            let _ = std::fs::remove_dir_all(staging);
            return fail(
                "a newer copy of the leader's log, or a role change, replaced this one".into(),
            );
        }
        if let Some(wrong) = self.wrong_role(
            p,
            Role::Follower {
                epoch: leader_epoch,
            },
        ) {
            return wrong;
        }
        if self.merge_busy[p as usize] {
            return fail("a merge of the old log is running; copying again after it".into());
        }
        self.staged_copy[p as usize] = None;
        // Journaled records must not be replayed onto the installed log.
        if let Err(e) = self.prepare_log_cut() {
            let _ = std::fs::remove_dir_all(staging);
            return fail(e);
        }
        let Some(opts) = self.store(p).map(|s| s.options().clone()) else {
            return fail("no store".into());
        };
        let Some(old) = self.stores.get_mut(p as usize).and_then(|s| s.take()) else {
            return fail("no store".into());
        };
        let dir = old.dir().to_path_buf();
        let replaced = old.log_end();
        drop(old);
        if let Some(c) = self.cluster.as_mut() {
            c.note_cut(p, 0);
        }
        if let Err(e) = exchange_dirs(staging, &dir) {
            log::error!("partition {p}: installing the copied segments failed: {e}");
            let _ = std::fs::remove_dir_all(staging);
            return match self.open_replica(p, &dir, opts) {
                Ok(_) => fail(format!("installing the copied segments: {e}")),
                Err(o) => fail(format!(
                    "installing the copied segments: {e}; reopening the old log: {o}"
                )),
            };
        }
        // The staging name now holds the replaced log, kept until the copy has opened.
        match self.open_replica(p, &dir, opts.clone()) {
            Ok(s) => {
                let (log_end, last_epoch) = (s.log_end(), last_record_epoch(s));
                if let Err(e) = std::fs::remove_dir_all(staging) {
                    warn!(
                        "partition {p}: cannot remove the replaced log {}: {e}",
                        staging.display()
                    );
                }
                if replaced > 0 {
                    warn!(
                        "partition {p}: replaced this replica's log (up to LSN {replaced}) with \
                         the leader's segments: the leader's merges dropped deletes it had not \
                         applied"
                    );
                }
                info!("partition {p}: installed a snapshot from the leader up to LSN {log_end}");
                // As after a cut: a high watermark above the copy's end is not this log's.
                if let Some(c) = self.cluster.as_mut() {
                    let pr = &mut c.parts[p as usize];
                    pr.hw = pr.hw.min(log_end);
                }
                Payload::Repl(Box::new(ReplReply::Position {
                    log_end,
                    last_epoch,
                }))
            }
            Err(e) => {
                log::error!(
                    "partition {p}: the installed copy does not open ({e}); going back to the \
                     old log"
                );
                let back = exchange_dirs(staging, &dir)
                    .map_err(|e| e.to_string())
                    .and_then(|()| self.open_replica(p, &dir, opts).map(drop));
                match back {
                    Ok(()) => {
                        let _ = std::fs::remove_dir_all(staging);
                    }
                    Err(e2) => log::error!("partition {p}: the old log does not open: {e2}"),
                }
                fail(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::MultiKind;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{
        ACK_TIMEOUT, ClusterState, FeedTx, ReplOp, Role, exchange_dirs, op_in_one_slot,
        remove_leftover_copies, sibling,
    };
    use crate::server::cluster::RouteTable;
    use crate::server::router::Op;

    #[test]
    fn multi_key_ops_are_in_one_slot_only_when_every_key_is() {
        let k = |s: &str| s.as_bytes().to_vec();
        // foo and {foo}bar share a slot (the hash tag); bar has another.
        let kind = MultiKind::Del;
        assert!(op_in_one_slot(&Op::Del {
            keys: vec![k("foo"), k("{foo}bar")],
            kind
        }));
        assert!(!op_in_one_slot(&Op::Del {
            keys: vec![k("foo"), k("bar")],
            kind
        }));
        assert!(!op_in_one_slot(&Op::MGet {
            keys: vec![(0, k("foo")), (1, k("{foo}x")), (2, k("bar"))]
        }));
        assert!(!op_in_one_slot(&Op::MSet {
            pairs: [(&b"foo"[..], &b"1"[..]), (b"bar", b"2")]
                .into_iter()
                .collect(),
            kind: MultiKind::MSet
        }));
        assert!(op_in_one_slot(&Op::MSetNx {
            pairs: [(&b"{t}a"[..], &b"1"[..]), (b"{t}b", b"2")]
                .into_iter()
                .collect()
        }));
        assert!(op_in_one_slot(&Op::Exists {
            keys: vec![],
            kind: MultiKind::Exists
        }));
    }

    #[test]
    fn replication_ops_naming_an_unknown_partition_are_found() {
        let read = ReplOp::Position { partition: 16 };
        assert_eq!(read.unknown_partition(16), Some(16));
        assert_eq!(read.unknown_partition(17), None);
        let ends = ReplOp::LogEnds {
            partitions: vec![0, 3, u32::MAX],
            handover: false,
        };
        assert_eq!(ends.unknown_partition(16), Some(u32::MAX));
        assert_eq!(ReplOp::Resign.unknown_partition(0), None);
    }

    fn state() -> ClusterState {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let feed = FeedTx::new(tx, Arc::new(|| {}));
        let mut c = ClusterState::new(
            Arc::new(RouteTable::default()),
            2,
            feed,
            2,
            simplekv_conf::Acks::All,
            Duration::from_secs(1),
        );
        c.parts[0].role = Role::Leader { epoch: 1 };
        c.parts[1].role = Role::Leader { epoch: 1 };
        c
    }

    #[test]
    fn a_new_follower_says_tryagain_until_the_new_leader_is_heard_then_moved() {
        use crate::server::cluster::{NodeAddr, PartRoute};
        let node = |id: u32| NodeAddr {
            id,
            resp: format!("127.0.0.1:{}", 7000 + id),
            grpc: format!("127.0.0.1:{}", 7100 + id),
        };
        let mut c = state();
        c.routes = Arc::new(RouteTable {
            me: 1,
            nodes: [(1, node(1)), (2, node(2))].into_iter().collect(),
            parts: vec![
                PartRoute {
                    leader: Some(2),
                    leader_epoch: 2,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                    state_version: 0,
                };
                2
            ],
            ..RouteTable::default()
        });
        let t0 = Instant::now();
        c.parts[0].role = Role::Follower { epoch: 2 };
        c.parts[0].role_since = t0;
        let r = c.refusal(0, b"k", t0).expect("refused");
        assert!(r.starts_with("TRYAGAIN"), "{r}");
        // The new leader sent records: it leads, send the client there.
        c.parts[0].heard_leader = true;
        let r = c.refusal(0, b"k", t0).expect("refused");
        assert!(
            r.starts_with("MOVED ") && r.ends_with(" 127.0.0.1:7002"),
            "{r}"
        );
        // Not heard from for longer than the grace (a follower cut from its leader): the
        // client is sent to the leader anyway.
        c.parts[0].heard_leader = false;
        let r = c
            .refusal(0, b"k", t0 + super::LEADER_CHANGE_GRACE)
            .expect("refused");
        assert!(r.starts_with("MOVED "), "{r}");
    }

    #[test]
    fn a_turn_is_committed_when_every_partition_it_wrote_is_below_the_hw() {
        let mut c = state();
        let t0 = Instant::now();
        c.waits
            .push_back((5, vec![(0, 10, false), (1, 4, false)], t0));
        c.parts[0].hw = 10;
        assert!(c.advance(5, t0).is_empty());
        assert_eq!(c.repl_committed, 0, "partition 1 is not there yet");
        c.parts[1].hw = 4;
        assert!(c.advance(5, t0).is_empty());
        assert_eq!(c.repl_committed, 5);
    }

    #[test]
    fn a_turn_covered_while_the_isr_is_below_min_insync_replicas_is_not_acknowledged() {
        let mut c = state();
        let t0 = Instant::now();
        // min_insync_replicas is 2: the HW passed the turn's records with the leader alone
        // counted (its follower dropped out after the write was taken).
        c.waits.push_back((5, vec![(0, 10, false)], t0));
        c.parts[0].hw = 10;
        c.parts[0].hw_isr = 1;
        let failed = c.advance(5, t0);
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].1.contains("min_insync_replicas"),
            "{}",
            failed[0].1
        );
        assert_eq!(c.repl_committed, 5, "decided: later turns are not held up");
        // Counted over two replicas, it is acknowledged.
        c.waits.push_back((6, vec![(0, 12, false)], t0));
        c.parts[0].hw = 12;
        c.parts[0].hw_isr = 2;
        assert!(c.advance(6, t0).is_empty());
        assert_eq!(c.repl_committed, 6);
        // Not covered yet: it waits, whatever the count.
        c.waits.push_back((7, vec![(0, 14, false)], t0));
        c.parts[0].hw_isr = 1;
        assert!(c.advance(7, t0).is_empty());
        assert_eq!(c.repl_committed, 6);
    }

    #[test]
    fn a_leadership_moved_away_still_commits_through_the_new_leaders_hw() {
        let mut c = state();
        let t0 = Instant::now();
        c.waits.push_back((5, vec![(0, 10, false)], t0));
        // A preferred-leader election: this node now follows; nothing is decided yet.
        c.parts[0].role = Role::Follower { epoch: 2 };
        assert!(c.advance(5, t0).is_empty());
        assert_eq!(c.repl_committed, 0);
        // The new leader's high watermark, learnt with its records, passes the turn.
        c.parts[0].hw = 12;
        assert!(c.advance(5, t0).is_empty());
        assert_eq!(c.repl_committed, 5);
        // A turn the new leader's high watermark does not reach in FOLLOWER_WAIT fails (it
        // holds up every later reply of the worker).
        c.parts[0].role_since = t0;
        c.waits.push_back((6, vec![(0, 20, false)], t0));
        assert!(c.advance(6, t0 + super::FOLLOWER_WAIT / 2).is_empty());
        let failed = c.advance(6, t0 + super::FOLLOWER_WAIT);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].1.contains("stopped leading"), "{}", failed[0].1);
    }

    #[test]
    fn a_cut_during_the_turn_that_wrote_is_remembered_for_its_wait() {
        let mut c = state();
        c.turn_parts = vec![0];
        c.note_cut(1, 0);
        assert!(
            c.turn_cuts.is_empty(),
            "partition 1 wrote nothing this turn"
        );
        c.note_cut(0, 3);
        assert_eq!(c.turn_cuts, vec![0]);
    }

    #[test]
    fn a_cut_below_a_waiting_turn_fails_it_and_a_cut_above_does_not() {
        let mut c = state();
        let t0 = Instant::now();
        c.waits.push_back((5, vec![(0, 10, false)], t0));
        c.waits.push_back((6, vec![(1, 20, false)], t0));
        c.parts[0].role = Role::Follower { epoch: 2 };
        c.parts[1].role = Role::Follower { epoch: 2 };
        // The new leader of partition 0 lacked records 8..10; partition 1 was cut above.
        c.note_cut(0, 8);
        c.note_cut(1, 20);
        let failed = c.advance(6, t0);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 5);
        assert!(failed[0].1.contains("may or may not"), "{}", failed[0].1);
        assert_eq!(c.repl_committed, 5);
        // Even with a high watermark past its end afterwards, the cut turn stays failed; the
        // other one commits.
        c.parts[1].hw = 20;
        assert!(c.advance(6, t0).is_empty());
        assert_eq!(c.repl_committed, 6);
    }

    #[test]
    fn a_node_that_stops_replicating_fails_at_once_and_a_silent_leader_in_time() {
        let mut c = state();
        let t0 = Instant::now();
        c.waits.push_back((5, vec![(0, 10, false)], t0));
        c.waits.push_back((6, vec![(1, 10, false)], t0));
        c.parts[0].role = Role::Idle;
        let failed = c.advance(6, t0);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].1.contains("stopped leading"), "{}", failed[0].1);
        assert!(c.advance(6, t0 + ACK_TIMEOUT / 2).is_empty());
        let failed = c.advance(6, t0 + ACK_TIMEOUT);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].1.contains("in time"), "{}", failed[0].1);
        assert_eq!(c.repl_committed, 6);
    }

    #[test]
    fn leftovers_of_interrupted_copies_go_and_nothing_else_does() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("00003");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"log").unwrap();
        let keep = [
            root.path().join("00004"),
            root.path().join("00004.incoming"),
        ];
        let gone = [
            sibling(&dir, "incoming"),
            sibling(&dir, "aside"),
            sibling(&dir, "snapshot-00ff"),
        ];
        for d in keep.iter().chain(&gone) {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        remove_leftover_copies(&dir);
        assert!(dir.join("00000000000000000000.log").exists());
        assert!(keep.iter().all(|d| d.exists()), "another partition's files");
        assert!(gone.iter().all(|d| !d.exists()));
    }

    #[test]
    fn exchanging_directories_swaps_their_contents() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("new"), b"").unwrap();
        std::fs::write(b.join("old"), b"").unwrap();
        exchange_dirs(&a, &b).unwrap();
        assert!(b.join("new").exists() && a.join("old").exists());
        assert!(!b.join("old").exists() && !a.join("new").exists());
    }
}

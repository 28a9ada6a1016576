//! The node's control thread: it owns the ZooKeeper session, keeps the node's view of the
//! cluster current, acts as controller while it holds `/controller`, and serves the node's
//! [`ControlRequest`]s.
//!
//! ZooKeeper callbacks (watches and the session state listener) only post messages to it. The
//! zookeeper crate's watches fire once and are lost on a reconnection (it does not re-send
//! them), so every watched item carries an "armed" flag: an event or a reconnection clears it
//! and the item is re-read with a new watch. A periodic resync (without new watches) catches
//! whatever a lost event would have hidden.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, error, info, warn};
use simplekv_net::server::replica::HANDOVER_HOLD;
use zookeeper::{WatchedEvent, ZkError, ZkState};

use super::api::{ClusterView, ControlRequest, LogEndProbe, PartitionView, ViewSink};
use super::controller::{self, Nodes};
use super::election::{self, Outcome};
use super::registry;
use crate::zk::grant::{self, Grants};
use crate::zk::layout::{BrokerInfo, ClusterMeta, ControllerInfo, PartitionState, path};
use crate::zk::{Session, ZkFailure, ZkResult};

/// How often the thread wakes up without a message.
const TICK: Duration = Duration::from_millis(200);
/// How often everything is re-read even without a watch event.
const RESYNC: Duration = Duration::from_secs(3);
/// How often servers that could not be asked which session timeout they grant are asked
/// again, and how long each may take.
const GRANT_RETRY: Duration = Duration::from_secs(10);
const GRANT_WAIT: Duration = Duration::from_secs(2);
/// Least time between two attempts at a new session.
const RETRY_SESSION: Duration = Duration::from_secs(1);
/// How long a starting node keeps trying to register when ZooKeeper may only be out of
/// reach for a moment (see `Ctl::start`); at least twice the session timeout, which a
/// previous run's session holding the node id may last.
const START_PATIENCE: Duration = Duration::from_secs(20);
/// Conditional writes retried on `BadVersion` before giving up until the next round.
const CAS_TRIES: usize = 8;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// ZooKeeper `hosts/chroot` of this cluster, e.g. `127.0.0.1:2181/simplekv/default`.
    pub connect: String,
    pub me: BrokerInfo,
    pub session_timeout: Duration,
    pub unclean_leader_election: bool,
    pub leader_imbalance_check: Duration,
    /// 1.0 never rebalances automatically.
    pub leader_imbalance_ratio: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Zk(#[from] ZkFailure),
    #[error(
        "no cluster has been created at {connect} after {secs} s: run `simplekv cluster create` once the nodes are up"
    )]
    NoCluster { connect: String, secs: u64 },
    #[error("cannot start the control thread: {0}")]
    Spawn(std::io::Error),
    #[error("the control thread ended during startup")]
    Died,
}

enum Msg {
    Req(ControlRequest),
    Watch {
        generation: u64,
        what: Watched,
    },
    Conn {
        generation: u64,
        state: ZkState,
    },
    /// The answers of ZooKeeper servers not reached when the session opened (`zk::grant`).
    Grants {
        generation: u64,
        grants: Grants,
    },
}

#[derive(Debug, Clone, Copy)]
enum Watched {
    Brokers,
    Controller,
    Partition(u32),
    Shutdown,
    Preferred,
    CannotLead,
}

/// The node's handle on its control thread.
pub struct ControlHandle {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl ControlHandle {
    /// Posts a request; false if the thread is gone.
    pub fn request(&self, r: ControlRequest) -> bool {
        self.tx.send(Msg::Req(r)).is_ok()
    }

    /// Closes the session (ephemeral znodes vanish at once) and waits for the thread to end.
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Req(ControlRequest::Stop));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        // Watch closures hold senders too, so the channel never closes by itself.
        if self.thread.is_some() {
            let _ = self.tx.send(Msg::Req(ControlRequest::Stop));
        }
    }
}

/// Starts the control thread: connects, registers the broker, waits for `/meta` (at most
/// `wait_meta`), reads the cluster, publishes a first view through `sink` and returns it.
pub fn spawn(
    cfg: ControlConfig,
    probe: LogEndProbe,
    sink: ViewSink,
    wait_meta: Duration,
) -> Result<(ControlHandle, ClusterView), ControlError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let tx2 = tx.clone();
    let thread = std::thread::Builder::new()
        .name("skv-control".into())
        .spawn(
            move || match Ctl::start(cfg, probe, sink, tx2, &rx, wait_meta) {
                Ok(ctl) => {
                    let _ = ready_tx.send(Ok(ctl.view()));
                    ctl.run(&rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            },
        )
        .map_err(ControlError::Spawn)?;
    match ready_rx.recv() {
        Ok(Ok(view)) => Ok((
            ControlHandle {
                tx,
                thread: Some(thread),
            },
            view,
        )),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(ControlError::Died)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Up,
    /// Disconnected; the session may still be alive.
    Down,
    /// No session: a new one is needed.
    Lost,
}

struct PendingShutdown {
    deadline: Instant,
    done: Box<dyn FnOnce(bool) + Send>,
}

/// Which watched items currently have a watch set.
#[derive(Default)]
struct Armed {
    brokers: bool,
    controller: bool,
    shutdown: bool,
    preferred: bool,
    cannot_lead: bool,
    parts: Vec<bool>,
}

struct Ctl {
    cfg: ControlConfig,
    probe: LogEndProbe,
    sink: ViewSink,
    tx: Sender<Msg>,
    /// The thread's own channel, read while a controller round waits on replicas (see
    /// `ask_brokers`); what that wait does not handle is `deferred` to the main loop.
    inbox: Receiver<Msg>,
    deferred: VecDeque<Msg>,
    session: Option<Session>,
    /// Bumped with every new session, so that callbacks of an old one are ignored.
    generation: u64,
    conn: Conn,
    /// The client library's last word on this session's connection was "connected": only
    /// then can a check of the session answer without waiting for a reconnection (a request
    /// made while it reconnects waits up to its 2 s connect timeout, with this thread stuck).
    zk_connected: bool,
    /// Down because ZooKeeper stopped answering this session's requests (not because the
    /// client library reported a disconnection).
    silenced: bool,
    last_session_try: Option<Instant>,
    /// Servers of the connect string that were not asked which session timeout they grant
    /// (down when the session opened), and when they were last tried; a thread asking them
    /// is out while `asking_grants`.
    grant_unreached: Vec<String>,
    grant_asked: Instant,
    asking_grants: bool,
    broker_epoch: i64,
    meta: ClusterMeta,
    brokers: BTreeMap<u32, BrokerInfo>,
    /// Each live broker's epoch (the creation zxid of its registration).
    broker_epochs: BTreeMap<u32, i64>,
    /// `None` until a state has been read and decoded.
    parts: Vec<Option<PartitionView>>,
    controller: Option<ControllerInfo>,
    shutting: BTreeSet<u32>,
    /// Leaderships nodes were given and could not take up, as read from
    /// `/admin/cannot_lead`: (node, partition, leader epoch).
    cannot_lead: BTreeSet<(u32, u32, u32)>,
    /// This node's own (partition -> leader epoch), kept until it writes the partition again
    /// (`ControlRequest::LeadingAgain`), and the ones whose znode exists in the current
    /// session.
    cannot_lead_mine: BTreeMap<u32, u32>,
    cannot_lead_znodes: BTreeSet<(u32, u32)>,
    preferred_asked: bool,
    armed: Armed,
    /// The controller epoch while this node holds `/controller` in its current session.
    my_epoch: Option<u64>,
    /// This node asked for a controlled shutdown (its znode is re-created in a new session).
    leaving: bool,
    leaving_znode: bool,
    pending_shutdown: Option<PendingShutdown>,
    unclean_elections: u64,
    last_resync: Instant,
    /// Last full re-read that succeeded: a session that answers nothing for longer than its
    /// timeout is treated as lost even if the client library never said so.
    last_good_resync: Instant,
    last_imbalance_check: Instant,
    last_tick: Instant,
    published: Option<ClusterView>,
}

fn is_code(e: &ZkFailure, code: ZkError) -> bool {
    e.code() == Some(code)
}

impl Ctl {
    fn start(
        cfg: ControlConfig,
        probe: LogEndProbe,
        sink: ViewSink,
        tx: Sender<Msg>,
        rx: &Receiver<Msg>,
        wait_meta: Duration,
    ) -> Result<Ctl, ControlError> {
        let now = Instant::now();
        let mut ctl = Ctl {
            cfg,
            probe,
            sink,
            tx,
            inbox: rx.clone(),
            deferred: VecDeque::new(),
            session: None,
            generation: 0,
            conn: Conn::Lost,
            zk_connected: false,
            silenced: false,
            last_session_try: None,
            grant_unreached: Vec::new(),
            grant_asked: now,
            asking_grants: false,
            broker_epoch: 0,
            meta: ClusterMeta {
                partitions: 0,
                replication_factor: 0,
                cluster_id: None,
            },
            brokers: BTreeMap::new(),
            broker_epochs: BTreeMap::new(),
            parts: Vec::new(),
            controller: None,
            shutting: BTreeSet::new(),
            cannot_lead: BTreeSet::new(),
            cannot_lead_mine: BTreeMap::new(),
            cannot_lead_znodes: BTreeSet::new(),
            preferred_asked: false,
            armed: Armed::default(),
            my_epoch: None,
            leaving: false,
            leaving_znode: false,
            pending_shutdown: None,
            unclean_elections: 0,
            last_resync: now,
            last_good_resync: now,
            last_imbalance_check: now,
            last_tick: now,
            published: None,
        };
        // A failure that may pass (no answer, a lost connection or session, a connection
        // that timed out: the network or ZooKeeper having a bad moment as the node starts)
        // is retried for START_PATIENCE, as a broker waits for ZooKeeper at start (so is a
        // node id still held by another session: see `ZkFailure::transient`); a refused
        // connection or an unknown host fails at once.
        let pause = Duration::from_millis(500);
        // A crashed node restarted at once finds its id held by its previous session until
        // that session expires: with `session_timeout_ms` over 10 s, 20 s of patience gave up
        // before it did (found by a fault-injection run with 30 s sessions).
        let patience = START_PATIENCE.max(ctl.cfg.session_timeout * 2);
        loop {
            // Each try within what is left of the patience (a long session timeout would
            // otherwise make one silent try outlast it).
            let left = patience.saturating_sub(now.elapsed());
            let wait = (ctl.cfg.session_timeout * 3).min(left.max(Duration::from_secs(1)));
            match ctl.open_session(wait) {
                Ok(()) => break,
                Err(e) if e.transient() && now.elapsed() + pause < patience => {
                    warn!(
                        "control: cannot register yet ({e}); trying again for up to {} s more",
                        patience.saturating_sub(now.elapsed()).as_secs().max(1)
                    );
                    std::thread::sleep(pause);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let deadline = now.checked_add(wait_meta);
        let meta = loop {
            ctl.check_answering();
            if ctl.conn == Conn::Lost {
                // A failure to reconnect while waiting is retried; only the first one is fatal.
                if let Err(e) = ctl.open_session(ctl.cfg.session_timeout * 3) {
                    warn!("control: no ZooKeeper session yet: {e}");
                }
            }
            if ctl.conn == Conn::Up
                && let Some(s) = &ctl.session
            {
                match s.get(path::META) {
                    Ok(Some((raw, _))) => {
                        break ClusterMeta::decode(&raw).map_err(|e| ZkFailure::Decode {
                            path: path::META.into(),
                            reason: e.to_string(),
                        })?;
                    }
                    Ok(None) => {}
                    Err(e) if e.session_lost() => ctl.lose_session(&e.to_string()),
                    Err(e) => debug!("control: waiting for {}: {e}", path::META),
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ControlError::NoCluster {
                    connect: ctl.cfg.connect.clone(),
                    secs: wait_meta.as_secs(),
                });
            }
            match rx.recv_timeout(TICK) {
                Ok(Msg::Conn { generation, state }) => ctl.on_conn(generation, state),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(ControlError::Died),
            }
        };
        info!(
            "control: node {} joined the cluster at {} ({} partitions, replication factor {})",
            ctl.cfg.me.id, ctl.cfg.connect, meta.partitions, meta.replication_factor
        );
        let n = meta.partitions as usize;
        ctl.meta = meta;
        ctl.parts = vec![None; n];
        ctl.armed.parts = vec![false; n];
        ctl.refresh(true)?;
        ctl.publish();
        Ok(ctl)
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            // Messages that came while a controller round waited go first, in their order.
            let mut stop = false;
            let deferred = !self.deferred.is_empty();
            while !stop && let Some(m) = self.deferred.pop_front() {
                stop = !self.handle(m);
            }
            if stop {
                break;
            }
            let wait = match deferred {
                true => Duration::ZERO,
                false => (self.last_tick + TICK).saturating_duration_since(Instant::now()),
            };
            stop = match rx.recv_timeout(wait) {
                Ok(m) => !self.handle(m),
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            while !stop && let Ok(m) = rx.try_recv() {
                stop = !self.handle(m);
            }
            if stop {
                break;
            }
            let tick = self.last_tick.elapsed() >= TICK;
            if tick {
                self.last_tick = Instant::now();
            }
            self.work(tick);
        }
        self.finish();
    }

    fn finish(mut self) {
        if let Some(p) = self.pending_shutdown.take() {
            (p.done)(false);
        }
        if let Some(s) = self.session.take() {
            s.close();
        }
        info!("control: node {} left ZooKeeper", self.cfg.me.id);
    }

    /// Handles one message; false on `Stop`.
    fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Conn { generation, state } => self.on_conn(generation, state),
            Msg::Grants { generation, grants } => self.on_grants(generation, grants),
            Msg::Watch { generation, what } => {
                if generation == self.generation {
                    debug!("control: watch fired on {what:?}");
                    match what {
                        Watched::Brokers => self.armed.brokers = false,
                        Watched::Controller => self.armed.controller = false,
                        Watched::Shutdown => self.armed.shutdown = false,
                        Watched::Preferred => self.armed.preferred = false,
                        Watched::CannotLead => self.armed.cannot_lead = false,
                        Watched::Partition(p) => {
                            if let Some(a) = self.armed.parts.get_mut(p as usize) {
                                *a = false;
                            }
                        }
                    }
                }
            }
            Msg::Req(ControlRequest::Stop) => return false,
            Msg::Req(ControlRequest::ChangeIsr {
                partition,
                leader_epoch,
                isr,
                storage,
                done,
            }) => {
                let r = self.change_isr(partition, leader_epoch, isr, &storage);
                if let Err(e) = &r {
                    info!("control: ISR change of partition {partition} refused: {e}");
                }
                done(r);
            }
            Msg::Req(ControlRequest::CannotLead {
                partition,
                leader_epoch,
                reason,
            }) => self.on_cannot_lead(partition, leader_epoch, &reason),
            Msg::Req(ControlRequest::LeadingAgain {
                partition,
                leader_epoch,
            }) => {
                // A newer failure than the one marked (whose report the control thread
                // ignored: the state had moved on) is over too.
                if self
                    .cannot_lead_mine
                    .get(&partition)
                    .is_some_and(|&e| e <= leader_epoch)
                {
                    info!(
                        "control: node {} writes partition {partition} again (it could not lead it in leader epoch {leader_epoch}): it may lead it again",
                        self.cfg.me.id
                    );
                    self.cannot_lead_mine.remove(&partition);
                    if self.conn == Conn::Up {
                        self.announce_cannot_lead();
                    }
                }
            }
            Msg::Req(ControlRequest::ControlledShutdown { deadline, done }) => {
                info!(
                    "control: node {} starts a controlled shutdown (at most {} ms left)",
                    self.cfg.me.id,
                    deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                );
                if let Some(old) = self.pending_shutdown.take() {
                    (old.done)(false);
                }
                self.leaving = true;
                self.shutting.insert(self.cfg.me.id);
                self.pending_shutdown = Some(PendingShutdown { deadline, done });
                self.announce_leaving();
                self.check_shutdown();
            }
        }
        true
    }

    fn on_conn(&mut self, generation: u64, state: ZkState) {
        if generation != self.generation {
            return;
        }
        self.zk_connected = matches!(state, ZkState::Connected | ZkState::ConnectedReadOnly);
        match state {
            ZkState::Connected | ZkState::ConnectedReadOnly => {
                if self.conn == Conn::Down {
                    self.reconnected();
                }
            }
            ZkState::Closed | ZkState::AuthFailed => {
                if self.conn != Conn::Lost {
                    self.lose_session(&format!("session state {state:?}"));
                }
            }
            // Connecting, and NotConnected (what the crate reports on an expiry too: the
            // reconnection then tells which one it was).
            _ => {
                if self.conn == Conn::Up {
                    warn!(
                        "control: node {} lost its ZooKeeper connection; it leads nothing until the session is back",
                        self.cfg.me.id
                    );
                    self.conn = Conn::Down;
                    self.publish();
                }
            }
        }
    }

    /// The connection is back: the session survived only if our broker znode is still the one
    /// it created (an expired session's ephemerals are gone, and the crate may have opened a
    /// fresh session silently).
    fn reconnected(&mut self) {
        let Some(s) = &self.session else { return };
        match s.get(&path::broker(self.cfg.me.id)) {
            Ok(Some((_, stat))) if stat.czxid == self.broker_epoch => {
                info!(
                    "control: node {} reconnected to ZooKeeper in the same session",
                    self.cfg.me.id
                );
                self.conn = Conn::Up;
                self.last_good_resync = Instant::now();
                // The server dropped this connection's watches and the crate does not set
                // them again.
                self.disarm_all();
                match self.refresh(true) {
                    Ok(()) => self.publish(),
                    Err(e) => self.zk_error("re-reading after reconnection", e),
                }
            }
            Ok(_) => self.lose_session("the broker znode of this session is gone"),
            Err(e) if e.session_lost() => self.lose_session(&e.to_string()),
            // Still flapping: the listener will tell again.
            Err(e) => debug!("control: checking the session after reconnection: {e}"),
        }
    }

    fn disarm_all(&mut self) {
        let n = self.armed.parts.len();
        self.armed = Armed {
            parts: vec![false; n],
            ..Armed::default()
        };
    }

    fn lose_session(&mut self, why: &str) {
        warn!(
            "control: node {}: ZooKeeper session lost ({why}); fenced until a new session is registered",
            self.cfg.me.id
        );
        if self.my_epoch.take().is_some() {
            warn!(
                "control: node {} is no longer controller (its session ended)",
                self.cfg.me.id
            );
        }
        self.conn = Conn::Lost;
        self.zk_connected = false;
        self.silenced = false;
        self.leaving_znode = false;
        self.generation += 1;
        if let Some(s) = self.session.take() {
            s.close();
        }
        if !self.parts.is_empty() {
            self.publish();
        }
    }

    /// Opens a new session and registers the broker in it (a new broker epoch).
    /// `wait`: how long ZooKeeper may take to establish the session.
    fn open_session(&mut self, wait: Duration) -> ZkResult<()> {
        self.last_session_try = Some(Instant::now());
        self.generation += 1;
        let generation = self.generation;
        let t = self.cfg.session_timeout;
        // During a controlled shutdown, no longer than it has left.
        let wait = match &self.pending_shutdown {
            Some(p) => p
                .deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), wait),
            None => wait,
        };
        let s = Session::connect_with(&self.cfg.connect, t, wait)?;
        // The servers' clamp on the session timeout (see `zk::grant`): a shorter grant than
        // asked would let ZooKeeper expire the session before this node stops leading.
        let grants = grant::ask_all(&grant::servers(&self.cfg.connect), t, wait);
        self.grant_unreached = grants.unreached;
        self.grant_asked = Instant::now();
        match grants.smallest {
            Some(g) if g.timeout < t => {
                s.close();
                return Err(ZkFailure::TimeoutCut {
                    server: g.server,
                    asked: t,
                    granted: g.timeout,
                });
            }
            Some(g) if g.timeout > t => warn!(
                "control: ZooKeeper at {} grants sessions of {} ms, more than cluster.session_timeout_ms = {} (its minSessionTimeout, twice its tickTime by default): a node that is lost is replaced after {} ms",
                g.server,
                g.timeout.as_millis(),
                t.as_millis(),
                g.timeout.as_millis()
            ),
            Some(_) => {}
            None => warn!(
                "control: could not ask ZooKeeper at {} which session timeout it grants",
                self.cfg.connect
            ),
        }
        let tx = self.tx.clone();
        s.raw().add_listener(move |state: ZkState| {
            let _ = tx.send(Msg::Conn { generation, state });
        });
        // A registration left by this node's previous session is waited out, within `wait`.
        let register_wait = (t + Duration::from_secs(1)).min(wait);
        let epoch = match registry::register(&s, &self.cfg.me, register_wait) {
            Ok(e) => e,
            Err(e) => {
                s.close();
                return Err(e);
            }
        };
        info!(
            "control: node {} registered at {} (broker epoch {epoch})",
            self.cfg.me.id, self.cfg.connect
        );
        self.session = Some(s);
        self.broker_epoch = epoch;
        self.conn = Conn::Up;
        // `open` returned only once the session was connected.
        self.zk_connected = true;
        self.last_good_resync = Instant::now();
        self.my_epoch = None;
        self.leaving_znode = false;
        self.cannot_lead_znodes.clear();
        self.disarm_all();
        Ok(())
    }

    /// Asks the servers that did not answer when the session opened which session timeout
    /// they grant, every `GRANT_RETRY` on a thread of its own (`Msg::Grants`): the client
    /// library may reconnect to one of them, which then clamps the session's timeout by its
    /// own bounds.
    fn ask_unreached_grants(&mut self) {
        if self.grant_unreached.is_empty()
            || self.asking_grants
            || self.conn != Conn::Up
            || self.grant_asked.elapsed() < GRANT_RETRY
        {
            return;
        }
        self.grant_asked = Instant::now();
        let servers = self.grant_unreached.clone();
        let (tx, generation, t) = (self.tx.clone(), self.generation, self.cfg.session_timeout);
        let spawned = std::thread::Builder::new()
            .name("skv-zk-grant".into())
            .spawn(move || {
                let grants = grant::ask_all(&servers, t, GRANT_WAIT);
                let _ = tx.send(Msg::Grants { generation, grants });
            });
        self.asking_grants = spawned.is_ok();
    }

    fn on_grants(&mut self, generation: u64, grants: Grants) {
        self.asking_grants = false;
        if generation != self.generation {
            return;
        }
        self.grant_unreached = grants.unreached;
        let t = self.cfg.session_timeout;
        if let Some(g) = grants.smallest.filter(|g| g.timeout < t) {
            let e = ZkFailure::TimeoutCut {
                server: g.server,
                asked: t,
                granted: g.timeout,
            };
            error!("control: node {}: {e}", self.cfg.me.id);
            self.lose_session(&e.to_string());
        }
    }

    fn zk_error(&mut self, what: &str, e: ZkFailure) {
        if e.session_lost() {
            self.lose_session(&e.to_string());
        } else {
            debug!("control: {what}: {e}");
        }
    }

    /// ZooKeeper stopped answering this session's requests (see `Session::call`): the
    /// client library never notices a silent connection, so this is where the node finds out.
    /// It leads nothing until ZooKeeper answers again (then the session is checked as after
    /// a reconnection), and gives the session up once it has been silent for longer than the
    /// session timeout (ZooKeeper has expired it by then).
    fn check_answering(&mut self) {
        let Some((answering, silent)) = self
            .session
            .as_ref()
            .map(|s| (s.answering(), s.silent_for()))
        else {
            return;
        };
        if !answering {
            if self.conn == Conn::Up {
                warn!(
                    "control: node {}: ZooKeeper has not answered for {} ms; it leads nothing until ZooKeeper answers",
                    self.cfg.me.id,
                    silent.as_millis()
                );
                self.conn = Conn::Down;
                self.silenced = true;
                self.publish();
            }
            if silent > self.cfg.session_timeout {
                self.lose_session("ZooKeeper has not answered for longer than the session timeout");
            }
        } else if self.conn == Conn::Down && self.silenced && self.zk_connected {
            self.silenced = false;
            self.reconnected();
        }
    }

    /// Makes sure ZooKeeper has answered within a sixth of the session timeout, reading
    /// `/meta` if nothing else did: a request it does not answer within half the timeout
    /// fences the node (`check_answering`), so a node cut off from ZooKeeper stops leading
    /// within about two thirds of the session timeout, before ZooKeeper can expire its
    /// session and another node be elected.
    fn probe(&mut self) {
        let Some(s) = &self.session else { return };
        if self.conn != Conn::Up || s.silent_for() < self.cfg.session_timeout / 6 {
            return;
        }
        if let Err(e) = s.get(path::META) {
            self.zk_error("checking that ZooKeeper answers", e);
        }
    }

    /// Everything that is not a direct answer to a message.
    fn work(&mut self, tick: bool) {
        // A probe on a session already stuck fails at once; the check after it sees either.
        self.probe();
        self.check_answering();
        // A node whose controlled shutdown has ended (done or timed out) is about to stop:
        // it registers no more.
        let stopping = self.leaving && self.pending_shutdown.is_none();
        if self.conn == Conn::Lost
            && !stopping
            && self
                .last_session_try
                .is_none_or(|t| t.elapsed() >= RETRY_SESSION)
        {
            // One session timeout at most (the thread reads no message meanwhile); at start,
            // with the cluster starting up around it, three.
            match self.open_session(self.cfg.session_timeout) {
                Ok(()) => {
                    if let Err(e) = self.refresh(true) {
                        self.zk_error("re-reading in the new session", e);
                    }
                    self.announce_leaving();
                }
                Err(e) => warn!("control: cannot open a new ZooKeeper session: {e}"),
            }
        }
        if self.conn == Conn::Down && self.zk_connected && self.last_resync.elapsed() >= RESYNC {
            // The listener said "connected" but the check then failed (the connection flapped
            // or the server was busy): check again. While it is not connected, the next
            // "connected" runs the check.
            self.last_resync = Instant::now();
            self.reconnected();
        }
        if self.conn == Conn::Up {
            let full = self.last_resync.elapsed() >= RESYNC;
            match self.refresh(full) {
                Ok(()) if full => self.last_good_resync = Instant::now(),
                Ok(()) => {}
                Err(e) => self.zk_error("refreshing the cluster view", e),
            }
            if self.conn == Conn::Up
                && self.last_good_resync.elapsed() > self.cfg.session_timeout + RESYNC * 2
            {
                self.lose_session("ZooKeeper has not answered for longer than the session timeout");
            }
        }
        if self.conn == Conn::Up {
            self.announce_cannot_lead();
        }
        if self.conn == Conn::Up {
            self.controller_duties();
        }
        self.ask_unreached_grants();
        if tick {
            self.check_shutdown();
        }
        self.check_answering();
        self.publish();
    }

    fn watcher(&self, what: Watched) -> impl Fn(WatchedEvent) + Send + Clone + 'static {
        let tx = self.tx.clone();
        let generation = self.generation;
        move |_: WatchedEvent| {
            let _ = tx.send(Msg::Watch { generation, what });
        }
    }

    fn session(&self) -> ZkResult<&Session> {
        self.session.as_ref().ok_or_else(|| ZkFailure::Op {
            op: "use",
            path: "/".into(),
            source: ZkError::SessionExpired,
        })
    }

    /// Re-reads what is not watched any more (setting a new watch), or everything if `full`.
    fn refresh(&mut self, full: bool) -> ZkResult<()> {
        if full {
            self.last_resync = Instant::now();
            self.check_registration()?;
        }
        if full || !self.armed.brokers {
            self.read_brokers()?;
        }
        if full || !self.armed.controller {
            self.read_controller()?;
        }
        if full || !self.armed.shutdown {
            self.read_shutdown()?;
        }
        if full || !self.armed.preferred {
            self.read_preferred()?;
        }
        if full || !self.armed.cannot_lead {
            self.read_cannot_lead()?;
        }
        for p in 0..self.parts.len() {
            if full || !self.armed.parts[p] {
                self.read_partition(p as u32)?;
            }
        }
        Ok(())
    }

    /// Our broker znode must be the one this session created: anything else means the session
    /// is not the one we registered in.
    fn check_registration(&mut self) -> ZkResult<()> {
        let s = self.session()?;
        match s.get(&path::broker(self.cfg.me.id))? {
            Some((_, stat)) if stat.czxid == self.broker_epoch => Ok(()),
            _ => Err(ZkFailure::Op {
                op: "check registration of",
                path: path::broker(self.cfg.me.id),
                source: ZkError::SessionExpired,
            }),
        }
    }

    /// The children of `path`, leaving a new watch (`what`) when `arm`.
    fn children_of(&self, path: &str, what: Watched, arm: bool) -> ZkResult<Vec<String>> {
        let s = self.session()?;
        match arm {
            true => Ok(s
                .children_watch(path, self.watcher(what))?
                .unwrap_or_default()),
            false => s.children(path),
        }
    }

    fn read_brokers(&mut self) -> ZkResult<()> {
        let arm = !self.armed.brokers;
        let children = self.children_of(path::BROKERS, Watched::Brokers, arm)?;
        let s = self.session()?;
        let mut brokers = BTreeMap::new();
        let mut epochs = BTreeMap::new();
        for c in children {
            let p = format!("{}/{c}", path::BROKERS);
            if let Some((raw, stat)) = s.get(&p)? {
                match BrokerInfo::decode(&raw) {
                    Ok(b) => {
                        epochs.insert(b.id, stat.czxid);
                        brokers.insert(b.id, b);
                    }
                    Err(e) => warn!("control: {p}: {e}; ignored"),
                }
            }
        }
        self.armed.brokers |= arm;
        self.broker_epochs = epochs;
        if brokers != self.brokers {
            info!(
                "control: live nodes {:?}",
                brokers.keys().collect::<Vec<_>>()
            );
            self.brokers = brokers;
        }
        Ok(())
    }

    fn read_controller(&mut self) -> ZkResult<()> {
        let arm = !self.armed.controller;
        let w = self.watcher(Watched::Controller);
        let s = self.session()?;
        let raw = if arm {
            s.get_watch(path::CONTROLLER, w)?
        } else {
            s.get(path::CONTROLLER)?
        };
        self.armed.controller |= arm;
        let c = raw.and_then(|(raw, _)| match ControllerInfo::decode(&raw) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!("control: {}: {e}", path::CONTROLLER);
                None
            }
        });
        if let Some(e) = self.my_epoch
            && c.as_ref()
                .is_none_or(|c| c.id != self.cfg.me.id || c.epoch != e)
        {
            warn!(
                "control: node {} is no longer controller (epoch {e}); {} holds it now",
                self.cfg.me.id,
                c.as_ref()
                    .map(|c| format!("node {} epoch {}", c.id, c.epoch))
                    .unwrap_or_else(|| "nobody".into())
            );
            self.my_epoch = None;
        }
        self.controller = c;
        Ok(())
    }

    fn read_shutdown(&mut self) -> ZkResult<()> {
        let arm = !self.armed.shutdown;
        let children = self.children_of(path::ADMIN_SHUTDOWN, Watched::Shutdown, arm)?;
        self.armed.shutdown |= arm;
        let mut set: BTreeSet<u32> = children.iter().filter_map(|c| c.parse().ok()).collect();
        // Our own request counts before its znode is (re)created.
        if self.leaving {
            set.insert(self.cfg.me.id);
        }
        if set != self.shutting {
            info!("control: nodes shutting down: {set:?}");
            self.shutting = set;
        }
        Ok(())
    }

    fn read_cannot_lead(&mut self) -> ZkResult<()> {
        let arm = !self.armed.cannot_lead;
        let children = self.children_of(path::CANNOT_LEAD, Watched::CannotLead, arm)?;
        self.armed.cannot_lead |= arm;
        let set: BTreeSet<(u32, u32, u32)> = children
            .iter()
            .filter_map(|c| path::parse_cannot_lead(c))
            .collect();
        // A znode of ours that is gone (one an older session of this node held, taken for
        // ours, that went with that session) is created again.
        let me = self.cfg.me.id;
        self.cannot_lead_znodes
            .retain(|&(p, e)| set.contains(&(me, p, e)));
        if set != self.cannot_lead {
            info!("control: leaderships nodes could not take up (node, partition, epoch): {set:?}");
            self.cannot_lead = set;
        }
        Ok(())
    }

    /// True when `node` said it cannot lead partition `p` in `epoch`. This node's own word
    /// is its memory, not the znodes read (they lag behind a withdrawal).
    fn cannot_lead(&self, node: u32, p: u32, epoch: u32) -> bool {
        match node == self.cfg.me.id {
            true => self.cannot_lead_mine.get(&p) == Some(&epoch),
            false => self.cannot_lead.contains(&(node, p, epoch)),
        }
    }

    /// True when `node` said it cannot lead partition `p` (in any epoch) and has not written
    /// it since.
    fn unable_to_lead(&self, node: u32, p: u32) -> bool {
        match node == self.cfg.me.id {
            true => self.cannot_lead_mine.contains_key(&p),
            false => self
                .cannot_lead
                .range((node, p, 0)..=(node, p, u32::MAX))
                .next()
                .is_some(),
        }
    }

    /// True when `node` said it cannot lead some partition and has not written it since: its
    /// disk failed, and its other partitions live on the same disk. Preferred-leader
    /// elections and the imbalance check pass it over for every partition, and elections
    /// take it last among equal logs (found by a chaos run: the imbalance check named a node
    /// leader of another partition 0.3 s after it reported a full disk).
    fn unable_anywhere(&self, node: u32) -> bool {
        match node == self.cfg.me.id {
            true => !self.cannot_lead_mine.is_empty(),
            false => self
                .cannot_lead
                .range((node, 0, 0)..=(node, u32::MAX, u32::MAX))
                .next()
                .is_some(),
        }
    }

    /// The node's worker could not begin the leader epoch it was given, or its log cannot
    /// take writes any more in it: the controller is told, unless that leadership is over
    /// already.
    fn on_cannot_lead(&mut self, p: u32, epoch: u32, reason: &str) {
        let me = self.cfg.me.id;
        let current = self
            .parts
            .get(p as usize)
            .and_then(|v| v.as_ref())
            .is_some_and(|v| v.state.leader == Some(me) && v.state.leader_epoch == epoch);
        if !current || self.cannot_lead_mine.get(&p) == Some(&epoch) {
            return;
        }
        warn!(
            "control: node {me} cannot lead partition {p} in leader epoch {epoch} ({reason}): the controller is asked to elect another in-sync replica"
        );
        self.cannot_lead_mine.insert(p, epoch);
        if self.conn == Conn::Up {
            self.announce_cannot_lead();
        }
    }

    /// Creates `/admin/cannot_lead/<me>-<p>-<epoch>` (ephemeral) for each leadership this node
    /// could not take up, once per session, and deletes the ones it no longer needs (it has
    /// written the partition again since, or a newer mark replaced it).
    fn announce_cannot_lead(&mut self) {
        let me = self.cfg.me.id;
        let stale: Vec<(u32, u32)> = self
            .cannot_lead_znodes
            .iter()
            .copied()
            .filter(|(p, e)| self.cannot_lead_mine.get(p) != Some(e))
            .collect();
        for (p, e) in stale {
            let r = self
                .session()
                .and_then(|s| s.delete(&path::cannot_lead(me, p, e), None));
            if let Err(err) = r {
                self.zk_error("withdrawing a leadership this node could not take up", err);
                return;
            }
            self.cannot_lead_znodes.remove(&(p, e));
        }
        let todo: Vec<(u32, u32)> = self
            .cannot_lead_mine
            .iter()
            .map(|(&p, &e)| (p, e))
            .filter(|pe| !self.cannot_lead_znodes.contains(pe))
            .collect();
        for (p, e) in todo {
            let r = self.session().and_then(|s| {
                s.create_all(path::CANNOT_LEAD)?;
                match s.create(&path::cannot_lead(me, p, e), Vec::new(), true) {
                    Err(x) if is_code(&x, ZkError::NodeExists) => Ok(()),
                    r => r,
                }
            });
            match r {
                Ok(()) => {
                    self.cannot_lead_znodes.insert((p, e));
                }
                Err(err) => {
                    self.zk_error(
                        "telling the controller about a leadership this node cannot take up",
                        err,
                    );
                    return;
                }
            }
        }
    }

    fn read_preferred(&mut self) -> ZkResult<()> {
        let arm = !self.armed.preferred;
        let w = self.watcher(Watched::Preferred);
        let s = self.session()?;
        let present = if arm {
            s.exists_watch(path::PREFERRED_ELECTION, w)?
        } else {
            s.get(path::PREFERRED_ELECTION)?.is_some()
        };
        self.armed.preferred |= arm;
        self.preferred_asked = present;
        Ok(())
    }

    fn read_partition(&mut self, p: u32) -> ZkResult<()> {
        let i = p as usize;
        let arm = !self.armed.parts[i];
        let w = self.watcher(Watched::Partition(p));
        let sp = path::partition_state(p);
        let s = self.session()?;
        let raw = if arm {
            s.get_watch(&sp, w)?
        } else {
            s.get(&sp)?
        };
        self.armed.parts[i] |= arm;
        match raw {
            Some((raw, stat)) => match PartitionState::decode(&raw) {
                Ok(state) => self.apply(
                    p,
                    PartitionView {
                        state,
                        version: stat.version,
                        mzxid: stat.mzxid,
                    },
                ),
                Err(e) => warn!("control: {sp}: {e}; partition {p} treated as unknown"),
            },
            None => warn!("control: {sp} is missing"),
        }
        Ok(())
    }

    /// Takes a partition state read or written at some version, unless a newer one is known.
    fn apply(&mut self, p: u32, v: PartitionView) {
        let Some(slot) = self.parts.get_mut(p as usize) else {
            return;
        };
        if slot.as_ref().is_some_and(|old| old.version >= v.version) {
            return;
        }
        debug!(
            "control: partition {p} at version {}: {:?}",
            v.version, v.state
        );
        *slot = Some(v);
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            me: self.cfg.me.id,
            meta: self.meta.clone(),
            brokers: self.brokers.clone(),
            partitions: self
                .parts
                .iter()
                .map(|v| v.clone().unwrap_or_else(unknown_partition))
                .collect(),
            controller: self.controller.as_ref().map(|c| (c.id, c.epoch)),
            session_ok: self.conn == Conn::Up,
            broker_epoch: self.broker_epoch,
            shutting_down: self.shutting.iter().copied().collect(),
            cannot_lead: {
                let me = self.cfg.me.id;
                let mut v: Vec<(u32, u32)> = self
                    .cannot_lead
                    .iter()
                    .filter(|&&(n, _, _)| n != me)
                    .map(|&(n, p, _)| (n, p))
                    .chain(self.cannot_lead_mine.keys().map(|&p| (me, p)))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            },
            unclean_elections: self.unclean_elections,
        }
    }

    fn publish(&mut self) {
        let v = self.view();
        if self.published.as_ref() != Some(&v) {
            self.published = Some(v.clone());
            (self.sink)(v);
        }
    }

    /// The nodes as one partition's election sees them. A replica that registered again
    /// after the partition's state was last written (its broker epoch is newer: it restarted,
    /// perhaps with an empty disk, or lost its session) may lack records the state assumes
    /// it has: while another in-sync replica can take over, it is treated as leaving — it
    /// gives up the leadership and leaves the ISR, and joins again once caught up (KIP-380).
    /// When it is the only in-sync replica left, it stays eligible and the state is written
    /// again with a new leader epoch, which it then may act on.
    ///
    /// A leader that said it cannot take up its leadership (`/admin/cannot_lead`, for the
    /// state's leader epoch) is treated as leaving too, for this partition only, when another
    /// in-sync replica can lead that has not registered again since the state was written:
    /// that one leads, and the node leaves the ISR until it has caught up again (as a broker
    /// whose log directory failed). Otherwise it keeps the partition and tries again to
    /// begin the epoch: no unclean election, and no replica that may have come back with
    /// less, for a leader that has every acknowledged record and only cannot write yet.
    fn nodes_for(&self, base: &Nodes, p: u32, v: &PartitionView) -> Nodes {
        let mut wiped = base.clone();
        wiped.wiped = v
            .state
            .isr
            .iter()
            .copied()
            .filter(|b| {
                let now = self.brokers.get(b).and_then(|i| i.storage);
                v.state.lost_storage(*b, now)
            })
            .collect();
        let mut n = self.nodes_for_marks(&wiped, p, v);
        n.unable = v
            .state
            .replicas
            .iter()
            .copied()
            .filter(|&r| self.unable_anywhere(r))
            .collect();
        n
    }

    fn nodes_for_marks(&self, base: &Nodes, p: u32, v: &PartitionView) -> Nodes {
        if let Some(l) = self.marked_leader(p, v) {
            let restarted = self.restarted(v);
            let others = v.state.isr.iter().any(|&r| {
                r != l && base.synced(r) && !restarted.contains(&r) && !self.unable_to_lead(r, p)
            });
            if others {
                let mut without = base.clone();
                without.shutting_down.insert(l);
                return self.nodes_for_restarts(&without, v);
            }
        }
        self.nodes_for_restarts(base, v)
    }

    /// The in-sync replicas of `v` that registered again after it was written.
    fn restarted(&self, v: &PartitionView) -> Vec<u32> {
        v.state
            .isr
            .iter()
            .copied()
            .filter(|b| self.broker_epochs.get(b).is_some_and(|&e| e > v.mzxid))
            .collect()
    }

    /// The leader of `v` (partition `p`) when it said it cannot take the leadership up.
    fn marked_leader(&self, p: u32, v: &PartitionView) -> Option<u32> {
        v.state
            .leader
            .filter(|&l| self.cannot_lead(l, p, v.state.leader_epoch))
    }

    fn nodes_for_restarts(&self, base: &Nodes, v: &PartitionView) -> Nodes {
        let restarted = self.restarted(v);
        if restarted.is_empty() {
            return base.clone();
        }
        let others = v
            .state
            .isr
            .iter()
            .any(|b| !restarted.contains(b) && base.synced(*b));
        let mut n = base.clone();
        if others {
            n.shutting_down.extend(restarted);
        } else if v.state.leader.is_some_and(|l| restarted.contains(&l)) {
            n.reelect = true;
        }
        n
    }

    fn nodes(&self) -> Nodes {
        Nodes {
            live: self.brokers.keys().copied().collect(),
            shutting_down: self.shutting.clone(),
            reelect: false,
            unable: BTreeSet::new(),
            wiped: BTreeSet::new(),
            storage: self
                .brokers
                .iter()
                .filter_map(|(&b, i)| Some((b, i.storage?)))
                .collect(),
        }
    }

    /// Creates `/admin/shutdown/<me>` (ephemeral) once per session after a controlled
    /// shutdown was asked for.
    fn announce_leaving(&mut self) {
        if !self.leaving || self.leaving_znode || self.conn != Conn::Up {
            return;
        }
        let r = self.session().and_then(|s| {
            s.create_all(path::ADMIN_SHUTDOWN)?;
            match s.create(&path::shutdown(self.cfg.me.id), Vec::new(), true) {
                Err(e) if is_code(&e, ZkError::NodeExists) => Ok(()),
                r => r,
            }
        });
        match r {
            Ok(()) => self.leaving_znode = true,
            Err(e) => self.zk_error("announcing the controlled shutdown", e),
        }
    }

    fn check_shutdown(&mut self) {
        if self.pending_shutdown.is_none() {
            return;
        }
        // Without a session there is nothing to hand over: the node leads nothing (fenced),
        // and the controller moves its partitions once ZooKeeper has ended the session (or
        // ended it already). Waiting out the deadline for a new session (ZooKeeper down or
        // paused) only kept the process from exiting for the whole shutdown timeout.
        if self.conn == Conn::Lost {
            info!(
                "control: node {} has no ZooKeeper session: it leads nothing, and the controller \
                 moves its partitions once the session has ended; nothing to hand over",
                self.cfg.me.id
            );
            if let Some(p) = self.pending_shutdown.take() {
                (p.done)(true);
            }
            return;
        }
        self.announce_leaving();
        if self.conn == Conn::Up && self.leaving_znode {
            match self.shutdown_progress() {
                Ok(Some(stuck)) => {
                    if stuck.is_empty() {
                        info!(
                            "control: node {} leads no partition any more",
                            self.cfg.me.id
                        );
                    } else {
                        warn!(
                            "control: partitions {stuck:?} stay led by node {}: no other replica can lead them",
                            self.cfg.me.id
                        );
                    }
                    if let Some(p) = self.pending_shutdown.take() {
                        (p.done)(true);
                    }
                    return;
                }
                Ok(None) => {}
                Err(e) => self.zk_error("checking the controlled shutdown", e),
            }
        }
        if let Some(p) = self
            .pending_shutdown
            .take_if(|p| Instant::now() >= p.deadline)
        {
            warn!(
                "control: controlled shutdown of node {} timed out with leaderships left",
                self.cfg.me.id
            );
            (p.done)(false);
        }
    }

    /// Reads every state afresh: `Some(partitions that must stay with us)` when nothing led by
    /// this node can move any more, `None` while something still can.
    fn shutdown_progress(&mut self) -> ZkResult<Option<Vec<u32>>> {
        for p in 0..self.meta.partitions {
            let sp = path::partition_state(p);
            let got = self.session()?.get(&sp)?;
            if let Some((raw, stat)) = got
                && let Ok(state) = PartitionState::decode(&raw)
            {
                self.apply(
                    p,
                    PartitionView {
                        state,
                        version: stat.version,
                        mzxid: stat.mzxid,
                    },
                );
            }
        }
        let me = self.cfg.me.id;
        let nodes = self.nodes();
        let unclean = self.cfg.unclean_leader_election;
        let mut stuck = Vec::new();
        for (p, v) in self.parts.iter().enumerate() {
            let Some(v) = v else { continue };
            if v.state.leader != Some(me) {
                continue;
            }
            if controller::candidates(&v.state, &nodes, unclean).is_empty() {
                stuck.push(p as u32);
            } else {
                return Ok(None);
            }
        }
        Ok(Some(stuck))
    }

    fn change_isr(
        &mut self,
        partition: u32,
        leader_epoch: u32,
        isr: Vec<u32>,
        storage: &BTreeMap<u32, u64>,
    ) -> super::api::IsrWritten {
        let me = self.cfg.me.id;
        if self.conn != Conn::Up {
            return Err("the ZooKeeper session is not usable right now".into());
        }
        if partition >= self.meta.partitions {
            return Err(format!("no partition {partition}"));
        }
        if !isr.contains(&me) {
            return Err(format!("the ISR {isr:?} must keep its leader {me}"));
        }
        let mut want = Vec::with_capacity(isr.len());
        for b in isr {
            if !want.contains(&b) {
                want.push(b);
            }
        }
        let sp = path::partition_state(partition);
        for _ in 0..CAS_TRIES {
            let s = self.session().map_err(|e| e.to_string())?;
            let (raw, stat) = match s.get(&sp) {
                Ok(Some(v)) => v,
                Ok(None) => return Err(format!("{sp} is missing")),
                Err(e) => {
                    let t = e.to_string();
                    self.zk_error("reading for an ISR change", e);
                    return Err(t);
                }
            };
            let cur = PartitionState::decode(&raw).map_err(|e| format!("{sp}: {e}"))?;
            if cur.leader != Some(me) {
                return Err(format!(
                    "node {me} does not lead partition {partition} (leader {:?}, epoch {})",
                    cur.leader, cur.leader_epoch
                ));
            }
            if cur.leader_epoch != leader_epoch {
                return Err(format!(
                    "leader epoch {leader_epoch} is stale: partition {partition} is in epoch {}",
                    cur.leader_epoch
                ));
            }
            if let Some(x) = want.iter().find(|b| !cur.replicas.contains(b)) {
                return Err(format!(
                    "node {x} is not a replica of partition {partition}"
                ));
            }
            // Members the ISR in ZooKeeper lacks that are gone or leaving (the controller takes
            // those out) are not written back: this leader's view may be older than that
            // removal, and its returning member would hold the high watermark back until
            // the controller removed it again.
            let gone = |b: &u32| !self.brokers.contains_key(b) || self.shutting.contains(b);
            let isr: Vec<u32> = want
                .iter()
                .copied()
                .filter(|b| cur.isr.contains(b) || !gone(b))
                .collect();
            if cur.lost_storage(me, self.cfg.me.storage) {
                return Err(format!(
                    "node {me} started from other storage than it had in the ISR of partition {partition}"
                ));
            }
            // Members that stay keep the id they joined with; a new one gets the id it
            // fetched with (so one wiped and started again since is found out). The leader's
            // own log is the partition's in its epoch (given to this registration), so it
            // records its id when it has none yet.
            let isr_storage = isr
                .iter()
                .filter_map(|&b| {
                    let new = b == me || !cur.isr.contains(&b);
                    let id = cur
                        .isr_storage
                        .get(&b)
                        .or_else(|| storage.get(&b).filter(|_| new))?;
                    Some((b, *id))
                })
                .collect();
            let next = PartitionState {
                isr: isr.clone(),
                isr_storage,
                ..cur
            };
            match s.set(&sp, next.encode(), Some(stat.version)) {
                Ok(stat) => {
                    info!(
                        "control: partition {partition} ISR {:?} (leader {me}, epoch {leader_epoch})",
                        next.isr
                    );
                    self.apply(
                        partition,
                        PartitionView {
                            state: next,
                            version: stat.version,
                            mzxid: stat.mzxid,
                        },
                    );
                    return Ok((stat.version, isr));
                }
                Err(e) if is_code(&e, ZkError::BadVersion) => continue,
                Err(e) => {
                    let t = e.to_string();
                    self.zk_error("writing an ISR change", e);
                    return Err(t);
                }
            }
        }
        Err(format!(
            "partition {partition} kept changing under the ISR change; try again"
        ))
    }

    fn controller_duties(&mut self) {
        if self.my_epoch.is_none() && self.controller.is_none() {
            self.try_election();
        }
        let Some(epoch) = self.my_epoch else { return };
        if self.preferred_asked
            && let Err(e) = self.refresh(true)
        {
            // Asked by an operator, and done once: decided on what ZooKeeper holds now, not
            // on a view a watch has not caught up with yet (a follower's ISR join), which
            // would find nothing to move and take the request away.
            return self.zk_error("re-reading for the preferred-leader election", e);
        }
        let mut preferred = self.preferred_asked;
        if !preferred
            && self.cfg.leader_imbalance_ratio < 1.0
            && self.last_imbalance_check.elapsed() >= self.cfg.leader_imbalance_check
        {
            self.last_imbalance_check = Instant::now();
            let nodes = self.nodes();
            // A partition whose preferred replica cannot lead (its disk failed) does not count.
            let movable: Vec<&PartitionState> = self
                .parts
                .iter()
                .flatten()
                .map(|v| &v.state)
                .filter(|s| {
                    s.replicas
                        .first()
                        .is_none_or(|&pref| !self.unable_anywhere(pref))
                })
                .collect();
            if controller::imbalanced(movable.into_iter(), &nodes, self.cfg.leader_imbalance_ratio)
            {
                info!("control: leaders are imbalanced: preferred-leader election");
                preferred = true;
            }
        }
        match self.controller_round(epoch, preferred) {
            Ok(true) => {
                if self.preferred_asked {
                    info!(
                        "control: preferred-leader election done (asked with {})",
                        path::PREFERRED_ELECTION
                    );
                    let r = self
                        .session()
                        .and_then(|s| s.delete(path::PREFERRED_ELECTION, None));
                    match r {
                        Ok(()) => self.preferred_asked = false,
                        Err(e) => self.zk_error("deleting the preferred election request", e),
                    }
                }
            }
            Ok(false) => {}
            Err(e) => self.zk_error("controller round", e),
        }
    }

    fn try_election(&mut self) {
        let me = self.cfg.me.id;
        let r = self
            .session()
            .and_then(|s| election::try_become_controller(s, me));
        match r {
            Ok(Outcome::Elected { epoch }) => {
                info!("control: node {me} is controller with epoch {epoch}");
                self.my_epoch = Some(epoch);
                self.controller = Some(ControllerInfo { id: me, epoch });
                // Act on what ZooKeeper holds now, not on what the watches last said.
                if let Err(e) = self.refresh(true) {
                    self.zk_error("re-reading as the new controller", e);
                }
            }
            Ok(Outcome::Other(c)) => self.controller = Some(c),
            Err(e) => self.zk_error("controller election", e),
        }
    }

    /// One round of controller decisions and writes. `Ok(true)` when it ran to the end
    /// (including when there was nothing to do), `Ok(false)` when it stopped because this node
    /// is not controller any more.
    fn controller_round(&mut self, epoch: u64, preferred: bool) -> ZkResult<bool> {
        let nodes = self.nodes();
        let unclean = self.cfg.unclean_leader_election;
        let none = BTreeMap::new();
        // Partitions to decide on, and among them the ones a preferred-leader election moves
        // away from a live leader (by that leader), which are handed over first.
        let mut rest = Vec::new();
        let mut moves: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (p, v) in self.parts.iter().enumerate() {
            let Some(v) = v.as_ref() else { continue };
            let nodes = self.nodes_for(&nodes, p as u32, v);
            let Some(d) = controller::decide(&v.state, &nodes, &none, unclean, preferred, epoch)
            else {
                continue;
            };
            // A leader that cannot take its leadership up has nothing to hand over.
            let marked = self.marked_leader(p as u32, v).is_some();
            match v.state.leader.filter(|l| nodes.live.contains(l)) {
                Some(l) if preferred && !marked && d.next.leader != Some(l) => {
                    moves.entry(l).or_default().push(p as u32)
                }
                _ => rest.push(p as u32),
            }
        }
        if rest.is_empty() && moves.is_empty() {
            return Ok(true);
        }
        if !self.still_controller(epoch)? {
            return Ok(false);
        }
        // Partitions without a live leader first: a handover may take up to a second.
        let Some(log_ends) = self.probe_round(&rest, &nodes, epoch)? else {
            return Ok(false);
        };
        for p in rest {
            if !self.decide_and_write(p, &nodes, &log_ends, preferred, epoch)? {
                return Ok(false);
            }
        }
        // Handovers: before a preferred-leader election moves partitions away from their live
        // leader, the leader is asked to stop taking writes on them and to answer once the
        // writes it took are committed, so the new leader has them all (without that, writes
        // the leader took after the new one last fetched would be cut from its log when it
        // became follower, their clients left with an unknown outcome). Best effort: a leader
        // that does not answer within a second is moved anyway. Every leader is asked at
        // once; each one's partitions are written as soon as it has answered, while it still
        // refuses writes on them.
        self.ask_brokers(epoch, true, moves, |ctl, leader, parts, answer| {
            match answer {
                Some((_, took)) => info!(
                    "control: node {leader} handed over partitions {parts:?} (its writes on them committed) in {} ms",
                    took.as_millis()
                ),
                None => warn!(
                    "control: node {leader} did not hand over partitions {parts:?}; moving them anyway"
                ),
            }
            // Every leader's hold started when it was asked, and partitions are written one
            // by one: before a leader's hold can run out, it is asked again for the rest.
            let mut held = Instant::now();
            for (i, &p) in parts.iter().enumerate() {
                if held.elapsed() >= HANDOVER_HOLD / 2 {
                    let rest = BTreeMap::from([(leader, parts[i..].to_vec())]);
                    if !ctl.ask_brokers(epoch, true, rest, |_, _, _, _| Ok(true))? {
                        return Ok(false);
                    }
                    held = Instant::now();
                }
                if !ctl.decide_and_write(p, &nodes, &BTreeMap::new(), preferred, epoch)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Runs the log-end probe for each `(broker, partitions)` of `asks` at once, each call on
    /// a thread of its own with its own deadline (300 ms, 1 s for a handover), and hands each
    /// answer, with how long it took, to `on_answer` as it arrives; a broker that did not
    /// answer in time, or is not registered, gets `None`. Meanwhile the connection events of
    /// the ZooKeeper client and the liveness checks of `work` go on (other messages wait for
    /// the main loop), so waiting on replicas does not stretch how soon a node cut off from
    /// ZooKeeper stops leading. `Ok(false)` when `on_answer` said so, or when the session
    /// stopped being usable meanwhile: the caller drops the round, and the next one (once
    /// ZooKeeper answers) decides afresh.
    fn ask_brokers(
        &mut self,
        epoch: u64,
        handover: bool,
        asks: BTreeMap<u32, Vec<u32>>,
        mut on_answer: impl FnMut(
            &mut Ctl,
            u32,
            Vec<u32>,
            Option<(BTreeMap<u32, u64>, Duration)>,
        ) -> ZkResult<bool>,
    ) -> ZkResult<bool> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut pending = 0usize;
        for (b, parts) in asks {
            let Some(info) = self.brokers.get(&b).cloned() else {
                if !on_answer(self, b, parts, None)? {
                    return Ok(false);
                }
                continue;
            };
            let (probe, tx) = (self.probe.clone(), tx.clone());
            let mine = parts.clone();
            let spawned = std::thread::Builder::new()
                .name("skv-log-ends".into())
                .spawn(move || {
                    let t = Instant::now();
                    let answer = probe(&info, epoch, &mine, handover);
                    let _ = tx.send((info.id, mine, answer.map(|a| (a, t.elapsed()))));
                });
            match spawned {
                Ok(_) => pending += 1,
                Err(e) => {
                    warn!("control: cannot start a thread to ask node {b} its log ends: {e}");
                    if !on_answer(self, b, parts, None)? {
                        return Ok(false);
                    }
                }
            }
        }
        drop(tx);
        let inbox = self.inbox.clone();
        let mut checked = Instant::now();
        while pending > 0 {
            // However busy the channels are, the checks run every half tick.
            if checked.elapsed() >= TICK / 2 {
                checked = Instant::now();
                self.probe();
                self.check_answering();
                if self.conn != Conn::Up {
                    return Ok(false);
                }
            }
            crossbeam_channel::select! {
                recv(rx) -> m => {
                    let Ok((b, parts, answer)) = m else { break };
                    pending -= 1;
                    if !on_answer(self, b, parts, answer)? {
                        return Ok(false);
                    }
                }
                recv(inbox) -> m => match m {
                    Ok(Msg::Conn { generation, state }) => self.on_conn(generation, state),
                    Ok(m) => self.deferred.push_back(m),
                    // Cannot happen while `self.tx` lives.
                    Err(_) => {}
                },
                default(TICK / 2) => {}
            }
            if self.conn != Conn::Up {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn still_controller(&mut self, epoch: u64) -> ZkResult<bool> {
        let me = self.cfg.me.id;
        let cur = match election::current(self.session()?) {
            Ok(c) => c,
            Err(ZkFailure::Decode { .. }) => None,
            Err(e) => return Err(e),
        };
        let holds = cur.as_ref().is_some_and(|c| c.id == me && c.epoch == epoch);
        if !holds {
            warn!(
                "control: node {me} is no longer controller (epoch {epoch}): /controller is {cur:?}"
            );
            self.my_epoch = None;
        }
        Ok(holds)
    }

    /// Stops acting as controller and frees `/controller` if this node still holds it, so that
    /// an election takes an epoch above every one written so far.
    fn resign(&mut self, epoch: u64) {
        self.my_epoch = None;
        let me = self.cfg.me.id;
        let r = self.session().and_then(|s| match s.get(path::CONTROLLER)? {
            Some((raw, stat))
                if ControllerInfo::decode(&raw).is_ok_and(|c| c.id == me && c.epoch == epoch) =>
            {
                s.delete(path::CONTROLLER, Some(stat.version))
            }
            _ => Ok(()),
        });
        match r {
            Ok(()) => warn!("control: node {me} resigned as controller (epoch {epoch})"),
            Err(e) => self.zk_error("resigning as controller", e),
        }
    }

    /// Asks each broker once (all at once) for the log ends of the partitions it might be
    /// elected for. Result: partition -> broker -> log end; `None` when ZooKeeper stopped
    /// answering meanwhile (see `ask_brokers`).
    fn probe_round(
        &mut self,
        plan: &[u32],
        nodes: &Nodes,
        epoch: u64,
    ) -> ZkResult<Option<BTreeMap<u32, BTreeMap<u32, u64>>>> {
        let unclean = self.cfg.unclean_leader_election;
        let mut asks: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &p in plan {
            let Some(Some(v)) = self.parts.get(p as usize) else {
                continue;
            };
            let nodes = &self.nodes_for(nodes, p, v);
            if !controller::needs_leader(&v.state, nodes) {
                continue;
            }
            let c = controller::candidates(&v.state, nodes, unclean);
            // One candidate wins anyway: no need to ask it.
            if c.len() > 1 {
                for b in c {
                    asks.entry(b).or_default().push(p);
                }
            }
        }
        let mut out: BTreeMap<u32, BTreeMap<u32, u64>> = BTreeMap::new();
        let done = self.ask_brokers(epoch, false, asks, |_, b, parts, answer| {
            match answer {
                Some((ends, took)) => {
                    debug!(
                        "control: log ends of node {b} for {parts:?}: {ends:?} in {} ms",
                        took.as_millis()
                    );
                    for (p, end) in ends {
                        if parts.contains(&p) {
                            out.entry(p).or_default().insert(b, end);
                        }
                    }
                }
                None => warn!("control: node {b} did not tell its log ends in time"),
            }
            Ok(true)
        })?;
        Ok(done.then_some(out))
    }

    /// Re-reads partition `p`, decides on the fresh state and writes it conditionally. False
    /// when a newer controller has written the state (this node stops acting).
    fn decide_and_write(
        &mut self,
        p: u32,
        nodes: &Nodes,
        log_ends: &BTreeMap<u32, BTreeMap<u32, u64>>,
        preferred: bool,
        epoch: u64,
    ) -> ZkResult<bool> {
        let unclean = self.cfg.unclean_leader_election;
        let none = BTreeMap::new();
        let ends = log_ends.get(&p).unwrap_or(&none);
        let sp = path::partition_state(p);
        for _ in 0..CAS_TRIES {
            let Some((raw, stat)) = self.session()?.get(&sp)? else {
                warn!("control: {sp} is missing");
                return Ok(true);
            };
            let cur = match PartitionState::decode(&raw) {
                Ok(s) => s,
                Err(e) => {
                    warn!("control: {sp}: {e}; left alone");
                    return Ok(true);
                }
            };
            let seen = PartitionView {
                state: cur.clone(),
                version: stat.version,
                mzxid: stat.mzxid,
            };
            let nodes = &self.nodes_for(nodes, p, &seen);
            self.apply(p, seen);
            // Chosen again by log end, or not at all: a replica whose log end is not known may
            // be the one with every acknowledged record, and the one known may have none.
            if nodes.reelect {
                let missing: Vec<u32> = controller::candidates(&cur, nodes, false)
                    .into_iter()
                    .filter(|b| !ends.contains_key(b))
                    .collect();
                if controller::candidates(&cur, nodes, false).len() > 1 && !missing.is_empty() {
                    warn!(
                        "control: partition {p}: every in-sync replica registered again; no leader is chosen until nodes {missing:?} tell their log ends"
                    );
                    return Ok(true);
                }
            }
            if cur.controller_epoch > epoch {
                warn!(
                    "control: partition {p} was written by controller epoch {} (ours is {epoch}): node {} stops acting as controller",
                    cur.controller_epoch, self.cfg.me.id
                );
                self.resign(epoch);
                return Ok(false);
            }
            let Some(d) = controller::decide(&cur, nodes, ends, unclean, preferred, epoch) else {
                return Ok(true);
            };
            let written = self
                .session()?
                .set(&sp, d.next.encode(), Some(stat.version));
            match written {
                Ok(stat) => {
                    if !nodes.wiped.is_empty() {
                        warn!(
                            "control: partition {p}: nodes {:?} registered with other storage than they joined its ISR with (a wiped or replaced disk): not in sync until they have caught up again",
                            nodes.wiped
                        );
                    }
                    if d.unclean {
                        self.unclean_elections += 1;
                        error!(
                            "control: UNCLEAN leader election for partition {p}: node {:?} leads in epoch {} without being in sync; acknowledged writes may be lost",
                            d.next.leader, d.next.leader_epoch
                        );
                    } else if d.next.leader != cur.leader {
                        info!(
                            "control: partition {p}: leader {:?} -> {:?}, epoch {}, ISR {:?}",
                            cur.leader, d.next.leader, d.next.leader_epoch, d.next.isr
                        );
                    } else {
                        info!(
                            "control: partition {p}: ISR {:?} -> {:?}",
                            cur.isr, d.next.isr
                        );
                    }
                    self.apply(
                        p,
                        PartitionView {
                            state: d.next,
                            version: stat.version,
                            mzxid: stat.mzxid,
                        },
                    );
                    return Ok(true);
                }
                Err(e) if is_code(&e, ZkError::BadVersion) => continue,
                Err(e) => return Err(e),
            }
        }
        debug!("control: partition {p} kept changing; decided again next round");
        Ok(true)
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // Also on a failed start: the registration must not outlive the thread.
        if let Some(s) = self.session.take() {
            s.close();
        }
    }
}

/// Stands for a partition whose state could not be read (version -1: any real state is
/// newer). It has no leader and no replicas.
fn unknown_partition() -> PartitionView {
    PartitionView {
        state: PartitionState {
            leader: None,
            leader_epoch: 0,
            isr: Vec::new(),
            replicas: Vec::new(),
            controller_epoch: 0,
            isr_storage: BTreeMap::new(),
        },
        version: -1,
        mzxid: 0,
    }
}

/// A cloneable way to send requests to the control thread (from the replication thread and
/// the shutdown path), without owning it.
#[derive(Clone)]
pub struct ControlSender {
    tx: Sender<Msg>,
}

impl ControlSender {
    /// False if the control thread is gone.
    pub fn request(&self, r: ControlRequest) -> bool {
        self.tx.send(Msg::Req(r)).is_ok()
    }
}

impl ControlHandle {
    pub fn sender(&self) -> ControlSender {
        ControlSender {
            tx: self.tx.clone(),
        }
    }
}

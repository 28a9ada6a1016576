//! A simplekv node: the RESP server and, when `cluster.grpc_port` is set, the gRPC services.
//!
//! Standalone (no `cluster.zk`): the RESP server alone, plus the gRPC KV service if a port is
//! given. Cluster mode: the control thread (ZooKeeper) first — it registers the node and waits
//! for the cluster to exist — then the data plane with the partitions this node replicates,
//! the replication driver (on the gRPC thread), and the gRPC server with the KV and
//! replication services. Every new view of the cluster the control thread publishes becomes
//! a route table for the workers and the replication driver (a small thread converts and
//! forwards them).
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{info, warn};
use simplekv_conf::Config;
use simplekv_net::server::cluster::{NodeAddr, PartRoute, RouteTable};
use simplekv_net::server::router::Msg;
use simplekv_net::{ClusterBoot, ServerError, ServerHandle, ShutdownTrigger};

use crate::control::{
    ClusterView, ControlConfig, ControlError, ControlHandle, ControlRequest, LogEndProbe,
};
use crate::grpc::{GrpcServer, KvOptions, SharedRoutes};
use crate::repl::{ReplSettings, ReplThread};
use crate::zk::layout::BrokerInfo;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot start the gRPC service on {addr}: {reason}")]
    Grpc { addr: String, reason: String },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// How long a starting node waits for `simplekv cluster create`.
const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(3600);

struct ClusterParts {
    control: ControlHandle,
    repl: ReplThread,
    views: JoinHandle<()>,
}

pub struct Node {
    server: ServerHandle,
    grpc: Option<GrpcServer>,
    cluster: Option<ClusterParts>,
    shutdown_timeout: Duration,
}

/// The route table the data plane works from, built from the control thread's view.
pub fn routes_of(v: &ClusterView, name: &str, version: u64) -> RouteTable {
    RouteTable {
        me: v.me,
        name: name.to_string(),
        nodes: v
            .brokers
            .values()
            .map(|b| {
                (
                    b.id,
                    NodeAddr {
                        id: b.id,
                        resp: b.resp.clone(),
                        grpc: b.grpc.clone(),
                    },
                )
            })
            .collect(),
        parts: v
            .partitions
            .iter()
            .map(|pv| PartRoute {
                // Leadership given to an earlier incarnation of this node (the state is older
                // than its current registration) is not acted on: this one may have lost data
                // (a wiped disk). The controller writes the state again, with another leader
                // or a new epoch, and that one counts.
                leader: pv
                    .state
                    .leader
                    .filter(|&l| !(l == v.me && pv.mzxid < v.broker_epoch)),
                leader_epoch: pv.state.leader_epoch,
                replicas: pv.state.replicas.clone(),
                isr: pv.state.isr.clone(),
                state_version: pv.version,
            })
            .collect(),
        controller: v.controller,
        fenced: !v.session_ok,
        version,
        unclean_elections: v.unclean_elections,
        shutting_down: v.shutting_down.iter().copied().collect(),
        cannot_lead: v.cannot_lead.iter().copied().collect(),
    }
}

fn kv_options(config: &Config, routes: Option<SharedRoutes>) -> KvOptions {
    KvOptions {
        routes,
        max_request: config.limits.client_query_buffer_limit,
        max_args: config.limits.max_multibulk_len,
    }
}

/// The controller's election input: a replica's log ends, asked over gRPC with a deadline.
fn log_end_probe(env: Arc<grpcio::Environment>, secret: Option<String>) -> LogEndProbe {
    Arc::new(
        move |b: &BrokerInfo, epoch: u64, parts: &[u32], handover: bool| {
            let ch = grpcio::ChannelBuilder::new(env.clone()).connect(&b.grpc);
            let client = simplekv_proto::replication_grpc::ReplicationClient::new(ch);
            let mut req = simplekv_proto::replication::LogEndsRequest::new();
            req.controller_epoch = epoch;
            req.partitions = parts.to_vec();
            req.handover = handover;
            // A handover waits for the writes in flight to be committed.
            let wait = if handover { 1000 } else { 300 };
            let opt =
                crate::grpc::secret_opt(secret.as_deref()).timeout(Duration::from_millis(wait));
            match client.log_ends_opt(&req, opt) {
                Ok(r) if !r.refused => Some(
                    r.ends
                        .iter()
                        .filter(|e| e.present)
                        .map(|e| (e.partition, e.log_end))
                        .collect(),
                ),
                Ok(r) => {
                    warn!("node {} refused the log-end probe: {}", b.id, r.message);
                    None
                }
                Err(e) => {
                    warn!("node {} did not answer the log-end probe: {e}", b.id);
                    None
                }
            }
        },
    )
}

impl Node {
    pub fn start(config: Config, config_file: Option<PathBuf>) -> Result<Node, NodeError> {
        if config.is_cluster() {
            return Node::start_cluster(config, config_file);
        }
        let grpc_addr = config
            .cluster
            .grpc_port
            .map(|p| format!("{}:{p}", config.server.bind));
        // The gRPC port is bound before the RESP port answers, so a client that saw the node
        // answer PING can use either front door; requests that arrive before the workers exist
        // get TRY_AGAIN.
        let router = Arc::new(OnceLock::new());
        let grpc = match grpc_addr {
            Some(addr) => match GrpcServer::start(&addr, router.clone(), kv_options(&config, None))
            {
                Ok(g) => {
                    info!("gRPC KV service on {}", g.local_addr());
                    Some(g)
                }
                Err(reason) => return Err(NodeError::Grpc { addr, reason }),
            },
            None => None,
        };
        let shutdown_timeout = config.server.shutdown_timeout();
        let server = match simplekv_net::start_node(config, config_file, None, Some(router.clone()))
        {
            Ok(s) => s,
            Err(e) => {
                if let Some(g) = grpc {
                    g.stop();
                }
                return Err(e.into());
            }
        };
        Ok(Node {
            server,
            grpc,
            cluster: None,
            shutdown_timeout,
        })
    }

    fn start_cluster(config: Config, config_file: Option<PathBuf>) -> Result<Node, NodeError> {
        // Both ports first: a node that cannot listen must not register (and be elected
        // controller, or given leaderships) only to exit a moment later.
        simplekv_net::check_bind(&config)?;
        if let Some(port) = config.cluster.grpc_port {
            let mut g = config.clone();
            g.server.port = port;
            if simplekv_net::check_bind(&g).is_err() {
                return Err(NodeError::Grpc {
                    addr: format!("{}:{port}", config.server.bind),
                    reason: crate::grpc::BIND_FAILED.into(),
                });
            }
        }
        let c = &config.cluster;
        let zk = c.zk.clone().unwrap_or_default();
        let connect = format!("{}/{}", zk.trim_end_matches('/'), c.name);
        let me = c.node_id.unwrap_or(0);
        let host = config.advertise_host().to_string();
        let grpc_port = c.grpc_port.unwrap_or(0);
        // Before registering: the id says whether this node still has what it had.
        let storage = simplekv_net::server::storage_file::storage_identity(
            &config.storage.dir,
            config.storage.repair,
            &simplekv_net::server::engine_options(&config),
        )?;
        let info = BrokerInfo {
            id: me,
            resp: format!("{host}:{}", config.server.port),
            grpc: format!("{host}:{grpc_port}"),
            storage: Some(storage),
        };
        let session_timeout = Duration::from_millis(c.session_timeout_ms);
        let ccfg = ControlConfig {
            connect: connect.clone(),
            me: info,
            session_timeout,
            unclean_leader_election: c.unclean_leader_election,
            leader_imbalance_check: Duration::from_millis(c.leader_imbalance_check_ms),
            leader_imbalance_ratio: c.leader_imbalance_ratio,
        };
        let (view_tx, view_rx) = crossbeam_channel::unbounded::<ClusterView>();
        info!("cluster mode: node {me}, ZooKeeper {connect}");
        if config.server.requirepass.is_some() && c.secret.is_none() {
            log::warn!(
                "requirepass is set but cluster.secret is not: the replication service on the gRPC port answers anyone who reaches it (set the same cluster.secret on every node)"
            );
        }
        let env = crate::grpc::grpc_env();
        let (control, first) = crate::control::spawn(
            ccfg,
            log_end_probe(env.clone(), c.secret.clone()),
            Box::new(move |v| {
                let _ = view_tx.send(v);
            }),
            WAIT_FOR_CLUSTER,
        )?;
        let name = c.name.clone();
        let version = Arc::new(AtomicU64::new(1));
        let routes = Arc::new(routes_of(&first, &name, 1));
        let grpc_routes: SharedRoutes = Arc::new(std::sync::RwLock::new(routes.clone()));
        let kv = kv_options(&config, Some(grpc_routes.clone()));
        let (feed_tx, feed_rx) = crossbeam_channel::unbounded();
        let repl_wake = crate::repl::Wakeup::new();
        let feed_tx = {
            let w = repl_wake.clone();
            simplekv_net::server::replica::FeedTx::new(feed_tx, Arc::new(move || w.wake()))
        };
        // The lease must end well before the session would expire (see the replication
        // thread's docs: a paused leader stops serving before anyone can replace it).
        let lease = session_timeout / 4;
        let lag_max = Duration::from_millis(c.replica_lag_time_max_ms);
        let linger = Duration::from_micros(c.replica_push_linger_us);
        let shutdown_timeout = config.server.shutdown_timeout();
        let bind = config.server.bind.clone();
        let secret = c.secret.clone();
        let boot = ClusterBoot {
            partitions: first.meta.partitions,
            routes: routes.clone(),
            feed: feed_tx,
            lease,
            identity: simplekv_net::server::NodeIdentity {
                node_id: me,
                cluster_id: first.meta.cluster_id.clone(),
            },
            storage,
        };
        let server = match simplekv_net::start_node(config, config_file, Some(boot), None) {
            Ok(s) => s,
            Err(e) => {
                control.stop();
                return Err(e.into());
            }
        };
        let router = server.router();
        let ctl_tx = control.sender();
        let ctl_tx2 = control.sender();
        let isr_changer: crate::repl::IsrChanger = Box::new(move |p, epoch, isr, storage, done| {
            let sent = ctl_tx.request(ControlRequest::ChangeIsr {
                partition: p,
                leader_epoch: epoch,
                isr,
                storage,
                done,
            });
            if !sent {
                log::debug!("partition {p}: ISR change not sent, the control thread is gone");
            }
        });
        let repl = ReplThread::spawn(
            ReplSettings {
                me,
                storage,
                lag_max,
                lease,
                linger,
                secret,
            },
            router.clone(),
            feed_rx,
            routes,
            crate::repl::ControlLink {
                change_isr: isr_changer,
                leadership: Box::new(move |partition, leader_epoch, outcome| {
                    let _ = ctl_tx2.request(match outcome {
                        Ok(()) => ControlRequest::LeadingAgain {
                            partition,
                            leader_epoch,
                        },
                        Err(reason) => ControlRequest::CannotLead {
                            partition,
                            leader_epoch,
                            reason,
                        },
                    });
                }),
            },
            env.clone(),
            repl_wake,
        )
        .map_err(NodeError::Thread)?;
        let addr = format!("{bind}:{grpc_port}");
        let router_cell = Arc::new(OnceLock::new());
        let _ = router_cell.set(router.clone());
        let grpc = match GrpcServer::start_with(&addr, router_cell, kv, vec![repl.service()], env) {
            Ok(g) => g,
            Err(reason) => {
                server.shutdown();
                server.join();
                repl.stop();
                control.stop();
                return Err(NodeError::Grpc { addr, reason });
            }
        };
        info!("gRPC KV and replication service on {}", grpc.local_addr());
        let repl_events = repl.route_sender();
        let stopper = NodeShutdown {
            server: server.shutdown_trigger(),
            control: Some(control.sender()),
            router: router.clone(),
            timeout: shutdown_timeout,
        };
        let views = std::thread::Builder::new()
            .name("skv-views".into())
            .spawn(move || {
                let mut stopping = false;
                loop {
                    let mut v = match view_rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(v) => v,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            // SHUTDOWN from a client: a controlled shutdown, off this thread
                            // (it waits for views to move the leaderships).
                            if !stopping && stopper.server.requested() {
                                stopping = true;
                                let s = stopper.clone();
                                let _ = std::thread::Builder::new()
                                    .name("skv-shutdown".into())
                                    .spawn(move || s.fire());
                            }
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    };
                    // Only the newest view matters.
                    while let Ok(newer) = view_rx.try_recv() {
                        v = newer;
                    }
                    let n = version.fetch_add(1, Ordering::AcqRel) + 1;
                    let rt = Arc::new(routes_of(&v, &name, n));
                    // Workers first: the replication thread's requests to a worker must find
                    // the worker already in its new role (channels are FIFO).
                    // The gRPC service first: a worker's MOVED may name a node only the new
                    // table has, and the service looks its gRPC address up there.
                    *grpc_routes.write().unwrap_or_else(|e| e.into_inner()) = rt.clone();
                    router.broadcast(|| Msg::Routes(rt.clone()));
                    repl_events(rt);
                }
            })
            .map_err(NodeError::Thread)?;
        Ok(Node {
            server,
            grpc: Some(grpc),
            cluster: Some(ClusterParts {
                control,
                repl,
                views,
            }),
            shutdown_timeout,
        })
    }

    pub fn resp_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn grpc_addr(&self) -> Option<String> {
        self.grpc.as_ref().map(|g| g.local_addr())
    }

    /// What a signal (or the cli) fires to stop the node. In cluster mode it first asks the
    /// controller to move this node's leaderships away (controlled shutdown, bounded by the
    /// shutdown timeout), so clients see at most a redirect.
    pub fn shutdown_trigger(&self) -> NodeShutdown {
        NodeShutdown {
            server: self.server.shutdown_trigger(),
            control: self.cluster.as_ref().map(|c| c.control.sender()),
            router: self.server.router(),
            timeout: self.shutdown_timeout,
        }
    }

    /// Waits for the RESP server to stop (signal or SHUTDOWN), then stops the rest.
    pub fn join(self) {
        self.server.join();
        if let Some(c) = self.cluster {
            c.repl.stop();
            c.control.stop();
            let _ = c.views.join();
        }
        if let Some(g) = self.grpc {
            g.stop();
        }
    }
}

/// Stops a node (see `Node::shutdown_trigger`).
#[derive(Clone)]
pub struct NodeShutdown {
    server: ShutdownTrigger,
    control: Option<crate::control::ControlSender>,
    router: simplekv_net::server::router::Router,
    timeout: Duration,
}

impl NodeShutdown {
    /// Stops taking writes and waits (bounded) until every write already taken is confirmed
    /// by the in-sync replicas, so that moving leadership leaves none in doubt.
    fn resign(&self) {
        use simplekv_net::server::replica::{ReplOp, ReplReply};
        use simplekv_net::server::router::{Op, Payload};
        let deadline = std::time::Instant::now() + Duration::from_secs(3).min(self.timeout);
        loop {
            let (tx, rx) = crossbeam_channel::unbounded();
            let workers = self.router.workers();
            for w in 0..workers {
                let tx = tx.clone();
                self.router.submit(w, Op::Repl(ReplOp::Resign), move |p| {
                    let n = match p {
                        Payload::Repl(b) => match *b {
                            ReplReply::Pending(n) => n,
                            _ => 0,
                        },
                        _ => 0,
                    };
                    let _ = tx.send(n);
                });
            }
            let pending: usize = (0..workers)
                .map(|_| rx.recv_timeout(Duration::from_secs(1)).unwrap_or(1))
                .sum();
            if pending == 0 || std::time::Instant::now() >= deadline {
                if pending > 0 {
                    warn!("controlled shutdown: {pending} turns still wait for replicas");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl NodeShutdown {
    pub fn fire(&self) {
        if let Some(c) = &self.control {
            self.resign();
            let (tx, rx) = crossbeam_channel::bounded(1);
            let asked = c.request(ControlRequest::ControlledShutdown {
                deadline: std::time::Instant::now() + self.timeout,
                done: Box::new(move |ok| {
                    let _ = tx.send(ok);
                }),
            });
            if asked {
                info!("controlled shutdown: moving this node's leaderships away");
                match rx.recv_timeout(self.timeout + Duration::from_secs(1)) {
                    Ok(true) => info!("controlled shutdown: leaderships moved (none left here)"),
                    _ => warn!("controlled shutdown: leaderships did not all move in time"),
                }
            }
        }
        self.server.fire();
    }
}

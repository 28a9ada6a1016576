//! The gRPC side of replication on a leader: the `Fetch` stream a follower opens, and the
//! controller's `LogEnds` probe. Handlers only forward to the replication driver or to the
//! workers and never block the completion queue (which the driver runs on too).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt, StreamExt};
use grpcio::{
    DuplexSink, RequestStream, RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink,
    UnarySink, WriteFlags,
};
use simplekv_net::server::pubsub::Publication as Published;
use simplekv_net::server::replica::{ReplOp, ReplReply};
use simplekv_net::server::router::{Msg, Op, Payload, Router};
use simplekv_proto::replication::*;
use simplekv_proto::replication_grpc::Replication;

use super::{Event, EventTx};

#[derive(Clone)]
pub struct ReplService {
    pub(super) events: EventTx,
    pub(super) router: Router,
    next_stream: Arc<AtomicU64>,
    /// Newest controller epoch seen (LogEnds requests with an older one are refused).
    pub(super) controller_epoch: Arc<AtomicU64>,
    /// `cluster.secret`: every call must carry it.
    secret: Option<Arc<str>>,
    /// Refused calls, and when one was last logged (ms since `started`): at most one line
    /// per [`REFUSAL_LOG_EVERY`], so that a stranger cannot flood the log.
    refusals: Arc<(AtomicU64, AtomicU64)>,
    started: std::time::Instant,
}

const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl ReplService {
    pub(super) fn new(
        events: EventTx,
        router: Router,
        controller_epoch: Arc<AtomicU64>,
        secret: Option<&str>,
    ) -> ReplService {
        ReplService {
            events,
            router,
            next_stream: Arc::new(AtomicU64::new(1)),
            controller_epoch,
            secret: secret.map(Arc::from),
            refusals: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
            started: std::time::Instant::now(),
        }
    }

    /// The refusal for a call whose secret is not this node's: a call without it when this
    /// node has one, and a call with one when this node has none. Both ways, so that nodes
    /// with different secrets never replicate to each other: a node given a secret alone
    /// (a secret rolled in one node at a time) would otherwise fetch from the others, join
    /// their ISRs, be made leader, and then refuse them, leaving its partitions one replica.
    fn refused(&self, ctx: &RpcContext, call: &str) -> Option<RpcStatus> {
        let given = crate::grpc::bearer(ctx);
        let ok = match self.secret.as_deref() {
            None => given.is_none(),
            Some(want) => crate::grpc::same_secret(Some(want), given),
        };
        if ok {
            return None;
        }
        let (theirs, why) = match self.secret {
            Some(_) => ("does not carry", "this node's cluster.secret"),
            None => ("carries a cluster.secret,", "and this node has none"),
        };
        let (count, last) = &*self.refusals;
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_millis() as u64;
        let prev = last.load(Ordering::Relaxed);
        let due = n == 1 || now.saturating_sub(prev) >= REFUSAL_LOG_EVERY.as_millis() as u64;
        if due
            && last
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "refused a replication {call} call from {}: it {theirs} {why} ({n} refused so far)",
                ctx.peer()
            );
        }
        Some(RpcStatus::with_message(
            RpcStatusCode::UNAUTHENTICATED,
            "the call's cluster secret is not this node's (cluster.secret must be the same on every node)"
                .into(),
        ))
    }
}

impl Replication for ReplService {
    fn fetch(
        &mut self,
        ctx: RpcContext,
        mut stream: RequestStream<FetchRequest>,
        sink: DuplexSink<FetchResponse>,
    ) {
        if let Some(s) = self.refused(&ctx, "Fetch") {
            ctx.spawn(sink.fail(s).map(|_| ()));
            return;
        }
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        // The replication driver writes the sink itself (see `sink.rs`).
        let _ = self.events.send(Event::StreamOpened { stream: id, sink });
        let events = self.events.clone();
        ctx.spawn(async move {
            while let Some(Ok(req)) = stream.next().await {
                if events.send(Event::FetchReq { stream: id, req }).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::StreamClosed { stream: id });
        });
    }

    /// Messages published on another node: every worker hands them to its subscribers, in
    /// the order they came. The answer goes once every worker has (the call's last message
    /// goes as work with a completion), so what this node's workers have not taken yet
    /// waits in the sender's bounded queue rather than in their channels.
    fn publish(&mut self, ctx: RpcContext, req: PublishRequest, sink: UnarySink<PublishReply>) {
        if let Some(s) = self.refused(&ctx, "Publish") {
            ctx.spawn(sink.fail(s).map(|_| ()));
            return;
        }
        let mut messages: Vec<Arc<Published>> = req
            .messages
            .into_iter()
            .map(|m| {
                Arc::new(Published {
                    shard: false,
                    channel: m.channel,
                    message: m.message,
                })
            })
            .collect();
        let Some(last) = messages.pop() else {
            ctx.spawn(sink.success(PublishReply::new()).map(|_| ()));
            return;
        };
        for p in &messages {
            self.router.broadcast(|| Msg::Publish(p.clone()));
        }
        let workers = self.router.workers();
        let (tx, rx) = mpsc::unbounded::<()>();
        for w in 0..workers {
            let tx = tx.clone();
            let op = Op::Publish {
                p: last.clone(),
                forward: false,
            };
            self.router.submit(w, op, move |_| {
                let _ = tx.unbounded_send(());
            });
        }
        drop(tx);
        ctx.spawn(async move {
            // A worker gone (the node stopping) drops its completion uncalled: the call
            // fails then.
            if rx.take(workers).count().await == workers {
                let _ = sink.success(PublishReply::new()).await;
            } else {
                // Not UNAVAILABLE: some workers may have delivered the messages, the sender
                // must not send them again.
                let status =
                    RpcStatus::with_message(RpcStatusCode::ABORTED, "the node is stopping".into());
                let _ = sink.fail(status).await;
            }
        });
    }

    fn log_ends(&mut self, ctx: RpcContext, req: LogEndsRequest, sink: UnarySink<LogEndsReply>) {
        if let Some(s) = self.refused(&ctx, "LogEnds") {
            ctx.spawn(sink.fail(s).map(|_| ()));
            return;
        }
        let seen = self.controller_epoch.load(Ordering::Acquire);
        if !req.status && req.controller_epoch < seen {
            let mut r = LogEndsReply::new();
            r.refused = true;
            r.message = format!(
                "controller epoch {} is older than {seen}, the newest this node has seen",
                req.controller_epoch
            );
            ctx.spawn(sink.success(r).map(|_| ()));
            return;
        }
        let partitions = self.router.topo.partitions;
        if let Some(p) = req.partitions.iter().find(|&&p| p >= partitions) {
            let mut r = LogEndsReply::new();
            r.refused = true;
            r.message = format!("no partition {p}: the cluster has {partitions}");
            ctx.spawn(sink.success(r).map(|_| ()));
            return;
        }
        if !req.status {
            self.controller_epoch
                .fetch_max(req.controller_epoch, Ordering::AcqRel);
        }
        // `simplekv cluster status` is no controller: it never asks for a handover.
        let handover = req.handover && !req.status;
        let mut waits = Vec::new();
        for w in 0..self.router.workers() {
            let (tx, rx) = oneshot::channel();
            let parts = req
                .partitions
                .iter()
                .copied()
                .filter(|&p| self.router.topo.worker_of(p) == w)
                .collect::<Vec<_>>();
            if parts.is_empty() {
                continue;
            }
            self.router.submit(
                w,
                Op::Repl(ReplOp::LogEnds {
                    partitions: parts,
                    handover,
                }),
                move |p| {
                    let _ = tx.send(p);
                },
            );
            waits.push(rx);
        }
        ctx.spawn(async move {
            let mut r = LogEndsReply::new();
            for rx in waits {
                let answer = rx.await;
                // A handover whose writes were not all committed (a wait failed) is no
                // handover: the controller must not take it for one.
                if handover && !matches!(&answer, Ok(Payload::Repl(_))) {
                    r.refused = true;
                    r.message = match &answer {
                        Ok(Payload::Err(e)) => format!("handover: {e}"),
                        _ => "handover: no answer from a worker".into(),
                    };
                }
                if let Ok(Payload::Repl(b)) = answer
                    && let ReplReply::Ends(ends) = *b
                {
                    for (p, end, hw) in ends {
                        let mut e = PartitionEnd::new();
                        e.partition = p;
                        e.log_end = end;
                        e.high_watermark = hw;
                        e.present = true;
                        r.ends.push(e);
                    }
                }
            }
            let _ = sink.success(r).await;
        });
    }

    fn snapshot(
        &mut self,
        ctx: RpcContext,
        req: SnapshotRequest,
        mut sink: ServerStreamingSink<SnapshotChunk>,
    ) {
        if let Some(s) = self.refused(&ctx, "Snapshot") {
            ctx.spawn(sink.fail(s).map(|_| ()));
            return;
        }
        // Bounded: the reading thread waits for the follower instead of buffering the whole
        // snapshot in memory.
        let (tx, mut rx) = mpsc::channel::<SnapshotChunk>(16);
        ctx.spawn(async move {
            let mut items = rx.by_ref().map(|c| Ok((c, WriteFlags::default())));
            // grpcio panics if a sink is closed after a failed send (the call is over).
            if sink.send_all(&mut items).await.is_ok() {
                let _ = sink.close().await;
            }
        });
        let router = self.router.clone();
        let p = req.partition;
        let spawned = std::thread::Builder::new()
            .name(format!("skv-snapshot-{p}"))
            .spawn(move || {
                let mut tx = tx;
                if let Err(e) = send_snapshot(&router, &req, &mut tx) {
                    log::warn!("partition {p}: snapshot for node {}: {e}", req.follower_id);
                    let mut c = SnapshotChunk::new();
                    c.error = e;
                    let _ = futures::executor::block_on(tx.send(c));
                }
            });
        if let Err(e) = spawned {
            log::warn!("partition {p}: cannot start a snapshot thread: {e}");
        }
    }
}

/// Reads the hard-linked snapshot files in 1 MiB chunks into the stream, then removes them.
/// Runs on its own thread: file reads must not hold up gRPC's thread, which the replication
/// driver runs on.
fn send_snapshot(
    router: &Router,
    req: &SnapshotRequest,
    tx: &mut mpsc::Sender<SnapshotChunk>,
) -> Result<(), String> {
    use std::io::Read;
    let mut send = |c: SnapshotChunk| {
        futures::executor::block_on(tx.send(c)).map_err(|_| "the follower went away".to_string())
    };
    let (stx, srx) = crossbeam_channel::bounded(1);
    router.submit(
        router.topo.worker_of(req.partition),
        Op::Repl(ReplOp::Snapshot {
            partition: req.partition,
            leader_epoch: req.leader_epoch,
        }),
        move |p| {
            let _ = stx.send(p);
        },
    );
    let reply = srx
        .recv_timeout(std::time::Duration::from_secs(30))
        .map_err(|_| "the worker did not answer".to_string())?;
    let (dir, files, end, epochs) = match reply {
        Payload::Repl(b) => match *b {
            ReplReply::Snapshot {
                dir,
                files,
                end,
                epochs,
            } => (dir, files, end, epochs),
            ReplReply::WrongRole { .. } => return Err("not the leader in this epoch".into()),
            other => return Err(format!("{other:?}")),
        },
        other => return Err(format!("{other:?}")),
    };
    let result = (|| -> Result<(), String> {
        let mut first = SnapshotChunk::new();
        first.end = end;
        for (e, start) in epochs {
            let mut es = EpochStart::new();
            es.epoch = e;
            es.start_lsn = start;
            first.epochs.push(es);
        }
        send(first)?;
        let mut buf = vec![0u8; 1 << 20];
        for name in files {
            let mut f = std::fs::File::open(dir.join(&name)).map_err(|e| e.to_string())?;
            let mut offset = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 && offset > 0 {
                    break;
                }
                let mut c = SnapshotChunk::new();
                c.file = name.clone();
                c.offset = offset;
                c.data = buf[..n].to_vec();
                send(c)?;
                offset += n as u64;
                if n == 0 {
                    break;
                }
            }
        }
        let mut last = SnapshotChunk::new();
        last.done = true;
        send(last)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

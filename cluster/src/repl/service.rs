//! The gRPC side of replication on a leader: the `Fetch` stream a follower opens, and the
//! controller's `LogEnds` probe. Handlers only forward to the replication thread or to the
//! workers and never block the completion queue.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt, StreamExt};
use grpcio::{DuplexSink, RequestStream, RpcContext, UnarySink, WriteFlags};
use simplekv_net::server::replica::{ReplOp, ReplReply};
use simplekv_net::server::router::{Op, Payload, Router};
use simplekv_proto::replication::*;
use simplekv_proto::replication_grpc::Replication;

use super::Event;

#[derive(Clone)]
pub struct ReplService {
    pub(super) events: Sender<Event>,
    pub(super) router: Router,
    next_stream: Arc<AtomicU64>,
    /// Newest controller epoch seen (LogEnds requests with an older one are refused).
    pub(super) controller_epoch: Arc<AtomicU64>,
}

impl ReplService {
    pub(super) fn new(
        events: Sender<Event>,
        router: Router,
        controller_epoch: Arc<AtomicU64>,
    ) -> ReplService {
        ReplService {
            events,
            router,
            next_stream: Arc::new(AtomicU64::new(1)),
            controller_epoch,
        }
    }
}

impl Replication for ReplService {
    fn fetch(
        &mut self,
        ctx: RpcContext,
        mut stream: RequestStream<FetchRequest>,
        mut sink: DuplexSink<FetchResponse>,
    ) {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded::<FetchResponse>();
        let _ = self.events.send(Event::StreamOpened { stream: id, tx });
        ctx.spawn(async move {
            let mut items = rx.by_ref().map(|r| Ok((r, WriteFlags::default())));
            // grpcio panics if a sink is closed after a failed send (the call is over).
            if sink.send_all(&mut items).await.is_ok() {
                let _ = sink.close().await;
            }
        });
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

    fn log_ends(&mut self, ctx: RpcContext, req: LogEndsRequest, sink: UnarySink<LogEndsReply>) {
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
        if !req.status {
            self.controller_epoch
                .fetch_max(req.controller_epoch, Ordering::AcqRel);
        }
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
                Op::Repl(ReplOp::LogEnds { partitions: parts }),
                move |p| {
                    let _ = tx.send(p);
                },
            );
            waits.push(rx);
        }
        ctx.spawn(async move {
            let mut r = LogEndsReply::new();
            for rx in waits {
                if let Ok(Payload::Repl(b)) = rx.await
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
}

//! The gRPC KV service: Get, Set (with TTL), Del, Expire, Ttl, MGet, MSet.
//!
//! Each request becomes the same work a RESP command would be (a single-key command, or the
//! per-worker parts of a multi-key one) and is sent to the owning worker through the router.
//! The worker answers after its group commit; the handler never blocks the completion queue:
//! it awaits a oneshot channel inside a future spawned on the gRPC context.
//!
//! In cluster mode the keys of one MGet, MSet or Del must hash to one slot (`CROSSSLOT`
//! otherwise, as over RESP): the request then runs on one partition's leader, atomically, or
//! is redirected whole. A `MOVED` status names the leader's gRPC address.
use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::join_all;
use grpcio::{RpcContext, UnarySink};
use simplekv_net::cmd::MultiKind;
use simplekv_net::resp::encode::{Reply, parse_reply};
use simplekv_net::server::router::{Op, OwnedArgs, Payload, Router};
use simplekv_proto::kv::*;
use simplekv_proto::kv_grpc::Kv;

use super::SharedRoutes;
use super::status::{internal, invalid, ok, status_of_error};

#[derive(Clone)]
pub struct KvService {
    /// Set once the workers run (the port is served a moment before).
    router: Arc<OnceLock<Router>>,
    /// Cluster mode: the node's current routes.
    routes: Option<SharedRoutes>,
    /// Most keys one request may name (`limits.max_multibulk_len`, less the command).
    max_keys: usize,
}

/// What came back from the workers, as a reply or an error status.
type Answer = Result<Reply, Status>;

/// Replies that carry a status.
trait WithStatus: Default + Send + 'static {
    fn set_status(&mut self, s: Status);
}

macro_rules! with_status {
    ($($t:ty),*) => {$(
        impl WithStatus for $t {
            fn set_status(&mut self, s: Status) {
                self.status = Some(s).into();
            }
        }
    )*};
}
with_status!(
    GetReply,
    SetReply,
    DelReply,
    ExpireReply,
    TtlReply,
    MGetReply,
    MSetReply
);

/// Answers a call with `s` alone.
fn refuse<R: WithStatus>(ctx: &RpcContext, sink: UnarySink<R>, s: Status) {
    let mut r = R::default();
    r.set_status(s);
    ctx.spawn(sink.success(r).map(|_| ()));
}

const GONE: &str = "the server is shutting down";
const STARTING: &str = "TRYAGAIN the server is starting";

impl KvService {
    pub fn new(
        router: Arc<OnceLock<Router>>,
        routes: Option<SharedRoutes>,
        max_keys: usize,
    ) -> KvService {
        KvService {
            router,
            routes,
            max_keys,
        }
    }

    /// What RESP checks of a multi-key command before it runs: its arity, the cap on its
    /// arguments (`limits.max_multibulk_len`; `args` counts keys and values) and, in cluster
    /// mode, one slot for every key.
    fn multi_key_refusal<'a>(
        &self,
        name: &str,
        args: usize,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Option<Status> {
        if args == 0 {
            return Some(invalid(format!(
                "ERR wrong number of arguments for '{name}' command"
            )));
        }
        if args > self.max_keys {
            return Some(invalid(format!(
                "ERR {args} keys in one request; at most {} (limits.max_multibulk_len)",
                self.max_keys
            )));
        }
        self.cross_slot(keys)
    }

    /// The router a call runs through, or why it cannot run: `TRY_AGAIN` until the workers
    /// run, `NOAUTH` when the server has a password and the call does not carry it.
    fn admit(&self, ctx: &RpcContext) -> Result<&Router, Status> {
        let router = self.router.get().ok_or_else(|| status_of_error(STARTING))?;
        match router.password_ok(super::bearer(ctx)) {
            true => Ok(router),
            false => Err(status_of_error("NOAUTH Authentication required.")),
        }
    }

    /// In cluster mode, `CROSSSLOT` unless every key hashes to the first one's slot.
    fn cross_slot<'a>(&self, mut keys: impl Iterator<Item = &'a [u8]>) -> Option<Status> {
        self.routes.as_ref()?;
        let slot = simplekv_net::slot::key_slot(keys.next()?);
        keys.any(|k| simplekv_net::slot::key_slot(k) != slot)
            .then(|| status_of_error(simplekv_net::server::cluster_cmds::CROSSSLOT))
    }

    /// Runs one single-key command, RESP-style arguments (name first).
    fn keyed(
        &self,
        router: &Router,
        args: &[&[u8]],
        acks: Option<simplekv_conf::Acks>,
    ) -> impl Future<Output = Answer> + use<> {
        let (worker, partition) = router.owner_of(args[1]);
        let rx = submit(
            router,
            worker,
            Op::Keyed {
                partition,
                args: OwnedArgs::from_slices(args.iter().copied()),
            },
            acks,
        );
        let routes = self.routes.clone();
        rx.map(move |r| match r {
            Ok(p) => answer(p, &routes),
            Err(_) => Err(internal(GONE)),
        })
    }
}

/// Sends `op` to `worker`; if the worker is gone, the sender is dropped with the closure and
/// the receiver says so.
fn submit(
    router: &Router,
    worker: usize,
    op: Op,
    acks: Option<simplekv_conf::Acks>,
) -> oneshot::Receiver<Payload> {
    let (tx, rx) = oneshot::channel();
    router.submit_acks(worker, op, acks, move |p| {
        let _ = tx.send(p);
    });
    rx
}

/// Splits keys (with their positions) by owning worker.
fn by_worker<T: Clone>(router: &Router, items: &[(Vec<u8>, T)]) -> Vec<Vec<(u32, Vec<u8>, T)>> {
    let mut groups = vec![Vec::new(); router.workers()];
    for (i, (k, t)) in items.iter().enumerate() {
        let (w, _) = router.owner_of(k);
        groups[w].push((i as u32, k.clone(), t.clone()));
    }
    groups
}

/// Turns a worker's payload into a reply, or an error status.
fn answer(p: Payload, routes: &Option<SharedRoutes>) -> Answer {
    let status = |text: &str| grpc_redirect(status_of_error(text), routes);
    match p {
        Payload::Resp(bytes) => match parse_reply(bytes.as_slice()) {
            Ok(Some((Reply::Error(e), _))) => Err(status(&String::from_utf8_lossy(&e))),
            Ok(Some((r, _))) => Ok(r),
            _ => Err(internal("unreadable reply from a worker")),
        },
        Payload::Int(n) => Ok(Reply::Integer(n)),
        Payload::Ok => Ok(Reply::Simple(b"OK".to_vec())),
        Payload::Err(e) => Err(status(&e)),
        other => Err(internal(format!(
            "unexpected reply from a worker: {other:?}"
        ))),
    }
}

/// Workers redirect to the leader's RESP address; a gRPC client wants its gRPC one. A
/// leader this node's routes do not name (yet) gets TRY_AGAIN rather than a RESP address.
fn grpc_redirect(mut s: Status, routes: &Option<SharedRoutes>) -> Status {
    let Some(routes) = routes else { return s };
    if s.code.enum_value() != Ok(Code::MOVED) {
        return s;
    }
    let rt = routes.read().unwrap_or_else(|e| e.into_inner()).clone();
    let grpc = s.message.split_once(' ').and_then(|(slot, resp)| {
        let n = rt.nodes.values().find(|n| n.resp == resp)?;
        Some(format!("{slot} {}", n.grpc))
    });
    match grpc {
        Some(m) => s.message = m,
        None => {
            s = status_of_error("TRYAGAIN the partition's leader is not known here yet");
        }
    }
    s
}

/// A request's acks: `None` for the node's default; a value the service does not know is
/// refused rather than taken for the default.
fn acks_of(
    a: protobuf::EnumOrUnknown<simplekv_proto::kv::Acks>,
) -> Result<Option<simplekv_conf::Acks>, Status> {
    use simplekv_proto::kv::Acks as A;
    match a.enum_value() {
        Ok(A::ACKS_DEFAULT) => Ok(None),
        Ok(A::ACKS_NONE) => Ok(Some(simplekv_conf::Acks::None)),
        Ok(A::ACKS_LEADER) => Ok(Some(simplekv_conf::Acks::Leader)),
        Ok(A::ACKS_ALL) => Ok(Some(simplekv_conf::Acks::All)),
        Err(n) => Err(invalid(format!(
            "ERR unknown acks value {n} (ACKS_DEFAULT, ACKS_NONE, ACKS_LEADER or ACKS_ALL)"
        ))),
    }
}

/// A key or value longer than RESP would take in one argument (`limits.proto_max_bulk_len`)
/// is refused (with the error RESP's APPEND and SETRANGE give for a string grown past it).
/// Writes only: reading or deleting a long key is harmless.
fn oversize<'a>(router: &Router, mut values: impl Iterator<Item = &'a [u8]>) -> Option<Status> {
    let max = router.max_bulk_len();
    values.any(|v| v.len() as u64 > max).then(|| {
        invalid(format!(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len, {max} bytes)"
        ))
    })
}

/// A TTL the commands behind the service take (milliseconds as a signed 64-bit number).
fn ttl_checked(ms: u64, command: &str) -> Result<Vec<u8>, Status> {
    match i64::try_from(ms) {
        Ok(_) => Ok(ttl_arg(ms)),
        Err(_) => Err(invalid(format!(
            "ERR invalid expire time in '{command}' command"
        ))),
    }
}

fn ttl_arg(ms: u64) -> Vec<u8> {
    ms.to_string().into_bytes()
}

impl Kv for KvService {
    fn get(&mut self, ctx: RpcContext, req: GetRequest, sink: UnarySink<GetReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let fut = self.keyed(router, &[b"GET", &req.key], None);
        ctx.spawn(async move {
            let mut r = GetReply::new();
            match fut.await {
                Ok(Reply::Bulk(v)) => {
                    r.found = true;
                    r.value = v;
                }
                Ok(_) => {}
                Err(s) => r.status = Some(s).into(),
            }
            let _ = sink.success(r).await;
        });
    }

    fn set(&mut self, ctx: RpcContext, req: SetRequest, sink: UnarySink<SetReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let checked = oversize(router, [req.key.as_slice(), &req.value].into_iter())
            .map_or(Ok(()), Err)
            .and_then(|()| ttl_checked(req.ttl_ms, "set"))
            .and_then(|t| Ok((t, acks_of(req.acks)?)));
        let (ttl, acks) = match checked {
            Ok(x) => x,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let fut = if req.ttl_ms > 0 {
            self.keyed(router, &[b"SET", &req.key, &req.value, b"PX", &ttl], acks)
                .boxed()
        } else {
            self.keyed(router, &[b"SET", &req.key, &req.value], acks)
                .boxed()
        };
        ctx.spawn(async move {
            let mut r = SetReply::new();
            r.status = Some(match fut.await {
                Ok(_) => ok(),
                Err(s) => s,
            })
            .into();
            let _ = sink.success(r).await;
        });
    }

    fn del(&mut self, ctx: RpcContext, req: DelRequest, sink: UnarySink<DelReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let keys = req.keys.iter().map(|k| k.as_slice());
        let checked = match self.multi_key_refusal("del", req.keys.len(), keys) {
            Some(s) => Err(s),
            None => acks_of(req.acks),
        };
        let acks = match checked {
            Ok(a) => a,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let items: Vec<(Vec<u8>, ())> = req.keys.iter().map(|k| (k.clone(), ())).collect();
        let mut parts = Vec::new();
        for (w, group) in by_worker(router, &items).into_iter().enumerate() {
            if !group.is_empty() {
                let keys = group.into_iter().map(|(_, k, _)| k).collect();
                let kind = MultiKind::Del;
                parts.push(submit(router, w, Op::Del { keys, kind }, acks));
            }
        }
        let routes = self.routes.clone();
        ctx.spawn(async move {
            let mut r = DelReply::new();
            let mut status = ok();
            for p in join_all(parts).await {
                match p
                    .map_err(|_| internal(GONE))
                    .and_then(|p| answer(p, &routes))
                {
                    Ok(Reply::Integer(n)) => r.deleted += n as u64,
                    Ok(_) => {}
                    Err(s) => status = s,
                }
            }
            r.status = Some(status).into();
            let _ = sink.success(r).await;
        });
    }

    fn expire(&mut self, ctx: RpcContext, req: ExpireRequest, sink: UnarySink<ExpireReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let checked = ttl_checked(req.ttl_ms, "pexpire").and_then(|t| Ok((t, acks_of(req.acks)?)));
        let (ttl, acks) = match checked {
            Ok(x) => x,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let fut = self.keyed(router, &[b"PEXPIRE", &req.key, &ttl], acks);
        ctx.spawn(async move {
            let mut r = ExpireReply::new();
            match fut.await {
                Ok(Reply::Integer(n)) => r.applied = n == 1,
                Ok(_) => {}
                Err(s) => r.status = Some(s).into(),
            }
            let _ = sink.success(r).await;
        });
    }

    fn ttl(&mut self, ctx: RpcContext, req: TtlRequest, sink: UnarySink<TtlReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let fut = self.keyed(router, &[b"PTTL", &req.key], None);
        ctx.spawn(async move {
            let mut r = TtlReply::new();
            match fut.await {
                Ok(Reply::Integer(n)) => r.ttl_ms = n,
                Ok(_) => r.status = Some(internal("unexpected PTTL reply")).into(),
                Err(s) => r.status = Some(s).into(),
            }
            let _ = sink.success(r).await;
        });
    }

    fn m_get(&mut self, ctx: RpcContext, req: MGetRequest, sink: UnarySink<MGetReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let keys = req.keys.iter().map(|k| k.as_slice());
        if let Some(s) = self.multi_key_refusal("mget", req.keys.len(), keys) {
            return refuse(&ctx, sink, s);
        }
        let n = req.keys.len();
        let items: Vec<(Vec<u8>, ())> = req.keys.iter().map(|k| (k.clone(), ())).collect();
        let mut parts = Vec::new();
        for (w, group) in by_worker(router, &items).into_iter().enumerate() {
            if !group.is_empty() {
                let keys = group.into_iter().map(|(i, k, _)| (i, k)).collect();
                parts.push(submit(router, w, Op::MGet { keys }, None));
            }
        }
        let routes = self.routes.clone();
        ctx.spawn(async move {
            let mut r = MGetReply::new();
            let mut values = vec![MaybeValue::new(); n];
            let mut status = ok();
            for p in join_all(parts).await {
                match p {
                    Ok(Payload::Elements(es)) => {
                        for (pos, enc) in es {
                            if let (Some(slot), Ok(Some((Reply::Bulk(v), _)))) =
                                (values.get_mut(pos as usize), parse_reply(&enc))
                            {
                                slot.found = true;
                                slot.value = v;
                            }
                        }
                    }
                    Ok(other) => {
                        if let Err(s) = answer(other, &routes) {
                            status = s;
                        }
                    }
                    Err(_) => status = internal(GONE),
                }
            }
            // Values only with a whole answer: a client that misses the status must not read
            // "all missing".
            if status.code.enum_value() == Ok(Code::OK) {
                r.values = values;
            }
            r.status = Some(status).into();
            let _ = sink.success(r).await;
        });
    }

    fn m_set(&mut self, ctx: RpcContext, req: MSetRequest, sink: UnarySink<MSetReply>) {
        let router = match self.admit(&ctx) {
            Ok(r) => r,
            Err(s) => return refuse(&ctx, sink, s),
        };
        let acks = req.acks;
        let items: Vec<(Vec<u8>, Vec<u8>)> =
            req.pairs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let mut parts = Vec::new();
        let keys = items.iter().map(|(k, _)| k.as_slice());
        let args = items.iter().flat_map(|(k, v)| [k.as_slice(), v.as_slice()]);
        let refusal = self
            .multi_key_refusal("mset", items.len() * 2, keys)
            .or_else(|| oversize(router, args));
        let checked = match refusal {
            Some(s) => Err(s),
            None => acks_of(acks),
        };
        let acks = match checked {
            Ok(a) => a,
            Err(s) => return refuse(&ctx, sink, s),
        };
        for (w, group) in by_worker(router, &items).into_iter().enumerate() {
            if !group.is_empty() {
                let pairs = group
                    .iter()
                    .map(|(_, k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let kind = MultiKind::MSet;
                parts.push(submit(router, w, Op::MSet { pairs, kind }, acks));
            }
        }
        let routes = self.routes.clone();
        ctx.spawn(async move {
            let mut status = ok();
            for p in join_all(parts).await {
                if let Err(s) = p
                    .map_err(|_| internal(GONE))
                    .and_then(|p| answer(p, &routes))
                {
                    status = s;
                }
            }
            let mut r = MSetReply::new();
            r.status = Some(status).into();
            let _ = sink.success(r).await;
        });
    }
}

//! The gRPC services of a node, served by grpcio on its own port.
mod kv;
mod status;

use std::sync::{Arc, OnceLock};

use grpcio::{Environment, Server, ServerBuilder, ServerCredentials};
use simplekv_net::server::cluster::RouteTable;
use simplekv_net::server::router::Router;

pub use kv::KvService;
pub use status::status_of_error;

/// The node's gRPC environment: one completion queue and one thread, named `skv-grpc-0`,
/// shared by the KV and replication services, the replication client streams (snapshot
/// copies included), the controller's log-end probe — and the replication driver, which runs
/// on that thread as a future (`crate::repl`).
///
/// One environment, not one per use: gRPC's epoll engine lets only one thread at a time wait
/// in `epoll_wait` for all of a process's connections, and hands that role from thread to
/// thread through a condition variable. With three environments (server, replication
/// clients, probe) most replication messages paid for such a hand-off, a futex wake and a
/// context switch. The handlers only forward to workers or to the driver, whose work per
/// message is small (no file I/O, no blocking), so one thread keeps up, and it leaves the
/// cores to the pinned workers. Its load is the one thing to watch on nodes with many
/// partitions (`top -H`: `skv-grpc-0`).
pub fn grpc_env() -> Arc<Environment> {
    Arc::new(
        grpcio::EnvBuilder::new()
            .cq_count(1)
            .name_prefix("skv-grpc")
            .build(),
    )
}

/// The metadata key a call carries the password (KV service) or the cluster secret
/// (replication) in, as `Bearer <value>`.
pub const AUTH_HEADER: &str = "authorization";

/// The value a call carries in [`AUTH_HEADER`], if any.
pub fn bearer<'a>(ctx: &'a grpcio::RpcContext) -> Option<&'a [u8]> {
    ctx.request_headers()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(AUTH_HEADER))
        .map(|(_, v)| v.strip_prefix(b"Bearer ").unwrap_or(v))
}

pub use simplekv_net::server::router::same_secret;

/// Options for a call that carries `secret` (the cluster secret, or a client's password),
/// plain options without one.
pub fn secret_opt(secret: Option<&str>) -> grpcio::CallOption {
    let o = grpcio::CallOption::default();
    match secret {
        Some(s) => {
            let mut m = grpcio::MetadataBuilder::new();
            // Callers keep to printable ASCII, which metadata takes (`cluster.secret` is
            // checked so; the CLI's AUTH keeps only such passwords).
            let _ = m.add_str(AUTH_HEADER, &format!("Bearer {s}"));
            o.headers(m.build())
        }
        None => o,
    }
}

/// Why the gRPC port could not be listened on (gRPC itself says only `BindFail`).
pub const BIND_FAILED: &str = "the address is in use, or not an address of this machine";

/// The node's current routes, kept up to date by the views thread (cluster mode).
pub type SharedRoutes = Arc<std::sync::RwLock<Arc<RouteTable>>>;

/// What the KV service needs to know of the node.
#[derive(Clone)]
pub struct KvOptions {
    /// Cluster mode: the routes (one slot per multi-key request, gRPC redirects).
    pub routes: Option<SharedRoutes>,
    /// The largest request accepted, in bytes: the RESP query buffer limit
    /// (`limits.client_query_buffer_limit`), so both front doors take the same values.
    pub max_request: u64,
    /// `limits.max_multibulk_len`: a request names at most this many keys (and values) plus
    /// the command, as a RESP command has at most this many arguments.
    pub max_args: u64,
}

pub struct GrpcServer {
    server: Server,
    addr: String,
}

impl GrpcServer {
    /// Binds `addr` (host:port; port 0 picks a free one) and starts serving; requests are
    /// answered TRY_AGAIN until `router` is set.
    pub fn start(
        addr: &str,
        router: Arc<OnceLock<Router>>,
        kv: KvOptions,
    ) -> Result<GrpcServer, String> {
        GrpcServer::start_with(addr, router, kv, Vec::new(), grpc_env())
    }

    /// As `start`, serving `extra` services (replication) on the same port too.
    pub fn start_with(
        addr: &str,
        router: Arc<OnceLock<Router>>,
        kv: KvOptions,
        extra: Vec<grpcio::Service>,
        env: Arc<Environment>,
    ) -> Result<GrpcServer, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .ok_or_else(|| format!("bad address {addr:?}"))?;
        let max_keys = usize::try_from(kv.max_args.saturating_sub(1)).unwrap_or(usize::MAX);
        let service =
            simplekv_proto::kv_grpc::create_kv(KvService::new(router, kv.routes, max_keys));
        // No HTTP/2 BDP probing: its PING frames follow data frames, and on replication
        // streams (many small messages on loopback or a LAN) they only add frames and
        // completion-queue wake-ups.
        // No SO_REUSEPORT (gRPC's default): with it a second process given the same port
        // binds it too and takes part of the connections, instead of failing to start.
        // Requests as large as a RESP query may be (gRPC's default is 4 MiB); replies are not
        // limited (a value is at most `limits.max_value_len`).
        let max_request = (kv.max_request + (64 << 10)).min(i32::MAX as u64) as i32;
        let args = grpcio::ChannelBuilder::new(env.clone())
            .http2_bdp_probe(false)
            .reuse_port(false)
            .max_receive_message_len(max_request)
            .build_args();
        let mut builder = ServerBuilder::new(env)
            .channel_args(args)
            .register_service(service);
        for s in extra {
            builder = builder.register_service(s);
        }
        let mut server = builder.build().map_err(|e| e.to_string())?;
        let port = server
            .add_listening_port(format!("{host}:{port}"), ServerCredentials::insecure())
            .map_err(|e| match e {
                grpcio::Error::BindFail(_) => BIND_FAILED.to_string(),
                e => e.to_string(),
            })?;
        server.start();
        Ok(GrpcServer {
            server,
            addr: format!("{host}:{port}"),
        })
    }

    pub fn local_addr(&self) -> String {
        self.addr.clone()
    }

    pub fn stop(mut self) {
        let _ = futures::executor::block_on(self.server.shutdown());
    }
}

//! The gRPC services of a node, served by grpcio on its own port.
mod kv;
mod status;

use std::sync::{Arc, OnceLock};

use grpcio::{Environment, Server, ServerBuilder, ServerCredentials};
use simplekv_net::server::router::Router;

pub use kv::KvService;
pub use status::status_of_error;

pub struct GrpcServer {
    server: Server,
    addr: String,
}

impl GrpcServer {
    /// Binds `addr` (host:port; port 0 picks a free one) and starts serving; requests are
    /// answered TRY_AGAIN until `router` is set.
    pub fn start(addr: &str, router: Arc<OnceLock<Router>>) -> Result<GrpcServer, String> {
        GrpcServer::start_with(addr, router, Vec::new())
    }

    /// As `start`, serving `extra` services (replication) on the same port too.
    pub fn start_with(
        addr: &str,
        router: Arc<OnceLock<Router>>,
        extra: Vec<grpcio::Service>,
    ) -> Result<GrpcServer, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .ok_or_else(|| format!("bad address {addr:?}"))?;
        // One completion-queue thread: the handlers only forward to workers and wait on
        // futures, so more threads would only compete with the pinned workers for cores.
        let env = Arc::new(Environment::new(1));
        let service = simplekv_proto::kv_grpc::create_kv(KvService::new(router));
        // No HTTP/2 BDP probing: its PING frames follow data frames, and on replication
        // streams (many small messages on loopback or a LAN) they only add frames and
        // completion-queue wake-ups.
        let args = grpcio::ChannelBuilder::new(env.clone())
            .http2_bdp_probe(false)
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
            .map_err(|e| e.to_string())?;
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

//! A simplekv node: the RESP server and, when `cluster.grpc_port` is set, the gRPC service.
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use log::info;
use simplekv_conf::Config;
use simplekv_net::{ServerError, ServerHandle, ShutdownTrigger};

use crate::grpc::GrpcServer;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(
        "cluster.zk is set, but serving as a cluster node is not available in this version yet (its controller and replication are being built); remove cluster.zk to run a standalone server"
    )]
    ClusterModeUnavailable,
    #[error("cannot start the gRPC service on {addr}: {reason}")]
    Grpc { addr: String, reason: String },
}

pub struct Node {
    server: ServerHandle,
    grpc: Option<GrpcServer>,
}

impl Node {
    pub fn start(config: Config, config_file: Option<PathBuf>) -> Result<Node, NodeError> {
        // Refuse rather than run standalone under a cluster configuration: a node that silently
        // ignored its cluster would take writes no replica ever sees.
        if config.is_cluster() {
            return Err(NodeError::ClusterModeUnavailable);
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
            Some(addr) => match GrpcServer::start(&addr, router.clone()) {
                Ok(g) => {
                    info!("gRPC KV service on {}", g.local_addr());
                    Some(g)
                }
                Err(reason) => return Err(NodeError::Grpc { addr, reason }),
            },
            None => None,
        };
        let server = match simplekv_net::start(config, config_file) {
            Ok(s) => s,
            Err(e) => {
                if let Some(g) = grpc {
                    g.stop();
                }
                return Err(e.into());
            }
        };
        let _ = router.set(server.router());
        Ok(Node { server, grpc })
    }

    pub fn resp_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn grpc_addr(&self) -> Option<String> {
        self.grpc.as_ref().map(|g| g.local_addr())
    }

    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.server.shutdown_trigger()
    }

    /// Waits for the RESP server to stop (signal or SHUTDOWN), then stops the gRPC service.
    pub fn join(self) {
        self.server.join();
        if let Some(g) = self.grpc {
            g.stop();
        }
    }
}

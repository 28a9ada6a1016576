//! simplekv's data plane: pinned worker threads, each with a mio event loop, the RESP2 codec,
//! the command table and the router between workers.
#![warn(clippy::unwrap_used)]

pub mod cmd;
pub mod glob;
pub mod resp;
pub mod server;
pub mod slot;

pub use server::{
    ClusterBoot, ServerError, ServerHandle, ShutdownTrigger, check_bind, start, start_node,
};

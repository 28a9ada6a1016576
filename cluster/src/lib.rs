//! simplekv's control plane and the services beside the RESP data plane.
//!
//! - [`node`]: one simplekv process — the RESP server (from `net`) plus the gRPC services on
//!   their own port, started and stopped together.
//! - [`grpc`]: the gRPC KV service. Its requests reach the owning worker through the same router
//!   messages as RESP commands, so behaviour and errors match RESP.
//! - [`admin`]: `simplekv cluster create` and `status`.
//! - [`assign`]: the controller's placement and election rules (pure functions).
//! - [`control`]: broker registration and controller election in ZooKeeper.
//! - [`zk`]: ZooKeeper sessions rooted at the cluster's chroot, and a local ZooKeeper launcher
//!   for `simplekv cluster local` and the multi-process tests.
#![warn(clippy::unwrap_used)]

pub mod admin;
pub mod assign;
pub mod control;
pub mod grpc;
pub mod node;
pub mod repl;
pub mod zk;

pub use node::{Node, NodeError, NodeShutdown};

//! The control plane's ZooKeeper operations: broker registration, controller election, and the
//! node's control thread that uses them (ZooKeeper callbacks only post messages to it).
pub mod api;
pub mod controller;
pub mod election;
pub mod registry;
pub mod thread;

pub use api::{ClusterView, ControlRequest, LogEndProbe, PartitionView, ViewSink};
pub use thread::{ControlConfig, ControlError, ControlHandle, ControlSender, spawn};

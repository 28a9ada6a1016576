//! The control plane's ZooKeeper operations: broker registration and controller election.
//! They run on the node's control thread (ZooKeeper callbacks only post messages to it).
pub mod election;
pub mod registry;

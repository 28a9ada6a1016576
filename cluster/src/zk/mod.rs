//! ZooKeeper access for the control plane: a local server launcher (for `cluster local` and
//! tests) and sessions rooted at the cluster's chroot.
pub mod launcher;
pub mod session;

pub use launcher::{LaunchError, LocalZooKeeper};
pub use session::{Session, ZkFailure, ZkResult};

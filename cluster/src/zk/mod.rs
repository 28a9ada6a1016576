//! ZooKeeper access for the control plane: a local server launcher (for `cluster local` and
//! tests), sessions rooted at the cluster's chroot, and the layout of the cluster's znodes.
pub mod grant;
pub mod launcher;
pub mod layout;
pub mod session;

pub use launcher::{LaunchError, LocalZooKeeper};
pub use session::{Session, ZkFailure, ZkResult};

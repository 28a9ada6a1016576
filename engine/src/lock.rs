//! An exclusive lock on a data directory, so that two processes never append to the same log.
//! `flock` locks die with the process, so a `kill -9` never leaves a stale lock behind.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, OpenError};

pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at_open(&path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(OpenError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            return Err(err).at_open(&path);
        }
        // The pid is for people looking at the directory; the lock itself is the flock.
        file.set_len(0).at_open(&path)?;
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        // The full-disk tests of this binary fork `mount`: a child holds a copy of the lock's
        // descriptor until it execs, and the lock would still be held after the drop.
        let _turn = crate::test_tmpfs::serial();
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(OpenError::Locked { .. })
        ));
        drop(a);
        DirLock::acquire(dir.path()).unwrap();
    }
}

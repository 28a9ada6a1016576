//! A small tmpfs for full-disk tests, unmounted on drop. Mounting needs root (CI runs as root);
//! `Tmpfs::mount_or_skip` says why a test cannot run elsewhere. Shared by the engine's and the
//! server's full-disk tests (`#[path]`-included; keep it free of crate-specific code).
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
    /// One tmpfs test at a time in a test binary: mount and umount fork, and a child holds
    /// copies of every descriptor of the process until it execs, a store's directory lock
    /// among them, so another test's reopen of its store could find it still locked.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The same turn for a test of the binary that opens a store without a tmpfs (its reopen
/// could otherwise find its lock held by a child another test's mount forked).
#[allow(dead_code)] // not every binary that includes this file has such a test
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        // A test that failed while holding it poisons it; the next one can still run.
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
            _serial: serial,
        })
    }

    /// Mounts one, or returns `None` after saying why the test is skipped (not root). As root a
    /// failure to mount is a test failure.
    pub fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size) {
            Ok(fs) => Some(fs),
            // SAFETY: geteuid has no preconditions.
            Err(e) if unsafe { libc::geteuid() } == 0 => {
                panic!("cannot mount a tmpfs as root: {e}")
            }
            Err(e) => {
                eprintln!("skipped: mounting a tmpfs needs root ({e})");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a file `name` that takes every free byte of the file system; returns its path
    /// (remove it to give the space back).
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![1u8; 64 << 10];
        let mut size = chunk.len();
        while size > 0 {
            match f.write(&chunk[..size]) {
                Ok(n) if n > 0 => {}
                _ => size /= 2,
            }
        }
        path
    }

    /// `fill`, then gives back `free` bytes: the file system is left with about that much
    /// free.
    pub fn fill_leaving(&self, name: &str, free: u64) -> PathBuf {
        let path = self.fill(name);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("filler");
        let len = f.metadata().expect("filler metadata").len();
        f.set_len(len.saturating_sub(free))
            .expect("shrink the filler");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

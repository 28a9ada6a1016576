//! A small file system of its own per node, so its disk can fill up.
//!
//! Each node's data directory lives on a `tmpfs` of [`DISK_BYTES`] mounted at
//! `<run>/node<i>-disk/` (data in `data/`). The disk-full fault writes a filler file
//! (`filler`, beside `data/`) that takes every free block, holds, then deletes it: appends,
//! segment rolls, hint files and fsyncs of the node fail with `ENOSPC` meanwhile. tmpfs is
//! used because it needs no block device (there is no loop or device-mapper support to count
//! on here) and its size limit is exact.
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of each node's file system: far above what a run writes (a few MiB), so only the
/// filler ever fills it.
pub const DISK_BYTES: u64 = 512 << 20;

pub struct Disk {
    mount: PathBuf,
    mounted: bool,
}

/// Runs `cmd args`; its stderr is the error when it fails.
pub(super) fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Disk {
    /// Mounts a fresh tmpfs at `mount` (created if missing).
    pub fn mount(mount: &Path) -> Result<Disk, String> {
        std::fs::create_dir_all(mount).map_err(|e| format!("{}: {e}", mount.display()))?;
        let m = mount.to_string_lossy();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={DISK_BYTES},mode=0755"),
                "tmpfs",
                &m,
            ],
        )?;
        Ok(Disk {
            mount: mount.to_path_buf(),
            mounted: true,
        })
    }

    /// The node's data directory on this file system.
    pub fn data_dir(&self) -> PathBuf {
        self.mount.join("data")
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    fn free_bytes(&self) -> Result<u64, String> {
        let c = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(format!(
                "statvfs {}: {}",
                self.mount.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Fills the file system: a filler file takes every free byte (writes until `ENOSPC`).
    /// Returns the bytes it took.
    pub fn fill(&self) -> Result<u64, String> {
        let path = self.filler();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut total = 0u64;
        // Big chunks first, then smaller ones for the last partial megabyte.
        let mut size = chunk.len();
        while size > 0 {
            match f.write(&chunk[..size]) {
                Ok(0) => size /= 2,
                Ok(n) => total += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => size /= 2,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
            if total > 2 * DISK_BYTES {
                return Err(format!(
                    "{}: wrote {total} bytes without filling it",
                    path.display()
                ));
            }
        }
        let left = self.free_bytes()?;
        if left > 0 {
            return Err(format!(
                "{}: {left} bytes still free after the filler",
                self.mount.display()
            ));
        }
        Ok(total)
    }

    /// Frees what [`Disk::fill`] took.
    pub fn free(&self) -> Result<(), String> {
        match std::fs::remove_file(self.filler()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.filler().display())),
        }
    }

    /// Whether the filler is in place.
    pub fn is_full(&self) -> bool {
        self.filler().exists()
    }

    /// Copies the node's data to `to` (before unmounting a run that is kept).
    pub fn copy_data(&self, to: &Path) -> Result<(), String> {
        let from = self.data_dir();
        if !from.exists() {
            return Ok(());
        }
        run(
            "cp",
            &["-a", &from.to_string_lossy(), &to.to_string_lossy()],
        )
    }

    /// Unmounts (lazily, so a process still holding files does not keep it busy).
    pub fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        let r = run("umount", &["-l", &self.mount.to_string_lossy()]);
        let _ = std::fs::remove_dir(&self.mount);
        r
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_takes_every_byte_and_free_gives_them_back() {
        if super::super::net::Net::unavailable().is_some() {
            eprintln!("skipped: not root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let disk = Disk::mount(&tmp.path().join("d")).expect("mount tmpfs");
        std::fs::create_dir_all(disk.data_dir()).expect("data dir");
        let before = disk.free_bytes().expect("statvfs");
        assert!(before > DISK_BYTES / 2);
        let took = disk.fill().expect("fill");
        assert!(took + (1 << 20) >= before, "took {took} of {before}");
        assert!(disk.is_full());
        let e = std::fs::write(disk.data_dir().join("x"), vec![1u8; 64 << 10])
            .expect_err("a full disk accepts no write");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        disk.free().expect("free");
        // A process another test forks meanwhile holds a copy of the filler's descriptor
        // until it execs, and tmpfs frees an unlinked file's pages only at its last close:
        // on a busy machine the space can come back a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while disk.free_bytes().expect("statvfs") < before / 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the filler's space never came back"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!disk.is_full());
        std::fs::write(disk.data_dir().join("x"), vec![1u8; 64 << 10]).expect("write after free");
    }
}

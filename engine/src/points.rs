//! Recovery points: how far each partition's log is known to be fsynced.
//!
//! Opening a log cuts a bad record at its end as a torn write: the last thing written before
//! a crash may be half on disk, and nothing acknowledged was lost if it had not been fsynced.
//! From the bytes alone a torn write and damage to records that were fsynced long ago can look
//! the same (a block of zeros where the device lost a write, a tail of zeros). A recovery point
//! says "the first `synced` bytes of the segment file with this `file_id` were fsynced": a bad
//! record below it, or a file shorter than it, is damage and is refused like damage anywhere
//! else in the log (`storage.repair` drops it, saying so), never cut with a warning.
//!
//! A point stays true once written: the bytes of a segment below what was fsynced never
//! change, and every cut of a log gives the segment a new random file id (written and fsynced
//! before the cut), so a point for the old id matches nothing any more. Points are therefore
//! safe to keep however old they are; they only protect less than a newer one would.
//!
//! Each server worker writes the points of the partitions it owns to a file of its own,
//! `recovery-points/worker-W.points`, replaced atomically (a temporary file, fsynced, renamed,
//! the directory fsynced). Layout (little endian): magic `SKVPNTS1`, count `u32`, then per
//! point partition `u32`, file id `u64`, synced bytes `u64`; then a CRC32 of everything before
//! it. A file that does not check is ignored (no point is then a cut, as before points).
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::record::{u32_at, u64_at};

/// Directory (inside the data directory) holding the recovery point files.
pub const POINTS_DIR: &str = "recovery-points";
const MAGIC: &[u8; 8] = b"SKVPNTS1";
const ENTRY_LEN: usize = 20;

/// The first `synced` bytes of segment file `file_id` of `partition` were fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub partition: u32,
    pub file_id: u64,
    pub synced: u64,
}

/// The path of `worker`'s recovery point file.
pub fn points_path(dir: &Path, worker: u32) -> PathBuf {
    dir.join(format!("worker-{worker}.points"))
}

fn worker_of(name: &str) -> Option<u32> {
    name.strip_prefix("worker-")?
        .strip_suffix(".points")?
        .parse()
        .ok()
}

fn encode(points: &[RecoveryPoint]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + points.len() * ENTRY_LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(points.len() as u32).to_le_bytes());
    for p in points {
        b.extend_from_slice(&p.partition.to_le_bytes());
        b.extend_from_slice(&p.file_id.to_le_bytes());
        b.extend_from_slice(&p.synced.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Vec<RecoveryPoint>> {
    if b.len() < 16 || &b[..8] != MAGIC {
        return None;
    }
    let n = u32_at(b, 8) as usize;
    let body = 12usize.checked_add(n.checked_mul(ENTRY_LEN)?)?;
    if b.len() != body + 4 || crc32fast::hash(&b[..body]) != u32_at(b, body) {
        return None;
    }
    Some(
        (0..n)
            .map(|i| {
                let at = 12 + i * ENTRY_LEN;
                RecoveryPoint {
                    partition: u32_at(b, at),
                    file_id: u64_at(b, at + 4),
                    synced: u64_at(b, at + 12),
                }
            })
            .collect(),
    )
}

/// Replaces `worker`'s file with `points` (durably: see the module docs). The temporary file
/// has a name of its own per call, so two writes racing (a periodic one still running when
/// the last one at shutdown starts) cannot mix their bytes; either may end up the file, and
/// either is true.
pub fn write(dir: &Path, worker: u32, points: &[RecoveryPoint]) -> io::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            fsutil::sync_dir(parent)?;
        }
    }
    let path = points_path(dir, worker);
    let tmp = dir.join(format!(
        "worker-{worker}.points.{:016x}.tmp",
        fsutil::random_id()
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&encode(points))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        fsutil::sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Recovery points by partition.
pub type ByPartition = BTreeMap<u32, Vec<RecoveryPoint>>;

/// Every point of every worker's file, by partition (a partition moves between workers when
/// their count changes, so it may have points in several files: all are true). Files that do
/// not check are skipped and named in the second list. A missing directory has none.
pub fn read_dir(dir: &Path) -> io::Result<(ByPartition, Vec<PathBuf>)> {
    let mut by_partition = ByPartition::new();
    let mut bad = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((by_partition, bad)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(_) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(worker_of)
        else {
            continue;
        };
        match decode(&fs::read(&path)?) {
            Some(points) => {
                for p in points {
                    by_partition.entry(p.partition).or_default().push(p);
                }
            }
            None => bad.push(path),
        }
    }
    Ok((by_partition, bad))
}

/// Removes the files of workers `keep` and above and any temporary file a crash left. Their
/// points are true but no worker updates them any more.
pub fn remove_stale(dir: &Path, keep: u32) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut removed = false;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let stale = name.ends_with(".tmp") || worker_of(name).is_some_and(|w| w >= keep);
        if stale {
            fs::remove_file(&path)?;
            removed = true;
        }
    }
    if removed {
        fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// The most bytes the points in `points` say segment file `file_id` has fsynced.
pub fn synced_of(points: &[RecoveryPoint], file_id: u64) -> Option<u64> {
    points
        .iter()
        .filter(|p| p.file_id == file_id)
        .map(|p| p.synced)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(partition: u32, file_id: u64, synced: u64) -> RecoveryPoint {
        RecoveryPoint {
            partition,
            file_id,
            synced,
        }
    }

    #[test]
    fn points_written_read_back_by_partition_across_worker_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(POINTS_DIR);
        write(&dir, 0, &[pt(0, 11, 4096), pt(2, 12, 100)]).unwrap();
        write(&dir, 1, &[pt(1, 13, 64), pt(2, 12, 300)]).unwrap();
        let (by, bad) = read_dir(&dir).unwrap();
        assert!(bad.is_empty());
        assert_eq!(by[&0], vec![pt(0, 11, 4096)]);
        assert_eq!(
            synced_of(&by[&2], 12),
            Some(300),
            "the furthest point counts"
        );
        assert_eq!(
            synced_of(&by[&2], 99),
            None,
            "another file id matches nothing"
        );
        // Replaced whole.
        write(&dir, 0, &[pt(3, 14, 1)]).unwrap();
        let (by, _) = read_dir(&dir).unwrap();
        assert!(!by.contains_key(&0));
        assert_eq!(by[&3], vec![pt(3, 14, 1)]);
    }

    #[test]
    fn a_damaged_or_cut_file_is_skipped_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(POINTS_DIR);
        write(&dir, 0, &[pt(0, 11, 4096), pt(1, 12, 100)]).unwrap();
        let path = points_path(&dir, 0);
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x04;
            fs::write(&path, &b).unwrap();
            let (by, bad) = read_dir(&dir).unwrap();
            assert!(by.is_empty(), "byte {i} flipped");
            assert_eq!(bad, vec![path.clone()]);
        }
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            assert!(read_dir(&dir).unwrap().0.is_empty(), "cut at {len}");
        }
        assert!(decode(&[b"SKVPNTS1".as_slice(), &[0xff; 8]].concat()).is_none());
    }

    #[test]
    fn stale_worker_files_and_temporaries_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(POINTS_DIR);
        for w in 0..4 {
            write(&dir, w, &[pt(w, 1, 1)]).unwrap();
        }
        fs::write(dir.join("worker-0.points.00ab.tmp"), b"x").unwrap();
        remove_stale(&dir, 2).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["worker-0.points", "worker-1.points"]);
        remove_stale(&tmp.path().join("absent"), 0).unwrap();
        assert!(read_dir(&tmp.path().join("absent")).unwrap().0.is_empty());
    }
}

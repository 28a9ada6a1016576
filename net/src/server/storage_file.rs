//! `DIR/simplekv.storage`: the id of a cluster node's data, and the partitions it holds.
//!
//! A replica is in sync for the controller as long as it has what it had when it joined the
//! ISR. A node restarted on a wiped or replaced disk, or with partition directories gone,
//! has less, and nothing in ZooKeeper says so: it registers like any restarted node. So the
//! data carries an id, random, that the node registers with; the partition state records the
//! id each in-sync replica joined with, and a replica registered with another id is not in
//! sync any more (the controller's `Nodes::wiped`). The id is new whenever the directory may
//! lack records the node had: a new directory (or one from before ids existed), a partition
//! the file lists whose directory is gone (refused without `storage.repair`), and a start
//! with `storage.repair = true` that drops damaged records (a held partition whose log does
//! not open without repairing). A `storage.repair` left on when nothing is damaged keeps the
//! id: a whole cluster restarted so would otherwise find no replica in sync.
use std::path::Path;

use log::warn;
use simplekv_engine::{Options, Store};

use super::{ServerError, partition_dir};

pub const STORAGE_FILE: &str = "simplekv.storage";

/// What the file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFile {
    pub id: u64,
    /// The partitions whose directories the node had opened (all it replicates) when the
    /// file was last written.
    pub held: Vec<u32>,
}

impl StorageFile {
    fn encode(&self) -> String {
        let held: Vec<String> = self.held.iter().map(|p| p.to_string()).collect();
        format!("id = {:016x}\nheld = {}\n", self.id, held.join(","))
    }

    fn decode(text: &str) -> Option<StorageFile> {
        let value = |key: &str| super::layout_value(text, key);
        let id = u64::from_str_radix(&value("id")?, 16).ok()?;
        let held = value("held")?;
        let held = held
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(StorageFile { id, held })
    }
}

/// The storage id a cluster node registers with, checked and written before it registers
/// (the caller holds the directory's lock). See the module docs for when it is new. `opts`:
/// the engine options the partitions open with (a repair is looked for with them).
pub fn storage_identity(dir: &Path, repair: bool, opts: &Options) -> Result<u64, ServerError> {
    let path = dir.join(STORAGE_FILE);
    let bad = |reason: String| ServerError::DataDir {
        path: path.clone(),
        reason,
    };
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Some(StorageFile::decode(&text).ok_or_else(|| {
            bad("unreadable (expected `id = <16 hex digits>` and `held = <partitions>`); restore it, or start with storage.repair = true to take a new storage id".into())
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(bad(e.to_string())),
    };
    let found = match (found, repair) {
        (Some(Err(_)), true) => None,
        (Some(r), _) => Some(r?),
        (None, _) => None,
    };
    if let Some(f) = &found {
        let missing: Vec<u32> = f
            .held
            .iter()
            .copied()
            .filter(|&p| !partition_dir(dir, p).exists())
            .collect();
        if !missing.is_empty() && !repair {
            let names: Vec<String> = missing.iter().take(8).map(|p| format!("{p:05}")).collect();
            return Err(ServerError::DataDir {
                path: dir.join("partitions"),
                reason: format!(
                    "partition directories {}{} are missing (deleted or lost?), and this node may be an in-sync replica of them: restore them, or start with storage.repair = true to take them up empty under a new storage id (the node then leaves their ISRs and copies them from their leaders)",
                    names.join(", "),
                    if missing.len() > names.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ),
            });
        }
        let damaged = match (missing.first(), repair) {
            (Some(&p), _) => Some(p),
            (None, true) => f.held.iter().copied().find(|&p| needs_repair(dir, p, opts)),
            (None, false) => None,
        };
        match damaged {
            None => return Ok(f.id),
            Some(p) => warn!(
                "{}: storage.repair = true and partition {p} is missing or damaged: this node's data takes a new storage id",
                path.display()
            ),
        }
    }
    let id = loop {
        // Zero is kept out so that a reader never mistakes an id for a missing one.
        let id = fastrand::u64(1..);
        if found.as_ref().is_none_or(|f| f.id != id) {
            break id;
        }
    };
    match &found {
        Some(f) => warn!(
            "{}: new storage id {id:016x} (was {:016x}): this node counts as in sync for no partition until it has caught up again",
            path.display(),
            f.id
        ),
        None => log::info!("{}: new storage id {id:016x}", path.display()),
    }
    let held = found.map(|f| f.held).unwrap_or_default();
    write(dir, &StorageFile { id, held })?;
    Ok(id)
}

/// Whether partition `p`'s log opens only by dropping damaged records (it does not open
/// without `repair`; a torn tail of the newest segment is cut either way and is not damage).
///
/// Every segment is read whole, hint files or not: a hint describes its records without
/// checking them, and the start's own open (with `repair`, after this one took the shutdown
/// hints away) may read them whole and drop what is damaged, under a storage id that a check
/// through the hints would have kept.
fn needs_repair(dir: &Path, p: u32, opts: &Options) -> bool {
    let strict = Options {
        repair: false,
        use_hints: false,
        ..opts.clone()
    };
    Store::open(partition_dir(dir, p), strict).is_err()
}

/// Records the partitions the node opened, once their directories exist.
pub fn record_held(dir: &Path, id: u64, held: &[u32]) -> Result<(), ServerError> {
    write(
        dir,
        &StorageFile {
            id,
            held: held.to_vec(),
        },
    )
}

fn write(dir: &Path, f: &StorageFile) -> Result<(), ServerError> {
    let err = |path: &Path, e: std::io::Error| ServerError::DataDir {
        path: path.to_path_buf(),
        reason: format!("cannot write the storage id: {e}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let tmp = dir.join(format!("{STORAGE_FILE}.tmp"));
    let path = dir.join(STORAGE_FILE);
    std::fs::write(&tmp, f.encode()).map_err(|e| err(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_dirs(dir: &Path, parts: &[u32]) {
        for &p in parts {
            std::fs::create_dir_all(partition_dir(dir, p)).unwrap();
        }
    }

    fn opts() -> Options {
        Options {
            segment_size: 4096,
            ..Options::default()
        }
    }

    #[test]
    fn the_id_stays_until_the_data_may_have_lost_something() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data");
        let id = |repair: bool| storage_identity(&dir, repair, &opts());
        let first = id(false).unwrap();
        assert_ne!(first, 0);
        assert_eq!(id(false).unwrap(), first, "stable");
        held_dirs(&dir, &[0, 3]);
        record_held(&dir, first, &[0, 3]).unwrap();
        assert_eq!(id(false).unwrap(), first);
        // storage.repair left on with nothing to repair keeps it.
        assert_eq!(id(true).unwrap(), first);
        // A held partition's directory is gone: refused, then a new id with repair.
        std::fs::remove_dir_all(partition_dir(&dir, 3)).unwrap();
        let e = id(false).unwrap_err().to_string();
        assert!(
            e.contains("00003 are missing") && e.contains("storage.repair"),
            "{e}"
        );
        let second = id(true).unwrap();
        assert_ne!(second, first);
        held_dirs(&dir, &[3]);
        assert_eq!(id(false).unwrap(), second);
        assert_eq!(id(true).unwrap(), second);
        // A record damaged in an older segment: repairing drops it, so a new id; without
        // repair the id stays (the partition's open refuses to start, later).
        {
            let mut s = Store::open(partition_dir(&dir, 0), opts()).unwrap();
            for i in 0..200u32 {
                s.put(format!("key{i}").as_bytes(), &[b'v'; 64], None)
                    .unwrap();
                s.commit().unwrap();
            }
        }
        let mut logs: Vec<_> = std::fs::read_dir(partition_dir(&dir, 0))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        assert!(logs.len() > 2, "{logs:?}");
        let mut bytes = std::fs::read(&logs[0]).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(&logs[0], bytes).unwrap();
        assert_eq!(id(false).unwrap(), second);
        let third = id(true).unwrap();
        assert_ne!(third, second);
        // The start's own open repairs it (drops from the damage on): nothing left to repair.
        let repair = Options {
            repair: true,
            ..opts()
        };
        drop(Store::open(partition_dir(&dir, 0), repair).unwrap());
        assert_eq!(id(true).unwrap(), third);
        let fourth = new_id_after_damage_under_a_shutdown_hint(&dir, third);
        // A wiped directory: a new id.
        std::fs::remove_dir_all(&dir).unwrap();
        let fifth = id(false).unwrap();
        assert!(![first, second, third, fourth].contains(&fifth));
    }

    /// Damage in the active segment of a partition closed cleanly, under its shutdown hint
    /// (which describes records without checking them), still takes a new id on repair.
    fn new_id_after_damage_under_a_shutdown_hint(dir: &Path, third: u64) -> u64 {
        let pdir = partition_dir(dir, 3);
        let mut s = Store::open(&pdir, opts()).unwrap();
        for i in 0..20u32 {
            s.put(format!("k{i}").as_bytes(), &[b'w'; 64], None)
                .unwrap();
            s.commit().unwrap();
        }
        s.sync().unwrap();
        assert!(s.close_with_shutdown_hint(0).unwrap());
        let log = std::fs::read_dir(&pdir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .unwrap();
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[simplekv_engine::segment::SEGMENT_HEADER_LEN + 150] ^= 0xff;
        std::fs::write(&log, bytes).unwrap();
        assert_eq!(
            storage_identity(dir, false, &opts()).unwrap(),
            third,
            "kept without repair (the partition's own open decides)"
        );
        let fourth = storage_identity(dir, true, &opts()).unwrap();
        assert_ne!(fourth, third, "repair of damage under a shutdown hint");
        fourth
    }

    #[test]
    fn a_damaged_file_is_refused_unless_repairing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::write(dir.join(STORAGE_FILE), "id = zz\nheld = 1\n").unwrap();
        let e = storage_identity(dir, false, &opts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unreadable"), "{e}");
        let id = storage_identity(dir, true, &opts()).unwrap();
        assert_eq!(storage_identity(dir, false, &opts()).unwrap(), id);
        let f = StorageFile {
            id: 0x1234,
            held: vec![],
        };
        assert_eq!(StorageFile::decode(&f.encode()), Some(f));
    }
}

//! Looking at a partition directory's files from tests: its segments, the records in one,
//! copies and cuts.
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use simplekv_engine::record;
use simplekv_engine::segment::{self, SEGMENT_HEADER_LEN};

/// The segment files of a directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let base = segment::parse_segment_name(p.file_name()?.to_str()?)?;
            Some((base, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// (offset, lsn, length, `MORE` bit) of every record of a segment file.
pub fn records_with_batch_bits(path: &Path) -> Vec<(u64, u64, u64, bool)> {
    let bytes = fs::read(path).unwrap();
    let mut it = record::RecordIter::new(&bytes[SEGMENT_HEADER_LEN..]);
    let v = it
        .by_ref()
        .map(|(off, r)| {
            let h = r.header;
            let off = (off + SEGMENT_HEADER_LEN) as u64;
            (off, h.lsn, h.record_len() as u64, h.more)
        })
        .collect();
    assert!(it.error().is_none(), "{} does not decode", path.display());
    v
}

/// Copies every file of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

pub fn truncate_file(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

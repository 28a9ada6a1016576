//! Per-command latency histograms, as Redis 7.0 keeps them (`latency-tracking`): INFO
//! latencystats and LATENCY HISTOGRAM.
//!
//! Each worker keeps a histogram per command it timed (the same microseconds INFO
//! commandstats adds up); INFO and LATENCY merge the workers' histograms. The histogram is
//! laid out as Redis's HdrHistogram with 2 significant digits over 1 ns..1 s: 128 linear
//! sub-buckets per power of two, each value counted in nanoseconds (the microseconds times
//! 1000, at least 1 ns, at most 1 s), so that percentiles and the buckets LATENCY HISTOGRAM
//! reports come out as Redis's do.
use std::fmt::Write as _;

use crate::resp::{write_array_len, write_bulk, write_integer};

/// Values are counted from 1 ns up to 1 s, as Redis does.
const LOWEST: u64 = 1;
const HIGHEST: u64 = 1_000_000_000;
/// log2 of half the linear sub-buckets per power of two (2 significant digits: 256 sub-buckets).
const HALF_MAGNITUDE: u32 = 7;
const HALF_COUNT: u64 = 1 << HALF_MAGNITUDE;
/// Counts HdrHistogram keeps for 1..=HIGHEST: 24 powers of two (the first one 256 values) of
/// 128 each.
const COUNTS_LEN: usize = 24 * HALF_COUNT as usize;

/// Where `v` (nanoseconds, 1..=HIGHEST) is counted.
fn index_of(v: u64) -> usize {
    // The power of two `v` falls in, over the 256 sub-buckets of the first one.
    let bucket = (64 - (v | (2 * HALF_COUNT - 1)).leading_zeros()) - (HALF_MAGNITUDE + 1);
    let sub = v >> bucket;
    (((bucket as u64 + 1) << HALF_MAGNITUDE) + sub - HALF_COUNT) as usize
}

/// The smallest value counted at `index`, and how many values share it.
fn range_of(index: usize) -> (u64, u64) {
    let index = index as u64;
    let bucket = (index >> HALF_MAGNITUDE).saturating_sub(1);
    let sub = if index < 2 * HALF_COUNT {
        index
    } else {
        (index & (HALF_COUNT - 1)) + HALF_COUNT
    };
    (sub << bucket, 1 << bucket)
}

/// The largest value counted at `index`.
fn highest_at(index: usize) -> u64 {
    let (low, size) = range_of(index);
    low + size - 1
}

/// The largest value counted with `v`'s (HdrHistogram's highest equivalent value).
fn highest_equivalent(v: u64) -> u64 {
    highest_at(index_of(v))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Counts by index, grown up to the highest index used.
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    /// One call that took `usec` microseconds.
    #[inline]
    pub fn record_usec(&mut self, usec: u64) {
        let ns = usec.saturating_mul(1000).clamp(LOWEST, HIGHEST);
        let i = index_of(ns);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
    }

    pub fn calls(&self) -> u64 {
        self.total
    }

    pub fn merge(&mut self, o: &Histogram) {
        if o.counts.len() > self.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
    }

    /// The value (ns) under which `percentile` % of the calls fall, as HdrHistogram's
    /// `hdr_value_at_percentile` gives it.
    pub fn value_at_percentile(&self, percentile: f64) -> u64 {
        let p = percentile.min(100.0);
        let wanted = ((p / 100.0 * self.total as f64 + 0.5) as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= wanted {
                return if percentile == 0.0 {
                    range_of(i).0
                } else {
                    highest_at(i)
                };
            }
        }
        0
    }

    /// LATENCY HISTOGRAM's buckets: (microseconds, calls at most that long), at 1, 2, 4, ...
    /// µs (each the highest value counted with 1024 << k ns, in µs), the ones that add calls.
    /// HdrHistogram's iterator runs out of counts before the level of 2^30 ns: calls past
    /// 2^29 ns come under the last count's highest value (1,073,741 µs), as Redis prints it.
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        const LAST_LEVEL: u64 = 1 << 29;
        let mut out = Vec::new();
        let mut seen = 0u64;
        let mut next = 0usize;
        let mut level = 1024u64;
        while seen < self.total && level <= LAST_LEVEL {
            let before = seen;
            // Every index whose values start at `level` or below.
            while next < self.counts.len() && range_of(next).0 <= level {
                seen += self.counts[next];
                next += 1;
            }
            if seen > before {
                out.push((highest_equivalent(level) / 1000, seen));
            }
            level <<= 1;
        }
        if seen < self.total {
            out.push((highest_at(COUNTS_LEN - 1) / 1000, self.total));
        }
        out
    }
}

/// INFO latencystats: `latency_percentiles_usec_<command>:p50=...,p99=...` per command.
pub fn info_lines(hists: &[(&'static str, &Histogram)], percentiles: &[f64]) -> String {
    let mut o = String::new();
    for (name, h) in hists {
        let _ = write!(o, "latency_percentiles_usec_{name}:");
        for (j, &p) in percentiles.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            let v = h.value_at_percentile(p) as f64 / 1000.0;
            let _ = write!(o, "p{}={v:.3}", trim_percentile(p));
        }
        o.push_str("\r\n");
    }
    o
}

/// LATENCY HISTOGRAM [command ...]: for each command with calls (all of them without names;
/// a container's name stands for its subcommands too), its calls and buckets.
pub fn histogram_reply(hists: &[(&'static str, &Histogram)], names: &[String]) -> Vec<u8> {
    // As Redis: all of them without names; otherwise by the names in their order (again
    // for a name given twice), a container's name giving its subcommands.
    let chosen: Vec<&(&'static str, &Histogram)> = if names.is_empty() {
        hists.iter().collect()
    } else {
        names
            .iter()
            .flat_map(|w| {
                hists.iter().filter(move |(n, _)| {
                    *n == w.as_str()
                        || n.strip_prefix(w.as_str())
                            .is_some_and(|r| r.starts_with('|'))
                })
            })
            .collect()
    };
    let mut r = Vec::new();
    write_array_len(&mut r, chosen.len() * 2);
    for (name, h) in chosen {
        write_bulk(&mut r, name.as_bytes());
        write_array_len(&mut r, 4);
        write_bulk(&mut r, b"calls");
        write_integer(&mut r, h.calls() as i64);
        write_bulk(&mut r, b"histogram_usec");
        let cdf = h.cumulative();
        write_array_len(&mut r, cdf.len() * 2);
        for (us, n) in cdf {
            write_integer(&mut r, us as i64);
            write_integer(&mut r, n as i64);
        }
    }
    r
}

/// A percentile as Redis names it: `%f` without trailing zeros (`50`, `99.9`).
fn trim_percentile(p: f64) -> String {
    let s = format!("{p:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_where_hdr_histogram_puts_them() {
        // 2 significant digits: exact below 256 ns, then 128 steps per power of two.
        assert_eq!(highest_equivalent(1), 1);
        assert_eq!(highest_equivalent(255), 255);
        assert_eq!(highest_equivalent(1000), 1003);
        assert_eq!(highest_equivalent(2000), 2007);
        assert_eq!(highest_equivalent(1024), 1031);
        assert_eq!(highest_equivalent(32768), 33023);
        assert_eq!(highest_equivalent(1 << 20), 1_056_767);
        for v in [1u64, 7, 255, 256, 257, 1000, 65_535, 999_999, HIGHEST] {
            let (low, size) = range_of(index_of(v));
            assert!(low <= v && v < low + size, "{v}: {low}+{size}");
        }
        let mut last = 0;
        for i in 0..index_of(HIGHEST) {
            let (low, _) = range_of(i);
            assert!(i == 0 || low > last, "index {i} goes back");
            last = low;
        }
    }

    #[test]
    fn percentiles_and_buckets_read_as_redis_prints_them() {
        // As Redis 7.0 after 20,000 fast SETs: most 0 µs (1 ns), some 1-4 µs, one 1 ms.
        let mut h = Histogram::default();
        for _ in 0..19_107 {
            h.record_usec(0);
        }
        for _ in 0..768 {
            h.record_usec(2);
        }
        for _ in 0..113 {
            h.record_usec(4);
        }
        for _ in 0..11 {
            h.record_usec(7);
        }
        h.record_usec(1000);
        assert_eq!(h.calls(), 20_000);
        assert_eq!(h.value_at_percentile(50.0), 1);
        assert_eq!(h.value_at_percentile(99.0), 2007);
        assert_eq!(h.value_at_percentile(100.0), 1_003_519);
        assert_eq!(
            h.cumulative(),
            vec![
                (1, 19_107),
                (2, 19_875),
                (4, 19_988),
                (8, 19_999),
                (1056, 20_000)
            ]
        );
        let hists = [("set", &h)];
        assert_eq!(
            info_lines(&hists, &[50.0, 99.0, 99.9]),
            "latency_percentiles_usec_set:p50=0.001,p99=2.007,p99.9=4.015\r\n"
        );
        assert_eq!(info_lines(&hists, &[]), "latency_percentiles_usec_set:\r\n");
    }

    #[test]
    fn slow_calls_are_counted_at_one_second() {
        let mut h = Histogram::default();
        h.record_usec(u64::MAX);
        h.record_usec(5_000_000);
        assert_eq!(h.calls(), 2);
        assert_eq!(h.value_at_percentile(100.0), highest_equivalent(HIGHEST));
        // Redis 7.0 prints calls past 2^29 ns under 1073741 µs.
        assert_eq!(h.cumulative(), vec![(1_073_741, 2)]);
        let mut h = Histogram::default();
        h.record_usec(500_000);
        h.record_usec(600_000);
        assert_eq!(h.cumulative(), vec![(541_065, 1), (1_073_741, 2)]);
    }

    #[test]
    fn merged_histograms_add_up_and_names_pick_subcommands() {
        let mut a = crate::server::stats::CmdStats::default();
        let mut b = crate::server::stats::CmdStats::default();
        a.record_call("get", 1, true);
        b.record_ran("get", 3, true);
        b.record_ran("get", 4, false);
        b.record_call("config|get", 10, true);
        b.record_call("ping", 10, false);
        a.absorb(&b);
        assert!(
            a.lines().contains(
                &"cmdstat_get:calls=1,usec=8,usec_per_call=8.00,rejected_calls=0,failed_calls=0"
                    .to_string()
            ),
            "{:?}",
            a.lines()
        );
        let hists = a.latencies();
        assert_eq!(hists.len(), 2, "ping was not tracked");
        assert_eq!(hists[1], ("get", hists[1].1));
        assert_eq!(hists[1].1.calls(), 2);
        let r = histogram_reply(&hists, &["config".into()]);
        assert!(r.starts_with(b"*2\r\n$10\r\nconfig|get\r\n"), "{r:?}");
        let all = histogram_reply(&hists, &[]);
        assert!(all.starts_with(b"*4\r\n"), "{all:?}");
        assert_eq!(histogram_reply(&hists, &["nosuch".into()]), b"*0\r\n");
        // In the order asked, again when asked twice.
        let r = histogram_reply(&hists, &["get".into(), "config|get".into(), "get".into()]);
        assert!(r.starts_with(b"*6\r\n$3\r\nget\r\n"), "{r:?}");
        // Timed here for another worker's call: no commandstats line of its own.
        let mut only = crate::server::stats::CmdStats::default();
        only.record_ran("get", 3, true);
        assert!(only.lines().is_empty());
        assert_eq!(trim_percentile(99.9), "99.9");
        assert_eq!(trim_percentile(50.0), "50");
        assert_eq!(trim_percentile(0.0), "0");
    }
}

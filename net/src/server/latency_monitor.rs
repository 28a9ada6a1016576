//! The latency monitor (`latency-monitor-threshold`): LATENCY LATEST, HISTORY, RESET, GRAPH
//! and DOCTOR, as Redis 7.0 answers them.
//!
//! Each worker keeps, per event, the last 160 seconds that had a spike (the largest one of
//! each second, in ms) and the largest of all; LATENCY merges the workers' series second by
//! second. A spike is a duration at or above the threshold (0 turns the monitor off). The
//! events:
//! - `command` and `fast-command`: a command (or a part of one run on another worker), split
//!   by its `fast` flag in COMMAND INFO, as Redis;
//! - `expire-cycle`: one pass of active expiry;
//! - `aof-fsync-always`: with `fsync = always`, the fsyncs of one group commit (the replies
//!   of the turn's writes wait for them);
//! - `merge-cycle`: one step of installing a merge's output, which runs on the worker.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::resp::{write_array_len, write_bulk, write_error, write_integer};

/// Samples kept per event (Redis's `LATENCY_TS_LEN`).
pub const SAMPLES: usize = 160;
/// Width of LATENCY GRAPH.
const GRAPH_COLS: usize = 80;

/// One event's spikes: (unix seconds, ms), oldest first, one per second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    pub samples: Vec<(u64, u64)>,
    pub max: u64,
}

impl Series {
    fn add(&mut self, now: u64, ms: u64) {
        self.max = self.max.max(ms);
        match self.samples.last_mut() {
            Some(last) if last.0 == now => last.1 = last.1.max(ms),
            _ => {
                self.samples.push((now, ms));
                if self.samples.len() > SAMPLES {
                    self.samples.remove(0);
                }
            }
        }
    }

    /// Adds another worker's series: the largest spike of each second, the newest 160.
    fn merge(&mut self, o: &Series) {
        let mut by_second: BTreeMap<u64, u64> = self.samples.iter().copied().collect();
        for &(t, ms) in &o.samples {
            let e = by_second.entry(t).or_insert(0);
            *e = (*e).max(ms);
        }
        let skip = by_second.len().saturating_sub(SAMPLES);
        self.samples = by_second.into_iter().skip(skip).collect();
        self.max = self.max.max(o.max);
    }
}

/// A worker's events, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyEvents {
    pub events: BTreeMap<&'static str, Series>,
}

impl LatencyEvents {
    /// Records `ms` for `event` at `now` (unix seconds) if it reaches `threshold` (ms; 0: the
    /// monitor is off).
    pub fn add_if_needed(&mut self, threshold: u64, event: &'static str, ms: u64, now: u64) {
        if threshold > 0 && ms >= threshold {
            self.events.entry(event).or_default().add(now, ms);
        }
    }

    pub fn merge(&mut self, o: &LatencyEvents) {
        for (name, s) in &o.events {
            self.events.entry(name).or_default().merge(s);
        }
    }

    /// LATENCY RESET: the events dropped (`names` empty: all).
    pub fn reset(&mut self, names: &[String]) -> Vec<String> {
        let gone: Vec<&'static str> = self
            .events
            .keys()
            .copied()
            .filter(|e| names.is_empty() || names.iter().any(|n| n == e))
            .collect();
        for e in &gone {
            self.events.remove(e);
        }
        gone.into_iter().map(str::to_owned).collect()
    }
}

/// LATENCY LATEST: for each event, its name, the time and ms of its latest spike, and the
/// largest of all.
pub fn latest_reply(ev: &LatencyEvents, r: &mut Vec<u8>) {
    write_array_len(r, ev.events.len());
    for (name, s) in &ev.events {
        let (t, ms) = s.samples.last().copied().unwrap_or_default();
        write_array_len(r, 4);
        write_bulk(r, name.as_bytes());
        write_integer(r, t as i64);
        write_integer(r, ms as i64);
        write_integer(r, s.max as i64);
    }
}

/// LATENCY HISTORY `event`: its (time, ms) spikes, oldest first; empty for an unknown one.
pub fn history_reply(ev: &LatencyEvents, event: &str, r: &mut Vec<u8>) {
    let samples = ev.events.get(event).map_or(&[][..], |s| &s.samples[..]);
    write_array_len(r, samples.len());
    for &(t, ms) in samples {
        write_array_len(r, 2);
        write_integer(r, t as i64);
        write_integer(r, ms as i64);
    }
}

/// LATENCY GRAPH `event`, as Redis draws it: a sparkline of the spikes, labelled with how
/// long ago each one was.
pub fn graph_reply(ev: &LatencyEvents, event: &str, now: u64, r: &mut Vec<u8>) {
    let Some(s) = ev.events.get(event) else {
        let msg = format!("ERR No samples available for event '{event}'");
        return write_error(r, msg.as_bytes());
    };
    write_bulk(r, graph(event, s, now).as_bytes());
}

fn graph(event: &str, s: &Series, now: u64) -> String {
    let (min, max) = s
        .samples
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), &(_, ms)| (lo.min(ms), hi.max(ms)));
    let min = if s.samples.is_empty() { 0 } else { min };
    let mut out = format!(
        "{event} - high {max} ms, low {min} ms (all time high {} ms)\n{}\n",
        s.max,
        "-".repeat(GRAPH_COLS)
    );
    let labels: Vec<String> = s
        .samples
        .iter()
        .map(|&(t, _)| {
            let ago = now.saturating_sub(t);
            match ago {
                a if a < 60 => format!("{a}s"),
                a if a < 3600 => format!("{}m", a / 60),
                a if a < 86400 => format!("{}h", a / 3600),
                a => format!("{}d", a / 86400),
            }
        })
        .collect();
    let values: Vec<u64> = s.samples.iter().map(|&(_, ms)| ms).collect();
    for (i, start) in (0..values.len()).step_by(GRAPH_COLS).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let end = (start + GRAPH_COLS).min(values.len());
        sparkline(
            &mut out,
            &values[start..end],
            &labels[start..end],
            (min, max),
            4,
        );
    }
    out
}

/// Redis's `sparklineRenderRange` with `SPARKLINE_FILL`: `rows` rows of `_o#` (and `|` below
/// a full cell), then the labels written downwards, one row apart from the graph.
fn sparkline(out: &mut String, values: &[u64], labels: &[String], range: (u64, u64), rows: usize) {
    const FILL: [char; 3] = ['_', 'o', '#'];
    let steps = (FILL.len() * rows) as i64;
    let relmax = match range.1 - range.0 {
        0 => 1.0,
        d => d as f64,
    };
    let mut row = 0;
    loop {
        let mut line = vec![' '; values.len()];
        let mut more = false;
        for (j, &v) in values.iter().enumerate() {
            let relval = (v - range.0) as f64;
            let step = (((relval * steps as f64) / relmax) as i64).clamp(0, steps - 1);
            if row < rows {
                more = true;
                let idx = step - ((rows - row - 1) * FILL.len()) as i64;
                if (0..FILL.len() as i64).contains(&idx) {
                    line[j] = FILL[idx as usize];
                } else if idx >= FILL.len() as i64 {
                    line[j] = '|';
                }
            } else {
                // One empty row between the graph and the labels.
                if row == rows {
                    more = true;
                    break;
                }
                let at = row - rows - 1;
                if let Some(c) = labels[j].chars().nth(at) {
                    more = true;
                    line[j] = c;
                }
            }
        }
        if !more {
            break;
        }
        row += 1;
        out.extend(line.iter());
        out.push('\n');
    }
}

/// LATENCY DOCTOR: a report of the spikes of each event, and what to look at.
pub fn doctor_report(ev: &LatencyEvents, threshold: u64) -> String {
    let mut out = String::new();
    if threshold == 0 {
        out.push_str(
            "The latency monitor is off: no spike is recorded. Turn it on with \
             CONFIG SET latency-monitor-threshold <milliseconds> (the smallest duration that \
             counts as a spike), or server.latency_monitor_threshold in the config file.\n",
        );
        return out;
    }
    if ev.events.is_empty() {
        let _ = writeln!(
            out,
            "No latency spike (a duration of {threshold} ms or more) was recorded since the \
             monitor was turned on or last reset."
        );
        return out;
    }
    let _ = writeln!(
        out,
        "Latency spikes of {threshold} ms or more, by event (the largest of each second, the \
         last {SAMPLES} seconds that had one):\n"
    );
    for (i, (name, s)) in ev.events.iter().enumerate() {
        let n = s.samples.len() as f64;
        let avg = s.samples.iter().map(|&(_, ms)| ms as f64).sum::<f64>() / n;
        let mad = s
            .samples
            .iter()
            .map(|&(_, ms)| (ms as f64 - avg).abs())
            .sum::<f64>()
            / n;
        // As Redis: the span of the samples over their number.
        let period = match (s.samples.first(), s.samples.last()) {
            (Some(a), Some(b)) => (b.0 - a.0) as f64 / n,
            _ => 0.0,
        };
        let _ = write!(
            out,
            "{}. {name}: {} latency spikes (average {}ms, mean deviation {}ms, period {period:.2} sec",
            i + 1,
            s.samples.len(),
            avg as u64,
            mad as u64
        );
        let _ = writeln!(out, "). Worst all time event {}ms.", s.max);
    }
    out.push_str("\nWhat to look at:\n");
    for name in ev.events.keys() {
        let advice = match *name {
            "command" | "fast-command" => {
                "- Slow commands: SLOWLOG GET names them and their arguments, and LATENCY \
                 HISTOGRAM and INFO commandstats show how long each command takes. Commands \
                 over many keys (KEYS, large MGET/MSET/DEL, SCAN with a large COUNT, FLUSHALL) \
                 hold a worker while they run; keys spread over workers run in parallel."
            }
            "expire-cycle" => {
                "- Active expiry: many keys expiring at once are deleted in bounded passes; \
                 a lower storage.active_expire_effort makes each pass shorter, and spreading \
                 expiry times keeps them small."
            }
            "aof-fsync-always" => {
                "- fsync with fsync = always: a write's reply waits for the disk. A commit \
                 journal (storage.journal_size) makes each commit one fsync; a faster disk, \
                 or fsync = everysec (up to about a second of writes lost in a crash), takes \
                 the wait away."
            }
            "merge-cycle" => {
                "- Merges: installing a merge's output runs on the worker in steps; large \
                 segments (storage.segment_size) or a high storage.merge_dead_ratio make \
                 merges larger and rarer."
            }
            _ => continue,
        };
        let _ = writeln!(out, "{advice}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_keeps_the_largest_spike_of_each_second_and_the_newest_160() {
        let mut ev = LatencyEvents::default();
        ev.add_if_needed(0, "command", 500, 1);
        assert!(ev.events.is_empty(), "monitor off");
        ev.add_if_needed(10, "command", 9, 1);
        assert!(ev.events.is_empty(), "below the threshold");
        ev.add_if_needed(10, "command", 12, 100);
        ev.add_if_needed(10, "command", 30, 100);
        ev.add_if_needed(10, "command", 11, 100);
        ev.add_if_needed(10, "command", 10, 101);
        assert_eq!(ev.events["command"].samples, [(100, 30), (101, 10)]);
        assert_eq!(ev.events["command"].max, 30);
        for t in 0..200 {
            ev.add_if_needed(10, "expire-cycle", 10 + t, 1000 + t);
        }
        let s = &ev.events["expire-cycle"];
        assert_eq!(s.samples.len(), SAMPLES);
        assert_eq!(s.samples[0], (1040, 50));
        // Another worker's: merged by second.
        let mut other = LatencyEvents::default();
        other.add_if_needed(10, "command", 50, 101);
        other.add_if_needed(10, "command", 20, 99);
        ev.merge(&other);
        assert_eq!(
            ev.events["command"].samples,
            [(99, 20), (100, 30), (101, 50)]
        );
        assert_eq!(ev.events["command"].max, 50);
        let mut r = Vec::new();
        latest_reply(&ev, &mut r);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "*2\r\n*4\r\n$7\r\ncommand\r\n:101\r\n:50\r\n:50\r\n\
             *4\r\n$12\r\nexpire-cycle\r\n:1199\r\n:209\r\n:209\r\n"
        );
        assert_eq!(ev.reset(&["nope".into(), "command".into()]), ["command"]);
        assert_eq!(ev.reset(&[]), ["expire-cycle"]);
        assert!(ev.events.is_empty());
    }

    /// Samples Redis 7.0.15 recorded, and its LATENCY GRAPH and DOCTOR lines for them.
    #[test]
    fn graph_and_doctor_match_redis_for_the_same_samples() {
        let mut ev = LatencyEvents::default();
        for (t, ms) in [
            (474, 1),
            (478, 1),
            (482, 2),
            (486, 1),
            (487, 1),
            (488, 142),
            (489, 130),
            (491, 143),
            (492, 67),
        ] {
            ev.add_if_needed(1, "command", ms, 1_796_661_000 + t);
        }
        let g = graph("command", &ev.events["command"], 1_796_661_492);
        assert_eq!(
            g,
            "command - high 143 ms, low 1 ms (all time high 143 ms)\n\
             --------------------------------------------------------------------------------\n\
             \x20    #o# \n\
             \x20    ||| \n\
             \x20    |||#\n\
             _____||||\n\
             \x20        \n\
             111654310\n\
             840ssssss\n\
             sss      \n"
        );
        let d = doctor_report(&ev, 1);
        assert!(
            d.contains("1. command: 9 latency spikes (average 54ms, mean deviation 58ms, period 2.00 sec). Worst all time event 143ms."),
            "{d}"
        );
    }

    #[test]
    fn the_graph_is_drawn_as_redis_draws_it() {
        let mut ev = LatencyEvents::default();
        for (t, ms) in [(100, 10), (101, 40), (105, 25), (160, 100)] {
            ev.add_if_needed(1, "command", ms, t);
        }
        let g = graph("command", &ev.events["command"], 170);
        assert_eq!(
            g,
            "command - high 100 ms, low 10 ms (all time high 100 ms)\n\
             --------------------------------------------------------------------------------\n\
             \x20  #\n\
             \x20  |\n\
             \x20o |\n\
             _|#|\n\
             \x20   \n\
             1111\n\
             mmm0\n\
             \x20  s\n"
        );
    }
}

//! The history checker of simplekv's fault-injection verification (Jepsen style).
//!
//! A chaos run records every client operation ([`history::Recorder`]), saves the history in a
//! line format ([`History::save`], [`History::load`]) and checks it ([`check`]):
//!
//! - [`linearizable`]: each key's sub-history against a register model, by the Wing–Gong /
//!   Lowe search with memoization and a search budget; a violation comes with the longest
//!   linearizable prefix, the operations that could not be placed after it, and a minimal
//!   witness.
//! - [`lost_writes`]: acknowledged writes missing from the final reads.
//! - [`report`]: both, per key, with counts and timings, printable.
//!
//! `docs/VERIFICATION.md` ("The checker") gives the model, the definitions and the limits.

pub mod history;
pub mod linearizable;
pub mod lost_writes;
pub mod report;

pub use history::{
    History, HistoryError, Key, Op, Operation, Outcome, Pending, Recorder, Ret, Value,
};
pub use linearizable::{Anomaly, Budget, KeyCheck, Verdict, check_ops};
pub use lost_writes::{KeyLostWrites, LostWrite};
pub use report::{CheckOptions, Counts, KeyReport, Overall, Report, check};

#[cfg(test)]
mod tests;

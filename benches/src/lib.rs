//! Shared helpers of simplekv's benchmarks: key/value generation and simple timing, used by
//! the criterion benches in `benches/benches/` and the report tools in `src/bin/`.

pub mod chaos;
pub mod checker;

use std::time::{Duration, Instant};

/// The `i`-th benchmark key: 16 bytes, like redis-benchmark's `key:000000000123`.
pub fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key:000000000000";
    let mut n = i;
    for b in k[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// A deterministic value of `len` bytes for key `i`.
pub fn value(i: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(i);
    (0..len).map(|_| rng.alphanumeric() as u8).collect()
}

/// Runs `f` and returns how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Operations per second for `n` operations in `d`.
pub fn ops_per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_16_bytes_and_distinct() {
        assert_eq!(&super::key(123), b"key:000000000123");
        assert_ne!(super::key(1), super::key(10));
        assert_eq!(super::value(7, 100), super::value(7, 100));
        assert_eq!(super::value(7, 100).len(), 100);
    }
}

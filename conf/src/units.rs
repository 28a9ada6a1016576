//! Byte sizes written the way Redis writes them in `redis.conf`.
//!
//! Redis's `memtoll` is the reference: a bare number is bytes, `k`/`m`/`g` are powers of
//! 1000 and `kb`/`mb`/`gb` powers of 1024, case-insensitive. Copying it exactly means a
//! value pasted from a `redis.conf` means the same thing here.

/// One kibibyte (`1kb`).
pub const KIB: u64 = 1024;
/// One mebibyte (`1mb`).
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte (`1gb`).
pub const GIB: u64 = 1024 * MIB;

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1000),
    ("kb", KIB),
    ("m", 1000 * 1000),
    ("mb", MIB),
    ("g", 1000 * 1000 * 1000),
    ("gb", GIB),
];

/// Parses `"512mb"`, `"64KB"`, `"1k"`, `"1048576"` into bytes.
///
/// Returns `None` for anything `memtoll` would reject (fractions, signs, unknown units) and
/// for values that overflow `u64`. Whitespace between the number and the unit is tolerated
/// because it costs nothing and `"64 mb"` has only one sensible reading.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|&(_, m)| m)?
    };
    number.checked_mul(multiplier)
}

/// Formats bytes with the largest binary unit that divides them exactly (`"512mb"`), or as a
/// bare number; `parse_size` reads every output back to the same value.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    for (unit, size) in [("gb", GIB), ("mb", MIB), ("kb", KIB)] {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

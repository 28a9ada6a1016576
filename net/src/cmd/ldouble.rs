//! INCRBYFLOAT's arithmetic: a software x87 80-bit `long double`.
//!
//! Redis parses both operands with `strtold`, adds them as `long double` and prints the sum with
//! `%.17Lf`, trailing zeros removed. Seventeen decimals are more than a double holds, so the
//! digits a client sees depend on the 64-bit mantissa: `1000 + 0.1` prints
//! `1000.09999999999999998` and `0.1 + 0.2` prints `0.3`. No `f64` recipe reproduces both, so
//! this module does what glibc does on x86-64: correctly rounded parsing (round to nearest,
//! ties to even), one correctly rounded addition, and exact decimal printing.
use std::cmp::Ordering;

/// Redis's MAX_LONG_DOUBLE_CHARS: longer inputs are refused before parsing.
const MAX_INPUT: usize = 5 * 1024;
/// A value is `mant * 2^exp` with `mant < 2^64`; the x87 format spans these exponents
/// (the smallest is that of subnormals, the largest that of the largest finite value).
const MIN_EXP: i64 = -16445;
const MAX_EXP: i64 = 16320;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongDouble {
    /// `mant * 2^exp`; `mant >= 2^63` unless zero or subnormal (`exp == MIN_EXP`).
    Finite {
        neg: bool,
        mant: u64,
        exp: i32,
    },
    Inf {
        neg: bool,
    },
    Nan,
}

pub const ZERO: LongDouble = LongDouble::Finite {
    neg: false,
    mant: 0,
    exp: 0,
};

/// Unsigned big integer, little-endian 32-bit limbs, no high zero limbs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u128(mut v: u128) -> Big {
        let mut limbs = Vec::with_capacity(4);
        while v != 0 {
            limbs.push(v as u32);
            v >>= 32;
        }
        Big(limbs)
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn mul_add_small(&mut self, m: u32, add: u32) {
        let mut carry = u64::from(add);
        for l in &mut self.0 {
            let v = u64::from(*l) * u64::from(m) + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    fn mul_pow10(&mut self, mut n: u64) {
        while n >= 9 {
            self.mul_add_small(1_000_000_000, 0);
            n -= 9;
        }
        if n > 0 {
            self.mul_add_small(10u32.pow(n as u32), 0);
        }
    }

    fn bit_len(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(&top) => self.0.len() as u64 * 32 - u64::from(top.leading_zeros()),
        }
    }

    fn bit(&self, i: u64) -> bool {
        usize::try_from(i / 32)
            .ok()
            .and_then(|l| self.0.get(l))
            .is_some_and(|l| l >> (i % 32) & 1 == 1)
    }

    /// Whether any bit below `i` is set.
    fn any_below(&self, i: u64) -> bool {
        let full = usize::try_from(i / 32).unwrap_or(usize::MAX);
        if self.0.iter().take(full).any(|&l| l != 0) {
            return true;
        }
        let part = (i % 32) as u32;
        part > 0
            && self
                .0
                .get(full)
                .is_some_and(|&l| l & ((1u32 << part) - 1) != 0)
    }

    /// Bits `from..from + 64` as a u64.
    fn bits64(&self, from: u64) -> u64 {
        (0..64u64).fold(0u64, |acc, k| {
            acc | (u64::from(self.bit(from.saturating_add(k))) << k)
        })
    }

    fn shl(&mut self, bits: u64) {
        if self.is_zero() || bits == 0 {
            return;
        }
        let limbs = (bits / 32) as usize;
        let rem = (bits % 32) as u32;
        let mut v = vec![0u32; limbs];
        if rem == 0 {
            v.extend_from_slice(&self.0);
        } else {
            let mut carry = 0u32;
            for &l in &self.0 {
                v.push((l << rem) | carry);
                carry = l >> (32 - rem);
            }
            v.push(carry);
        }
        self.0 = v;
        self.trim();
    }

    fn shr1(&mut self) {
        let mut carry = 0u32;
        for l in self.0.iter_mut().rev() {
            let next = *l & 1;
            *l = (*l >> 1) | (carry << 31);
            carry = next;
        }
        self.trim();
    }

    fn cmp(&self, o: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn add(&mut self, o: &Big) {
        if self.0.len() < o.0.len() {
            self.0.resize(o.0.len(), 0);
        }
        let mut carry = 0u64;
        for (i, l) in self.0.iter_mut().enumerate() {
            let v = u64::from(*l) + u64::from(o.0.get(i).copied().unwrap_or(0)) + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
    }

    /// `self -= o`; requires `self >= o`.
    fn sub(&mut self, o: &Big) {
        let mut borrow = 0i64;
        for (i, l) in self.0.iter_mut().enumerate() {
            let mut v = i64::from(*l) - i64::from(o.0.get(i).copied().unwrap_or(0)) - borrow;
            borrow = 0;
            if v < 0 {
                v += 1 << 32;
                borrow = 1;
            }
            *l = v as u32;
        }
        self.trim();
    }

    fn divmod_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for l in self.0.iter_mut().rev() {
            let v = (rem << 32) | u64::from(*l);
            *l = (v / u64::from(d)) as u32;
            rem = v % u64::from(d);
        }
        self.trim();
        rem as u32
    }

    fn to_decimal(&self, out: &mut Vec<u8>) {
        if self.is_zero() {
            out.push(b'0');
            return;
        }
        let mut n = self.clone();
        let mut chunks = Vec::new();
        while !n.is_zero() {
            chunks.push(n.divmod_small(1_000_000_000));
        }
        let mut iter = chunks.iter().rev();
        if let Some(first) = iter.next() {
            out.extend_from_slice(first.to_string().as_bytes());
        }
        for c in iter {
            out.extend_from_slice(format!("{c:09}").as_bytes());
        }
    }
}

/// Rounds `n * 2^e2` (plus a positive amount below `2^e2` when `sticky`) to a long double,
/// to nearest with ties to even, as the FPU does.
fn round(neg: bool, n: &Big, e2: i64, sticky: bool) -> LongDouble {
    if n.is_zero() {
        return LongDouble::Finite {
            neg,
            mant: 0,
            exp: 0,
        };
    }
    let bl = n.bit_len() as i64;
    let mut exp = (e2 + bl - 64).max(MIN_EXP);
    let shift = exp - e2;
    let mant = if shift <= 0 {
        // Exact: n has at most 64 - (-shift) significant bits. Callers pass `sticky` only
        // with enough extra bits that this branch is not taken.
        n.bits64(0) << (-shift).min(63)
    } else {
        let shift = shift as u64;
        let mut m = n.bits64(shift);
        let half = n.bit(shift - 1);
        let rest = sticky || n.any_below(shift - 1);
        if half && (rest || m & 1 == 1) {
            match m.checked_add(1) {
                Some(v) => m = v,
                None => {
                    m = 1 << 63;
                    exp += 1;
                }
            }
        }
        m
    };
    if exp > MAX_EXP {
        return LongDouble::Inf { neg };
    }
    LongDouble::Finite {
        neg,
        mant,
        exp: if mant == 0 { 0 } else { exp as i32 },
    }
}

/// `strtold` on the whole input as Redis's `string2ld` uses it: `None` for anything Redis
/// answers "value is not a valid float" (no leading space, nothing left over, no NaN, no
/// overflow to infinity, no underflow to zero). Infinity itself is accepted, as in Redis.
pub fn parse(s: &[u8]) -> Option<LongDouble> {
    if s.is_empty() || s.len() >= MAX_INPUT {
        return None;
    }
    let (neg, body) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => return None,
        _ => (false, s),
    };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Some(LongDouble::Inf { neg });
    }
    let v = if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        parse_hex(neg, &body[2..])?
    } else {
        parse_dec(neg, body)?
    };
    match v {
        LongDouble::Finite { mant: 0, .. } if !is_literal_zero(body) => None,
        LongDouble::Finite { .. } => Some(v),
        _ => None,
    }
}

/// True when the digits themselves are all zero (so a zero result is not an underflow).
fn is_literal_zero(body: &[u8]) -> bool {
    let mantissa = if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        body[2..]
            .split(|&c| c == b'p' || c == b'P')
            .next()
            .unwrap_or_default()
    } else {
        body.split(|&c| c == b'e' || c == b'E')
            .next()
            .unwrap_or_default()
    };
    mantissa.iter().all(|&c| c == b'0' || c == b'.')
}

/// Splits `digits[.digits]` off the front; returns (all digits, digits after the point, rest).
fn split_mantissa(s: &[u8], is_digit: fn(u8) -> bool) -> Option<(Vec<u8>, usize, &[u8])> {
    let int_len = s.iter().take_while(|&&c| is_digit(c)).count();
    let mut digits = s[..int_len].to_vec();
    let mut rest = &s[int_len..];
    let mut frac = 0;
    if let Some((b'.', after)) = rest.split_first() {
        frac = after.iter().take_while(|&&c| is_digit(c)).count();
        digits.extend_from_slice(&after[..frac]);
        rest = &after[frac..];
    }
    if digits.is_empty() {
        return None;
    }
    Some((digits, frac, rest))
}

/// `[+-]digits` filling the rest of the input, saturated far beyond any meaningful exponent.
fn parse_exponent(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', d)) => (true, d),
        Some((b'+', d)) => (false, d),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits.iter().fold(0i64, |acc, &d| {
        (acc * 10 + i64::from(d - b'0')).min(1_000_000_000)
    });
    Some(if neg { -v } else { v })
}

fn parse_dec(neg: bool, s: &[u8]) -> Option<LongDouble> {
    let (digits, frac, rest) = split_mantissa(s, |c| c.is_ascii_digit())?;
    let exp = match rest.split_first() {
        None => 0,
        Some((b'e' | b'E', e)) => parse_exponent(e)?,
        Some(_) => return None,
    };
    let digits: &[u8] = {
        let z = digits.iter().take_while(|&&c| c == b'0').count();
        &digits[z..]
    };
    if digits.is_empty() {
        return Some(round(neg, &Big(Vec::new()), 0, false));
    }
    // value = D * 10^e10, and 10^(nd-1+e10) <= value < 10^(nd+e10).
    let e10 = exp - frac as i64;
    let nd = digits.len() as i64;
    if nd - 1 + e10 >= 4933 {
        return Some(LongDouble::Inf { neg });
    }
    if nd + e10 < -4952 {
        return Some(round(neg, &Big(Vec::new()), 0, false));
    }
    let mut n = Big(Vec::new());
    for chunk in digits.chunks(9) {
        let v = chunk
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        n.mul_add_small(10u32.pow(chunk.len() as u32), v);
    }
    if e10 >= 0 {
        n.mul_pow10(e10 as u64);
        return Some(round(neg, &n, 0, false));
    }
    let mut m = Big::from_u128(1);
    m.mul_pow10(e10.unsigned_abs());
    // q = floor(n * 2^s / m) with about 66 significant bits, enough to round with a sticky bit.
    let s = 66 - (n.bit_len() as i64 - m.bit_len() as i64);
    if s >= 0 {
        n.shl(s as u64);
    } else {
        m.shl(s.unsigned_abs());
    }
    let mut q = 0u128;
    let mut d = m;
    d.shl(68);
    for i in (0..=68).rev() {
        if n.cmp(&d) != Ordering::Less {
            n.sub(&d);
            q |= 1u128 << i;
        }
        d.shr1();
    }
    Some(round(neg, &Big::from_u128(q), -s, !n.is_zero()))
}

fn parse_hex(neg: bool, s: &[u8]) -> Option<LongDouble> {
    let (digits, frac, rest) = split_mantissa(s, |c| c.is_ascii_hexdigit())?;
    let exp = match rest.split_first() {
        None => 0,
        Some((b'p' | b'P', e)) => parse_exponent(e)?,
        Some(_) => return None,
    };
    let mut n = Big(Vec::new());
    for &d in &digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            _ => (d | 0x20) - b'a' + 10,
        };
        n.mul_add_small(16, u32::from(v));
    }
    if n.is_zero() {
        return Some(round(neg, &n, 0, false));
    }
    let e2 = exp - 4 * frac as i64;
    if e2 + n.bit_len() as i64 > MAX_EXP + 65 {
        return Some(LongDouble::Inf { neg });
    }
    Some(round(neg, &n, e2, false))
}

/// `a + b` rounded once, as the FPU adds two long doubles.
pub fn add(a: LongDouble, b: LongDouble) -> LongDouble {
    use LongDouble::{Finite, Inf, Nan};
    match (a, b) {
        (Nan, _) | (_, Nan) => Nan,
        (Inf { neg: x }, Inf { neg: y }) if x != y => Nan,
        (Inf { .. }, _) => a,
        (_, Inf { .. }) => b,
        (
            Finite {
                neg: na,
                mant: ma,
                exp: ea,
            },
            Finite {
                neg: nb,
                mant: mb,
                exp: eb,
            },
        ) => {
            if ma == 0 && mb == 0 {
                return Finite {
                    neg: na && nb,
                    mant: 0,
                    exp: 0,
                };
            }
            if ma == 0 {
                return b;
            }
            if mb == 0 {
                return a;
            }
            let e = ea.min(eb);
            let mut x = Big::from_u128(ma.into());
            x.shl((ea - e) as u64);
            let mut y = Big::from_u128(mb.into());
            y.shl((eb - e) as u64);
            let neg = if na == nb {
                x.add(&y);
                na
            } else {
                match x.cmp(&y) {
                    Ordering::Greater => {
                        x.sub(&y);
                        na
                    }
                    Ordering::Less => {
                        y.sub(&x);
                        x = y;
                        nb
                    }
                    Ordering::Equal => return ZERO,
                }
            };
            round(neg, &x, e.into(), false)
        }
    }
}

/// Redis's `ld2string(.., LD_STR_HUMAN)`: `%.17Lf` without trailing zeros (nor a trailing
/// point), and `-0` printed as `0`. Only for finite values (Redis refuses the others before).
pub fn format_human(v: LongDouble, out: &mut Vec<u8>) {
    let (neg, mant, exp) = match v {
        LongDouble::Finite { neg, mant, exp } => (neg, mant, exp),
        LongDouble::Inf { neg } => {
            out.extend_from_slice(if neg { b"-inf" } else { b"inf" });
            return;
        }
        LongDouble::Nan => {
            out.extend_from_slice(b"nan");
            return;
        }
    };
    let start = out.len();
    if neg {
        out.push(b'-');
    }
    if exp >= 0 {
        let mut n = Big::from_u128(mant.into());
        n.shl(exp as u64);
        n.to_decimal(out);
    } else {
        const SCALE: u128 = 100_000_000_000_000_000;
        let x = u128::from(mant) * SCALE;
        let f = exp.unsigned_abs();
        let (mut y, rem) = if f >= 128 {
            (0, x)
        } else {
            (x >> f, x & ((1u128 << f) - 1))
        };
        let round_up = match f {
            0 => false,
            1..=128 => match rem.cmp(&(1u128 << (f - 1))) {
                Ordering::Greater => true,
                Ordering::Equal => y & 1 == 1,
                Ordering::Less => false,
            },
            _ => false,
        };
        if round_up {
            y += 1;
        }
        let (int, frac) = (y / SCALE, y % SCALE);
        out.extend_from_slice(int.to_string().as_bytes());
        if frac != 0 {
            let digits = format!("{frac:017}");
            out.push(b'.');
            out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
        }
    }
    if &out[start..] == b"-0" {
        out.truncate(start);
        out.push(b'0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(a: &str, b: &str) -> String {
        let x = parse(a.as_bytes()).unwrap();
        let y = parse(b.as_bytes()).unwrap();
        let mut out = Vec::new();
        format_human(add(x, y), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn show(a: &str) -> String {
        let mut out = Vec::new();
        format_human(parse(a.as_bytes()).unwrap(), &mut out);
        String::from_utf8(out).unwrap()
    }

    // Every expected string here is what redis-server 7.0.15 on x86-64 answered to
    // SET k <a>; INCRBYFLOAT k <b>.
    #[test]
    fn sums_match_redis() {
        for (a, b, want) in [
            ("10.50", "0.1", "10.6"),
            ("10.6", "-5", "5.6"),
            ("5.0e3", "2.0e2", "5200"),
            ("0.1", "0.2", "0.3"),
            ("1000", "0.1", "1000.09999999999999998"),
            ("1", "0.25", "1.25"),
            ("1.5", "1.5", "3"),
            ("17179869184", "1.5", "17179869185.5"),
            ("17179869184", "17179869184", "34359738368"),
            ("0", "0.024390243902439025", "0.02439024390243902"),
            ("0.02439024390243902", "-0.024390243902439025", "0"),
            ("3.0e3", "0", "3000"),
            ("-1", "0.5", "-0.5"),
            ("1e-20", "0", "0"),
            ("-1e-20", "0", "0"),
            ("1e20", "1", "100000000000000000000"),
            ("1e30", "0", "1000000000000000000024696061952"),
            ("0x10", "0x1p-1", "16.5"),
            (
                "123456789.123456789",
                "0.000000001",
                "123456789.12345678999554366",
            ),
            ("9223372036854775807", "1", "9223372036854775808"),
            ("0.1", "0.7", "0.8"),
            ("100.1", "0", "100.1"),
            (".5", "5.", "5.5"),
            ("+1", "-0", "1"),
            // Exact ties at the 17th decimal: glibc rounds them to even.
            ("0x1p-18", "0", "0.00000381469726562"),
            ("0x3p-18", "0", "0.00001144409179688"),
            // Half an ulp of 1 is a tie too, at the FPU: 1 stays 1.
            ("1", "0x1p-64", "1"),
        ] {
            assert_eq!(incr(a, b), want, "{a} + {b}");
        }
    }

    /// 500 cases (random decimals, hex floats, ties, near-overflow and near-underflow values,
    /// long digit strings, invalid inputs) with redis-server 7.0.15's answers, one per line:
    /// `<stored value> TAB <increment> TAB <reply>`.
    #[test]
    fn corpus_matches_redis() {
        let corpus = include_str!("incrbyfloat_redis.tsv");
        let mut n = 0;
        for line in corpus.lines() {
            let mut f = line.split('\t');
            let (a, b, want) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let got = match (parse(a.as_bytes()), parse(b.as_bytes())) {
                (Some(x), Some(y)) => match add(x, y) {
                    sum @ LongDouble::Finite { .. } => {
                        let mut out = Vec::new();
                        format_human(sum, &mut out);
                        String::from_utf8(out).unwrap()
                    }
                    _ => "ERR increment would produce NaN or Infinity".into(),
                },
                _ => "ERR value is not a valid float".into(),
            };
            assert_eq!(got, want, "{a:?} + {b:?}");
            n += 1;
        }
        assert_eq!(n, 500);
    }

    #[test]
    fn parse_refuses_what_redis_refuses() {
        for bad in [
            "",
            " 1",
            "1 ",
            "\t1",
            "abc",
            "1.2.3",
            "1e",
            "1e+",
            "e5",
            ".",
            "-",
            "+",
            "0x",
            "0x.",
            "0xg",
            "0x1p",
            "nan",
            "NaN",
            "-nan",
            "nan(1)",
            "inf ",
            "infin",
            "1e5000",
            "-1e5000",
            "1e-5000",
            "0x1p20000",
            "1\u{0}",
            "--1",
            "1,5",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse(&vec![b'1'; MAX_INPUT]), None);
        assert!(
            parse(&vec![b'1'; MAX_INPUT - 1])
                .is_none_or(|v| matches!(v, LongDouble::Finite { .. }))
        );
    }

    #[test]
    fn parse_accepts_what_strtold_accepts() {
        for (s, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.0e-99999", "0"),
            ("00012", "12"),
            ("1.", "1"),
            (".25", "0.25"),
            ("1E3", "1000"),
            ("1e+3", "1000"),
            ("2.5e-1", "0.25"),
            ("0X1.8P1", "3"),
            ("0xAbC", "2748"),
            ("0x.8", "0.5"),
            ("0x1p-2", "0.25"),
            ("1e-4940", "0"),
        ] {
            assert_eq!(show(s), want, "{s}");
        }
        assert_eq!(parse(b"inf"), Some(LongDouble::Inf { neg: false }));
        assert_eq!(parse(b"-Infinity"), Some(LongDouble::Inf { neg: true }));
        assert_eq!(parse(b"+INF"), Some(LongDouble::Inf { neg: false }));
    }

    #[test]
    fn extremes() {
        // Largest finite long double: 2^16384 - 2^16320; one more ulp overflows.
        let max = LongDouble::Finite {
            neg: false,
            mant: u64::MAX,
            exp: MAX_EXP as i32,
        };
        let ulp = LongDouble::Finite {
            neg: false,
            mant: 1 << 63,
            exp: (MAX_EXP - 63) as i32,
        };
        assert_eq!(add(max, ulp), LongDouble::Inf { neg: false });
        let mut out = Vec::new();
        format_human(max, &mut out);
        assert_eq!(out.len(), 4933);
        assert!(out.starts_with(b"11897314953572317650"));
        assert!(out.ends_with(b"1989770240"));
        // Half an ulp is a tie; max's mantissa is odd, so it rounds up, to infinity.
        let half = LongDouble::Finite {
            neg: false,
            mant: 1 << 63,
            exp: (MAX_EXP - 64) as i32,
        };
        assert_eq!(add(max, half), LongDouble::Inf { neg: false });
        assert_eq!(
            add(
                LongDouble::Inf { neg: false },
                LongDouble::Inf { neg: true }
            ),
            LongDouble::Nan
        );
        assert_eq!(
            add(ZERO, LongDouble::Inf { neg: true }),
            LongDouble::Inf { neg: true }
        );
        // Subnormals survive parsing; the smallest one is 2^-16445.
        match parse(b"0x1p-16445") {
            Some(LongDouble::Finite { mant: 1, exp, .. }) => assert_eq!(i64::from(exp), MIN_EXP),
            other => panic!("{other:?}"),
        }
        // Half the smallest subnormal ties to zero (even): an underflow, refused.
        assert_eq!(parse(b"0x1p-16446"), None);
        assert_eq!(parse(b"0x1p-16447"), None);
    }
}

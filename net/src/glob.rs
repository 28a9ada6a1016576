//! Redis-compatible glob matching (KEYS, SCAN MATCH, PSUBSCRIBE, ...): a port of Redis 7's
//! `stringmatchlen` (util.c), quirks included, so patterns behave exactly as clients expect.
//!
//! Quirks worth knowing, all inherited from Redis:
//! * A pattern never matches an empty string unless it is empty itself: `glob_match(b"*", b"")`
//!   is false. Redis's KEYS and SCAN special-case the pattern `*` before calling the matcher, and
//!   callers here should do the same.
//! * An unterminated class `[abc` is a class to the end of the pattern; `[]` is an empty class
//!   that never matches; `[^` alone matches any byte; a trailing `\` is a literal backslash.
//! * Inside a class, `\x` compares `x` case-sensitively even when `nocase` is set.
//! * Range bounds are compared as C `char`s, which are signed on x86-64 Linux where Redis is
//!   usually built: bytes >= 0x80 sort below ASCII, so `[a-\xff]` is the range `\xff..=a`.
//!   Plain byte equality is unaffected.
//! * Recursion (one level per `*`) is cut off at 1000 levels, where the match fails; together
//!   with the early exit when a `*` has tried every position, this bounds time and stack on
//!   abusive patterns such as `a*a*a*a*...b`.

const MAX_NESTING: usize = 1000;

/// Matches `s` against the glob `pattern`; `nocase` folds ASCII letters.
///
/// Redis recurses once per `*`, but a failed recursive call only ever makes the innermost `*`
/// retry one byte further on: when that `*` runs out of string it sets `skipLongerMatches` and
/// every enclosing level fails at once. So the whole recursion is a loop with a single backtrack
/// point, which is what this is: same results (the test module checks it against a literal port
/// of the recursive code), no stack growth.
pub fn glob_match(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    let pat = pattern;
    let (mut p, mut i) = (0, 0);
    // Nesting level of the (virtual) Redis call being executed.
    let mut nesting = 0;
    // Innermost `*`: pattern index after it, string index its call started at, call nesting.
    let mut star: Option<(usize, usize, usize)> = None;
    loop {
        let matched = 'call: {
            while p < pat.len() && i < s.len() {
                let sc = s[i];
                match pat[p] {
                    b'*' => {
                        while p + 1 < pat.len() && pat[p + 1] == b'*' {
                            p += 1;
                        }
                        if p + 1 == pat.len() {
                            return true;
                        }
                        // The call Redis would make next is past its nesting limit; it and every
                        // retry fail, so the enclosing `*` runs out and the whole match fails.
                        if nesting >= MAX_NESTING {
                            return false;
                        }
                        nesting += 1;
                        p += 1;
                        star = Some((p, i, nesting));
                        continue;
                    }
                    b'?' => i += 1,
                    b'[' => {
                        if !class_matches(pat, &mut p, sc, nocase) {
                            break 'call false;
                        }
                        i += 1;
                    }
                    c => {
                        let c = if c == b'\\' && pat.len() - p >= 2 {
                            p += 1;
                            pat[p]
                        } else {
                            c
                        };
                        if fold(c, nocase) != fold(sc, nocase) {
                            break 'call false;
                        }
                        i += 1;
                    }
                }
                p += 1;
                if i == s.len() {
                    while pat.get(p) == Some(&b'*') {
                        p += 1;
                    }
                    break;
                }
            }
            p >= pat.len() && i == s.len()
        };
        if matched {
            return true;
        }
        let Some((after_star, start, call_nesting)) = star else {
            return false;
        };
        // Redis's `*` loop only tries non-empty suffixes, then gives up for good.
        let start = start + 1;
        if start >= s.len() {
            return false;
        }
        star = Some((after_star, start, call_nesting));
        p = after_star;
        i = start;
        nesting = call_nesting;
    }
}

fn fold(b: u8, nocase: bool) -> u8 {
    if nocase { b.to_ascii_lowercase() } else { b }
}

/// A byte as a signed C `char` (see the module docs).
fn signed(b: u8) -> i8 {
    b.cast_signed()
}

/// Matches byte `sc` against the class starting at `pat[*p] == '['`, leaving `*p` on the class's
/// last byte (its `]`, or the pattern's last byte if unterminated).
fn class_matches(pat: &[u8], p: &mut usize, sc: u8, nocase: bool) -> bool {
    *p += 1;
    let negate = pat.get(*p) == Some(&b'^');
    if negate {
        *p += 1;
    }
    let mut matched = false;
    loop {
        let rem = pat.len().saturating_sub(*p);
        let c = pat.get(*p).copied();
        if c == Some(b'\\') && rem >= 2 {
            *p += 1;
            if pat.get(*p) == Some(&sc) {
                matched = true;
            }
        } else if c == Some(b']') {
            break;
        } else if rem == 0 {
            // Unterminated class: step back so the caller's `p += 1` lands on the end.
            *p -= 1;
            break;
        } else if rem >= 3 && pat.get(*p + 1) == Some(&b'-') {
            let mut start = signed(pat.get(*p).copied().unwrap_or(0));
            let mut end = signed(pat.get(*p + 2).copied().unwrap_or(0));
            if start > end {
                std::mem::swap(&mut start, &mut end);
            }
            let mut ch = signed(sc);
            if nocase {
                start = signed(fold(start.cast_unsigned(), true));
                end = signed(fold(end.cast_unsigned(), true));
                ch = signed(fold(sc, true));
            }
            *p += 2;
            if ch >= start && ch <= end {
                matched = true;
            }
        } else if let Some(c) = c
            && fold(c, nocase) == fold(sc, nocase)
        {
            matched = true;
        }
        *p += 1;
    }
    matched != negate
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes(), false)
    }

    #[test]
    fn basics_from_redis_docs() {
        assert!(m("h?llo", "hello"));
        assert!(m("h?llo", "hallo"));
        assert!(m("h?llo", "hxllo"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(m("h[^e]llo", "hbllo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hallo"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("foo*", "foo_a"));
        assert!(!m("foo*", "key_x"));
        assert!(m("{a}*", "{a}x"));
        assert!(m("*{b}*", "{b}c"));
        assert!(!m("{a}*", "{b}a"));
    }

    #[test]
    fn stars() {
        assert!(m("*", "x"));
        assert!(m("*", "anything at all"));
        assert!(m("**", "x"));
        assert!(m("a*", "a"));
        assert!(m("a**", "a"));
        assert!(m("*b", "ab"));
        assert!(m("*b", "b"));
        assert!(!m("*b", "ba"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("key:*", "key:"));
        assert!(m("*a*", "bab"));
        assert!(!m("*?", ""));
        // Redis quirk: the loop never runs on an empty string.
        assert!(!m("*", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
    }

    #[test]
    fn question_marks() {
        assert!(m("key:1??", "key:123"));
        assert!(!m("key:1??", "key:12"));
        assert!(!m("?", ""));
        assert!(m("??", "ab"));
        assert!(!m("??", "abc"));
    }

    #[test]
    fn escapes() {
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("\\?", "?"));
        assert!(!m("\\?", "a"));
        assert!(m("a\\", "a\\"));
        assert!(m("\\\\", "\\"));
        assert!(m("[\\]]", "]"));
        assert!(m("[\\-]", "-"));
        assert!(!m("[\\-]", "a"));
        assert!(m("[a\\]b]", "b"));
    }

    #[test]
    fn classes_edge_cases() {
        assert!(m("[abc", "a"));
        assert!(!m("[abc", "d"));
        assert!(!m("[", "a"));
        assert!(!m("[", ""));
        assert!(m("[^", "a"));
        assert!(!m("[]]", "]"));
        assert!(!m("[]", "a"));
        assert!(m("[^]", "a"));
        // `]` right after `-` is the range end, so this is the unterminated range `]-a`.
        assert!(m("[a-]", "a"));
        assert!(m("[a-]", "^"));
        assert!(!m("[a-]", "-"));
        assert!(m("[-a]", "-"));
        assert!(m("[z-a]", "m"));
        assert!(!m("[z-a]", "A"));
        assert!(m("[a-c-e]", "b"));
        assert!(m("[a-c-e]", "-"));
        assert!(!m("[a-c-e]", "d"));
        assert!(m("[0-9]*", "7up"));
        assert!(m("[^0-9]*", "up7"));
        assert!(m("a[bc]d", "acd"));
        assert!(!m("a[bc]d", "ad"));
    }

    #[test]
    fn nocase() {
        assert!(glob_match(b"HELLO", b"hello", true));
        assert!(!glob_match(b"HELLO", b"hello", false));
        assert!(glob_match(b"H[A-Z]LLO", b"hello", true));
        assert!(glob_match(b"h[a-z]llo", b"HELLO", true));
        assert!(!glob_match(b"h[a-z]llo", b"HELLO", false));
        assert!(glob_match(b"[AB]", b"b", true));
        assert!(glob_match(b"\\A", b"a", true));
        // Redis compares escaped class members case-sensitively.
        assert!(!glob_match(b"[\\A]", b"a", true));
        assert!(glob_match(b"[\\a]", b"a", true));
    }

    #[test]
    fn high_bytes_compare_as_signed_chars() {
        assert!(glob_match(b"\xff", b"\xff", false));
        assert!(glob_match(b"[\x80-\xff]", b"\xc3", false));
        assert!(!glob_match(b"[\x80-\xff]", b"a", false));
        // 0xff is -1 as a char: the range is -1..='a'.
        assert!(!glob_match(b"[a-\xff]", b"b", false));
        assert!(glob_match(b"[a-\xff]", b"A", false));
        assert!(glob_match(b"[a-\xff]", b"\xff", false));
        assert!(!glob_match(b"[a-\xff]", b"\xfe", false));
    }

    #[test]
    fn abusive_patterns_terminate() {
        // keyspace.tcl "Regression for pattern matching long nested loops".
        let s = vec![b'a'; 40];
        assert!(!glob_match(
            b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
            &s,
            false
        ));
        // keyspace.tcl "Regression for pattern matching very long nested loops": the nesting
        // limit makes this fail rather than overflow the stack.
        let pat = b"*?".repeat(50_000);
        let s = vec![b'a'; 50_000];
        assert!(!glob_match(&pat, &s, false));
        // Below the limit the same shape matches.
        assert!(glob_match(&b"*?".repeat(500), &vec![b'a'; 500], false));
        let pat = b"a*".repeat(2000);
        assert!(!glob_match(&pat, &[b'a'; 1000], false));
        let mut pat = b"*a".repeat(30);
        pat.push(b'b');
        assert!(!glob_match(&pat, &vec![b'a'; 5000], false));
    }

    #[test]
    fn runs_on_a_small_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(2048 * 1024)
            .spawn(|| glob_match(&b"*?".repeat(5000), &vec![b'a'; 5000], false))
            .unwrap();
        assert!(!handle.join().unwrap());
    }

    /// Literal port of Redis's recursive `stringmatchlen_impl`, as the oracle for the loop.
    fn redis_reference(pat: &[u8], s: &[u8], nocase: bool) -> bool {
        fn rec(pat: &[u8], s: &[u8], nocase: bool, skip: &mut bool, nesting: usize) -> bool {
            if nesting > MAX_NESTING {
                return false;
            }
            let (mut p, mut i) = (0, 0);
            while p < pat.len() && i < s.len() {
                match pat[p] {
                    b'*' => {
                        while p + 1 < pat.len() && pat[p + 1] == b'*' {
                            p += 1;
                        }
                        if p + 1 == pat.len() {
                            return true;
                        }
                        while i < s.len() {
                            if rec(&pat[p + 1..], &s[i..], nocase, skip, nesting + 1) {
                                return true;
                            }
                            if *skip {
                                return false;
                            }
                            i += 1;
                        }
                        *skip = true;
                        return false;
                    }
                    b'?' => i += 1,
                    b'[' => {
                        if !class_matches(pat, &mut p, s[i], nocase) {
                            return false;
                        }
                        i += 1;
                    }
                    c => {
                        let c = if c == b'\\' && pat.len() - p >= 2 {
                            p += 1;
                            pat[p]
                        } else {
                            c
                        };
                        if fold(c, nocase) != fold(s[i], nocase) {
                            return false;
                        }
                        i += 1;
                    }
                }
                p += 1;
                if i == s.len() {
                    while pat.get(p) == Some(&b'*') {
                        p += 1;
                    }
                    break;
                }
            }
            p >= pat.len() && i == s.len()
        }
        rec(pat, s, nocase, &mut false, 0)
    }

    /// Straightforward exponential reference for patterns of `*`, `?` and literals.
    fn naive(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| naive(rest, &s[k..])),
            Some((b'?', rest)) => !s.is_empty() && naive(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && naive(rest, &s[1..]),
        }
    }

    proptest! {
        #[test]
        fn never_panics(
            p in prop::collection::vec(any::<u8>(), 0..32),
            s in prop::collection::vec(any::<u8>(), 0..32),
            nocase in any::<bool>(),
        ) {
            let _ = glob_match(&p, &s, nocase);
        }

        #[test]
        fn never_panics_on_glob_syntax(
            p in prop::collection::vec(prop::sample::select(b"*?[]^-\\ab".to_vec()), 0..24),
            s in prop::collection::vec(prop::sample::select(b"ab-]\\".to_vec()), 0..24),
            nocase in any::<bool>(),
        ) {
            let _ = glob_match(&p, &s, nocase);
        }

        #[test]
        fn agrees_with_redis_recursion(
            p in prop::collection::vec(prop::sample::select(b"**?[]^-\\abB".to_vec()), 0..20),
            s in prop::collection::vec(prop::sample::select(b"abAB-]^\\".to_vec()), 0..20),
            nocase in any::<bool>(),
        ) {
            prop_assert_eq!(glob_match(&p, &s, nocase), redis_reference(&p, &s, nocase));
        }

        #[test]
        fn agrees_with_redis_recursion_star_heavy(
            p in prop::collection::vec(prop::sample::select(b"***?ab".to_vec()), 0..30),
            s in prop::collection::vec(prop::sample::select(b"ab".to_vec()), 0..30),
        ) {
            prop_assert_eq!(glob_match(&p, &s, false), redis_reference(&p, &s, false));
        }

        #[test]
        fn agrees_with_naive_matcher(
            p in prop::collection::vec(prop::sample::select(b"*?ab".to_vec()), 0..12),
            s in prop::collection::vec(prop::sample::select(b"ab".to_vec()), 1..12),
        ) {
            // Non-empty strings only: the empty string is the documented Redis quirk.
            prop_assert_eq!(glob_match(&p, &s, false), naive(&p, &s));
        }

        #[test]
        fn literal_pattern_is_equality(
            p in prop::collection::vec(b'a'..=b'z', 0..16),
            s in prop::collection::vec(b'a'..=b'z', 0..16),
        ) {
            prop_assert_eq!(glob_match(&p, &s, false), p == s);
        }
    }
}

//! Splitting a typed line into command arguments, with redis-cli's rules (`sdssplitargs`):
//!
//! - arguments are separated by blanks (space, tab, CR, LF; leading blanks may also be VT/FF);
//! - `"double quotes"` take the escapes `\xHH` (two hex digits, any byte), `\n`, `\r`, `\t`,
//!   `\b`, `\a`; any other escaped character stands for itself (`\"`, `\\`, `\q` = `q`);
//! - `'single quotes'` are literal except `\'`;
//! - a quote may start in the middle of an argument (`ab"c d"` is `abc d`), but a closing quote
//!   must be followed by a blank or the end of the line;
//! - an unterminated quote, or text glued to a closing quote, makes the whole line invalid;
//! - as in C, a NUL byte ends the line.

use std::fmt;

/// The line cannot be split (unbalanced quotes); redis-cli prints `Invalid argument(s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidArgs;

impl fmt::Display for InvalidArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Invalid argument(s)")
    }
}

/// Splits `line` into arguments (see the module comment). An empty or all-blank line gives an
/// empty vector.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, InvalidArgs> {
    simplekv_net::resp::parse::split_line(line).map_err(|_| InvalidArgs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Result<Vec<Vec<u8>>, InvalidArgs> {
        split_args(line.as_bytes())
    }

    fn ok(line: &str) -> Vec<Vec<u8>> {
        split(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.to_vec()).collect()
    }

    #[test]
    fn plain_words_and_blanks() {
        assert_eq!(ok("set hello 1"), v(&[b"set", b"hello", b"1"]));
        assert_eq!(ok("  get \t k  "), v(&[b"get", b"k"]));
        assert_eq!(ok("a\r\nb\n"), v(&[b"a", b"b"]));
        assert!(ok("").is_empty());
        assert!(ok("   \t ").is_empty());
        // VT/FF are skipped between arguments but do not end an unquoted one (as in redis-cli).
        assert_eq!(ok("\x0ba\x0bb"), v(&[b"a\x0bb"]));
    }

    #[test]
    fn double_quotes() {
        assert_eq!(ok(r#"set "a b" c"#), v(&[b"set", b"a b", b"c"]));
        assert_eq!(ok(r#""""#), v(&[b""]));
        assert_eq!(ok(r#"x "" y"#), v(&[b"x", b"", b"y"]));
        assert_eq!(ok(r#""it's""#), v(&[b"it's"]));
        // A quote may open in the middle of an argument.
        assert_eq!(ok(r#"ab"c d""#), v(&[b"abc d"]));
    }

    #[test]
    fn double_quote_escapes() {
        assert_eq!(ok(r#""x\x00y\r\n""#), v(&[b"x\x00y\r\n"]));
        assert_eq!(ok(r#""\xff\xFe\x7f""#), v(&[b"\xff\xfe\x7f"]));
        assert_eq!(ok(r#""\t\b\a""#), v(&[b"\t\x08\x07"]));
        assert_eq!(ok(r#""\"\\""#), v(&[b"\"\\"]));
        // Unknown escapes stand for the character itself.
        assert_eq!(ok(r#""\q\'""#), v(&[b"q'"]));
        // Not two hex digits: `\x` is just `x`.
        assert_eq!(ok(r#""\x4g""#), v(&[b"x4g"]));
        assert_eq!(ok(r#""\x""#), v(&[b"x"]));
        assert_eq!(ok(r#""\x1""#), v(&[b"x1"]));
    }

    #[test]
    fn escapes_are_literal_outside_double_quotes() {
        assert_eq!(ok(r"a\x00b"), v(&[br"a\x00b"]));
        assert_eq!(ok(r"a\nb"), v(&[br"a\nb"]));
    }

    #[test]
    fn single_quotes() {
        assert_eq!(ok("'x'"), v(&[b"x"]));
        assert_eq!(ok("'a b' c"), v(&[b"a b", b"c"]));
        assert_eq!(ok(r"'don\'t'"), v(&[b"don't"]));
        // Only \' is an escape inside single quotes.
        assert_eq!(ok(r"'a\nb\x00'"), v(&[br"a\nb\x00"]));
        assert_eq!(ok(r#"'say "hi"'"#), v(&[br#"say "hi""#]));
    }

    #[test]
    fn unbalanced_or_glued_quotes_are_invalid() {
        for line in [
            r#"set "a"#,
            r#"set 'a"#,
            r#""a"b"#,
            r#"'a'b"#,
            r#""abc\"#,
            r#"'abc\'"#,
            r#"""x"#,
            "\"",
            "'",
        ] {
            assert_eq!(split(line), Err(InvalidArgs), "{line:?}");
        }
        assert_eq!(InvalidArgs.to_string(), "Invalid argument(s)");
    }

    #[test]
    fn closing_quote_followed_by_any_blank() {
        assert_eq!(ok("\"a\"\tb"), v(&[b"a", b"b"]));
        assert_eq!(ok("'a'\x0cb"), v(&[b"a", b"b"]));
    }

    #[test]
    fn nul_ends_the_line() {
        assert_eq!(split_args(b"get k\0ignored"), Ok(v(&[b"get", b"k"])));
        // The quote would be closed after the NUL, but the line ends before it.
        assert_eq!(split_args(b"\"a\0\""), Err(InvalidArgs));
    }

    #[test]
    fn non_ascii_bytes_pass_through() {
        assert_eq!(
            ok("set é \"ü x\""),
            v(&[b"set", "é".as_bytes(), "ü x".as_bytes()])
        );
        assert_eq!(split_args(b"a\xff b"), Ok(v(&[b"a\xff", b"b"])));
    }
}

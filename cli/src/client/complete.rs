//! Tab completion and argument hints for the interactive client, from this build's command
//! docs (redis-cli completes from its own command table the same way, whatever the server).
//!
//! - Tab on the first word completes command names (and the client's own `help`, `quit`,
//!   `exit`, `clear`); on the second word after a command with subcommands (CONFIG, CLIENT,
//!   CLUSTER, ...) it completes those, and after `help` command names. The completion takes
//!   the case of what was typed: `se` gives `set`, `SE` gives `SET`.
//! - While typing, the arguments still to come are shown after the cursor in grey, as
//!   redis-cli shows them: `set k ` shows `value [NX|XX] ...`. Each argument typed removes
//!   one from the hint, up to the first optional one.

use std::borrow::Cow;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::help::{CommandDoc, Docs};
use super::quoting::split_args;

/// Words the client itself answers.
const CLIENT_WORDS: &[&str] = &["CLEAR", "EXIT", "HELP", "QUIT"];

/// The rustyline helper of the interactive client.
pub struct LineHelper {
    docs: Docs,
    color: bool,
}

impl LineHelper {
    pub fn new(docs: Docs, color: bool) -> LineHelper {
        LineHelper { docs, color }
    }

    /// The words that may complete `word` (case-insensitive prefix), in `word`'s case.
    fn candidates<'a>(names: impl Iterator<Item = &'a str>, word: &str) -> Vec<String> {
        let lower = word.chars().any(|c| c.is_ascii_lowercase())
            && !word.chars().any(|c| c.is_ascii_uppercase());
        let want = word.to_ascii_uppercase();
        let mut out: Vec<String> = names
            .filter(|n| n.starts_with(&want))
            .map(|n| {
                if lower {
                    n.to_ascii_lowercase()
                } else {
                    n.to_string()
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Completions of the word that ends at `pos`: where it starts, and the candidates.
    pub fn complete_at(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.starts_with(['"', '\'']) {
            return (start, Vec::new());
        }
        let earlier: Vec<String> = before[..start]
            .split_ascii_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let first_words = || {
            self.docs
                .commands
                .iter()
                .map(|c| c.name.split(' ').next().unwrap_or_default())
        };
        let found = match earlier.as_slice() {
            [] => Self::candidates(first_words().chain(CLIENT_WORDS.iter().copied()), word),
            [help] if help == "HELP" => Self::candidates(first_words(), word),
            [cmd] => {
                let prefix = format!("{cmd} ");
                let subs = self
                    .docs
                    .commands
                    .iter()
                    .filter_map(|c| c.name.strip_prefix(&prefix));
                Self::candidates(subs, word)
            }
            _ => Vec::new(),
        };
        (start, found)
    }

    /// The command (or subcommand) `args` start with, and how many words name it.
    fn doc_of(&self, args: &[String]) -> Option<(&CommandDoc, usize)> {
        let find = |name: &str| self.docs.commands.iter().find(|c| c.name == name);
        if args.len() >= 2
            && let Some(d) = find(&format!("{} {}", args[0], args[1]))
        {
            return Some((d, 2));
        }
        find(args.first()?).map(|d| (d, 1))
    }

    /// The arguments still to type after `line`, redis-cli's way: the command's syntax with
    /// one word dropped per argument typed, stopping at the first optional one.
    pub fn hint_for(&self, line: &str) -> Option<String> {
        let args: Vec<String> = split_args(line.as_bytes())
            .ok()?
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .collect();
        let ends_space = line.ends_with(|c: char| c.is_ascii_whitespace());
        let (doc, used) = self.doc_of(&args)?;
        if doc.params.is_empty() {
            return None;
        }
        let mut hint = doc.params.as_str();
        let mut to_remove = args.len().saturating_sub(used);
        while to_remove > 0 && !hint.is_empty() && !hint.starts_with('[') {
            if hint.starts_with(' ') {
                to_remove -= 1;
            }
            hint = &hint[1..];
        }
        if hint.is_empty() {
            return None;
        }
        Some(if ends_space {
            hint.to_string()
        } else {
            format!(" {hint}")
        })
    }
}

impl Completer for LineHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.complete_at(line, pos);
        let pairs = found
            .into_iter()
            .map(|w| Pair {
                display: w.clone(),
                replacement: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for LineHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        self.hint_for(line)
    }
}

impl Highlighter for LineHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color {
            Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
        } else {
            Cow::Borrowed(hint)
        }
    }
}

impl Validator for LineHelper {}

impl Helper for LineHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper() -> LineHelper {
        LineHelper::new(Docs::built_in(), false)
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        helper().complete_at(line, line.len())
    }

    #[test]
    fn the_first_word_completes_command_names_in_the_case_typed() {
        let (start, found) = complete("setr");
        assert_eq!(start, 0);
        assert_eq!(found, ["setrange"]);
        let (_, found) = complete("GETE");
        assert_eq!(found, ["GETEX"]);
        let (_, found) = complete("inc");
        assert_eq!(found, ["incr", "incrby", "incrbyfloat"]);
        let (_, found) = complete("he");
        assert_eq!(found, ["hello", "help"], "the client's own words too");
        assert!(complete("nosuch").1.is_empty());
        // Only the word before the cursor counts.
        let (start, found) = helper().complete_at("getex k", 3);
        assert_eq!(start, 0);
        assert!(found.contains(&"getex".to_string()) && found.contains(&"get".to_string()));
        assert!(found.iter().all(|w| w.starts_with("get")), "{found:?}");
    }

    #[test]
    fn the_second_word_completes_subcommands_and_help_topics() {
        let (start, found) = complete("config g");
        assert_eq!(start, 7);
        assert_eq!(found, ["get"]);
        let (_, found) = complete("CLIENT SETN");
        assert_eq!(found, ["SETNAME"]);
        assert_eq!(complete("help bitf").1, ["bitfield", "bitfield_ro"]);
        assert!(complete("get ke").1.is_empty(), "keys are not completed");
        assert!(complete("config get ma").1.is_empty());
    }

    #[test]
    fn hints_show_the_arguments_still_to_type() {
        let h = helper();
        let set = h.hint_for("set").expect("SET has a hint");
        assert!(set.starts_with(" key value"), "{set}");
        assert_eq!(h.hint_for("set ").unwrap(), set[1..]);
        assert!(h.hint_for("set k ").unwrap().starts_with("value"));
        let after_value = h.hint_for("set k v ").unwrap();
        assert!(after_value.starts_with('['), "{after_value}");
        assert_eq!(
            h.hint_for("SET k v NX "),
            Some(after_value),
            "optional ones stay"
        );
        assert_eq!(h.hint_for("get k "), None, "nothing left");
        assert_eq!(h.hint_for("get"), Some(" key".into()));
        assert_eq!(
            h.hint_for("config get "),
            Some("parameter [parameter ...]".into())
        );
        assert_eq!(h.hint_for("nosuch "), None);
        assert_eq!(h.hint_for("ping"), Some(" [message]".into()));
        assert_eq!(h.hint_for("set \"unclosed"), None);
    }
}

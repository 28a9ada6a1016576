//! `help`, built from the server's `COMMAND DOCS` (fetched once per connection by the session).
//!
//! - `help`: every command the server knows with its summary, grouped by group;
//! - `help CMD [SUB]`: the syntax of every command whose name starts with these words (so
//!   `help config` shows CONFIG and all its subcommands), its summary, since and group, laid
//!   out like redis-cli 7's help;
//! - `help @GROUP`: the same for every command in a group.
//!
//! The syntax line is built from the DOCS arguments with redis-cli 7.2's rules
//! (`cliAddArgument`): `[optional]`, `a|b` for oneof, `TOKEN value`, `x [x ...]` for multiple.

use std::collections::BTreeMap;
use std::io::{self, Write};

use simplekv_net::resp::Reply;

/// One command or subcommand, as `help` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDoc {
    /// Uppercase; subcommands as `CONFIG GET`.
    pub name: String,
    /// The arguments, e.g. `key value [NX|XX]`; empty for none.
    pub params: String,
    pub summary: String,
    pub since: String,
    pub group: String,
}

impl CommandDoc {
    /// `SET key value [NX|XX] ...`
    #[cfg(test)]
    pub fn syntax(&self) -> String {
        if self.params.is_empty() {
            self.name.clone()
        } else {
            format!("{} {}", self.name, self.params)
        }
    }
}

/// Every command in a `COMMAND DOCS` reply, subcommands included, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Docs {
    pub commands: Vec<CommandDoc>,
}

fn text(r: &Reply) -> Option<String> {
    match r {
        Reply::Bulk(b) | Reply::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// The value of `key` in a RESP2 flat map `[k1, v1, k2, v2, ...]`.
fn field<'a>(map: &'a [Reply], key: &str) -> Option<&'a Reply> {
    map.chunks_exact(2)
        .find(|kv| kv.first().and_then(text).as_deref() == Some(key))
        .and_then(|kv| kv.get(1))
}

fn field_text(map: &[Reply], key: &str) -> String {
    field(map, key).and_then(text).unwrap_or_default()
}

/// `""` for an empty string, as redis-cli's `sdscat_orempty`.
fn or_empty(s: String) -> String {
    if s.is_empty() { "\"\"".to_string() } else { s }
}

fn join_args(args: Option<&Reply>, sep: &str) -> String {
    match args {
        Some(Reply::Array(items)) => items.iter().map(arg_syntax).collect::<Vec<_>>().join(sep),
        _ => String::new(),
    }
}

/// One argument's syntax, from its DOCS map (redis-cli 7.2's `cliAddArgument`).
pub fn arg_syntax(arg: &Reply) -> String {
    let Reply::Array(map) = arg else {
        return String::new();
    };
    let name = field_text(map, "name");
    let typ = field_text(map, "type");
    let token = field(map, "token").and_then(text).map(or_empty);
    let (mut optional, mut multiple, mut multiple_token) = (false, false, false);
    if let Some(Reply::Array(flags)) = field(map, "flags") {
        for flag in flags.iter().filter_map(text) {
            match flag.as_str() {
                "optional" => optional = true,
                "multiple" => multiple = true,
                "multiple_token" => multiple_token = true,
                _ => {}
            }
        }
    }
    let repeat = match typ.as_str() {
        "oneof" => join_args(field(map, "arguments"), "|"),
        "block" => join_args(field(map, "arguments"), " "),
        "pure-token" => String::new(),
        // key, string, integer, double, pattern, unix-time, token, and anything newer.
        _ => or_empty(name),
    };
    let mut token_part = token.unwrap_or_default();
    if !token_part.is_empty() && typ != "pure-token" {
        token_part.push(' ');
    }
    let mut out = String::new();
    if optional {
        out.push('[');
    }
    out.push_str(&token_part);
    out.push_str(&repeat);
    if multiple {
        out.push_str(" [");
        if multiple_token {
            out.push_str(&token_part);
        }
        out.push_str(&repeat);
        out.push_str(" ...]");
    }
    if optional {
        out.push(']');
    }
    out
}

impl Docs {
    /// Reads a `COMMAND DOCS` reply (RESP2: `[name, docs, name, docs, ...]`). Entries of an
    /// unexpected shape are skipped; this never fails on server input.
    pub fn from_reply(reply: &Reply) -> Docs {
        let mut commands = Vec::new();
        if let Reply::Array(items) = reply {
            collect(items, "", &mut commands);
        }
        commands.sort_by(|a, b| a.name.cmp(&b.name));
        commands.dedup_by(|a, b| a.name == b.name);
        Docs { commands }
    }

    /// The docs of the commands this build of simplekv knows (the same COMMAND DOCS reply a
    /// server of this version gives), for help without a server that answers COMMAND DOCS:
    /// none reachable, one asking for AUTH first, or the gRPC service.
    pub fn built_in() -> Docs {
        use simplekv_net::cmd::{COMMANDS, table};
        use simplekv_net::resp::{parse_reply, write_array_len, write_bulk};
        let mut r = Vec::new();
        write_array_len(&mut r, COMMANDS.len() * 2);
        for spec in COMMANDS {
            write_bulk(&mut r, spec.name.as_bytes());
            table::write_command_docs(spec, &mut r);
        }
        match parse_reply(&r) {
            Ok(Some((reply, _))) => Docs::from_reply(&reply),
            _ => Docs {
                commands: Vec::new(),
            },
        }
    }

    /// The commands whose name words start with `words` (case-insensitive).
    pub fn matching(&self, words: &[Vec<u8>]) -> Vec<&CommandDoc> {
        let want: Vec<String> = words
            .iter()
            .map(|w| String::from_utf8_lossy(w).to_uppercase())
            .collect();
        self.commands
            .iter()
            .filter(|c| {
                let have: Vec<&str> = c.name.split(' ').collect();
                have.len() >= want.len() && have.iter().zip(&want).all(|(h, w)| h == w)
            })
            .collect()
    }

    /// `help` with no arguments.
    pub fn write_overview(&self, target: &str, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "simplekv cli, {target}.")?;
        writeln!(
            out,
            "Type \"help <command>\" for a command's syntax, \"help @<group>\" for a group's \
             commands, \"connect <host> <port>\" to change servers, \"quit\" to exit."
        )?;
        let mut groups: BTreeMap<&str, Vec<&CommandDoc>> = BTreeMap::new();
        for c in &self.commands {
            groups.entry(c.group.as_str()).or_default().push(c);
        }
        let width = self
            .commands
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for (group, cmds) in groups {
            writeln!(out)?;
            writeln!(out, "@{group}")?;
            for c in cmds {
                writeln!(out, "  {:<width$}  {}", c.name, c.summary)?;
            }
        }
        Ok(())
    }

    /// `help CMD ...` or `help @group`. Returns false (after saying so) when nothing matched.
    pub fn write_help(
        &self,
        words: &[Vec<u8>],
        color: bool,
        out: &mut dyn Write,
    ) -> io::Result<bool> {
        let group = words
            .first()
            .and_then(|w| w.strip_prefix(b"@"))
            .filter(|_| words.len() == 1)
            .map(|g| String::from_utf8_lossy(g).to_lowercase());
        let found: Vec<&CommandDoc> = match &group {
            Some(g) => self.commands.iter().filter(|c| &c.group == g).collect(),
            None => self.matching(words),
        };
        if found.is_empty() {
            let what: Vec<String> = words
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            writeln!(out, "No help for '{}'.", what.join(" "))?;
            return Ok(false);
        }
        for c in found {
            write_entry(c, group.is_none(), color, out)?;
        }
        writeln!(out)?;
        Ok(true)
    }
}

/// One entry, like redis-cli's `cliOutputCommandHelp` (colors only on a terminal).
fn write_entry(
    c: &CommandDoc,
    with_group: bool,
    color: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let (bold, grey, yellow, reset) = if color {
        ("\x1b[1m", "\x1b[90m", "\x1b[33m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    writeln!(out)?;
    if c.params.is_empty() {
        writeln!(out, "  {bold}{}{reset}", c.name)?;
    } else {
        writeln!(out, "  {bold}{}{reset} {grey}{}{reset}", c.name, c.params)?;
    }
    writeln!(out, "  {yellow}summary:{reset} {}", c.summary)?;
    if !c.since.is_empty() {
        writeln!(out, "  {yellow}since:{reset} {}", c.since)?;
    }
    if with_group {
        writeln!(out, "  {yellow}group:{reset} {}", c.group)?;
    }
    Ok(())
}

/// Adds the commands of a flat `[name, docs, ...]` list, and their subcommands.
fn collect(items: &[Reply], parent: &str, out: &mut Vec<CommandDoc>) {
    for pair in items.chunks_exact(2) {
        let (Some(name), Some(Reply::Array(map))) = (pair.first().and_then(text), pair.get(1))
        else {
            continue;
        };
        // Subcommands are named `container|sub`.
        let name = name.rsplit('|').next().unwrap_or_default().to_uppercase();
        let name = if parent.is_empty() {
            name
        } else {
            format!("{parent} {name}")
        };
        let params = match field(map, "arguments") {
            Some(Reply::Array(args)) => args.iter().map(arg_syntax).collect::<Vec<_>>().join(" "),
            _ => String::new(),
        };
        out.push(CommandDoc {
            name: name.clone(),
            params,
            summary: field_text(map, "summary"),
            since: field_text(map, "since"),
            group: field_text(map, "group"),
        });
        if let Some(Reply::Array(subs)) = field(map, "subcommands") {
            collect(subs, &name, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simplekv_net::resp::parse_reply;

    fn b(s: &str) -> Reply {
        Reply::bulk(s)
    }

    fn map(kv: Vec<(&str, Reply)>) -> Reply {
        Reply::Array(kv.into_iter().flat_map(|(k, v)| [b(k), v]).collect())
    }

    fn flags(f: &[&str]) -> Reply {
        Reply::Array(
            f.iter()
                .map(|s| Reply::Simple(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn arg(name: &str, typ: &str, extra: Vec<(&str, Reply)>) -> Reply {
        let mut kv = vec![("name", b(name)), ("type", b(typ))];
        kv.extend(extra);
        map(kv)
    }

    fn token(name: &str, tok: &str) -> Reply {
        arg(name, "pure-token", vec![("token", b(tok))])
    }

    #[test]
    fn plain_and_optional_and_multiple() {
        assert_eq!(arg_syntax(&arg("key", "key", vec![])), "key");
        assert_eq!(
            arg_syntax(&arg("key", "key", vec![("flags", flags(&["multiple"]))])),
            "key [key ...]"
        );
        assert_eq!(
            arg_syntax(&arg(
                "count",
                "integer",
                vec![("flags", flags(&["optional"]))]
            )),
            "[count]"
        );
        assert_eq!(
            arg_syntax(&arg(
                "x",
                "string",
                vec![("flags", flags(&["optional", "multiple"]))]
            )),
            "[x [x ...]]"
        );
        assert_eq!(arg_syntax(&arg("", "string", vec![])), "\"\"");
        assert_eq!(arg_syntax(&b("garbage")), "");
    }

    #[test]
    fn tokens_oneof_and_blocks() {
        assert_eq!(arg_syntax(&token("get", "GET")), "GET");
        assert_eq!(
            arg_syntax(&arg("seconds", "integer", vec![("token", b("EX"))])),
            "EX seconds"
        );
        let cond = arg(
            "condition",
            "oneof",
            vec![
                ("flags", flags(&["optional"])),
                (
                    "arguments",
                    Reply::Array(vec![token("nx", "NX"), token("xx", "XX")]),
                ),
            ],
        );
        assert_eq!(arg_syntax(&cond), "[NX|XX]");
        let block = arg(
            "field_value",
            "block",
            vec![
                ("flags", flags(&["multiple"])),
                (
                    "arguments",
                    Reply::Array(vec![
                        arg("field", "string", vec![]),
                        arg("value", "string", vec![]),
                    ]),
                ),
            ],
        );
        assert_eq!(arg_syntax(&block), "field value [field value ...]");
        let prefix = arg(
            "prefix",
            "string",
            vec![
                ("token", b("PREFIX")),
                ("flags", flags(&["optional", "multiple", "multiple_token"])),
            ],
        );
        assert_eq!(arg_syntax(&prefix), "[PREFIX prefix [PREFIX prefix ...]]");
        let id = arg(
            "id",
            "block",
            vec![
                ("token", b("ID")),
                ("flags", flags(&["optional"])),
                (
                    "arguments",
                    Reply::Array(vec![arg(
                        "client-id",
                        "integer",
                        vec![("flags", flags(&["multiple"]))],
                    )]),
                ),
            ],
        );
        assert_eq!(arg_syntax(&id), "[ID client-id [client-id ...]]");
    }

    /// The docs of two commands and a container, as the server encodes them.
    fn sample() -> Docs {
        let set = map(vec![
            ("summary", b("Set the string value of a key")),
            ("since", b("1.0.0")),
            ("group", b("string")),
            (
                "arguments",
                Reply::Array(vec![
                    arg("key", "key", vec![("key_spec_index", Reply::Integer(0))]),
                    arg("value", "string", vec![]),
                    arg(
                        "condition",
                        "oneof",
                        vec![
                            ("flags", flags(&["optional"])),
                            (
                                "arguments",
                                Reply::Array(vec![token("nx", "NX"), token("xx", "XX")]),
                            ),
                        ],
                    ),
                ]),
            ),
        ]);
        let ping = map(vec![
            ("summary", b("Ping the server")),
            ("since", b("1.0.0")),
            ("group", b("connection")),
        ]);
        let config_get = map(vec![
            ("summary", b("Get the values of configuration parameters")),
            ("since", b("2.0.0")),
            ("group", b("server")),
            (
                "arguments",
                Reply::Array(vec![arg(
                    "parameter",
                    "string",
                    vec![("flags", flags(&["multiple"]))],
                )]),
            ),
        ]);
        let config = map(vec![
            (
                "summary",
                b("A container for server configuration commands"),
            ),
            ("since", b("2.0.0")),
            ("group", b("server")),
            (
                "subcommands",
                Reply::Array(vec![b("config|get"), config_get]),
            ),
        ]);
        let reply = Reply::Array(vec![
            b("set"),
            set,
            b("ping"),
            ping,
            b("config"),
            config,
            b("bad"),
            b("x"),
        ]);
        // Through the wire format, as the session gets it.
        let (parsed, _) = parse_reply(&reply.to_bytes())
            .expect("parse")
            .expect("complete");
        Docs::from_reply(&parsed)
    }

    #[test]
    fn docs_from_reply() {
        let d = sample();
        let names: Vec<&str> = d.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["CONFIG", "CONFIG GET", "PING", "SET"]);
        let set = &d.commands[3];
        assert_eq!(set.syntax(), "SET key value [NX|XX]");
        assert_eq!(set.summary, "Set the string value of a key");
        assert_eq!(set.since, "1.0.0");
        assert_eq!(set.group, "string");
        assert_eq!(
            d.commands[1].syntax(),
            "CONFIG GET parameter [parameter ...]"
        );
        assert_eq!(d.commands[2].syntax(), "PING");
        assert!(Docs::from_reply(&Reply::Integer(1)).commands.is_empty());
        assert!(Docs::from_reply(&Reply::error("ERR x")).commands.is_empty());
    }

    fn help(d: &Docs, words: &[&str]) -> (bool, String) {
        let words: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        let mut out = Vec::new();
        let found = d.write_help(&words, false, &mut out).expect("write");
        (found, String::from_utf8(out).expect("utf8"))
    }

    #[test]
    fn help_for_a_command() {
        let d = sample();
        assert_eq!(
            help(&d, &["set"]),
            (
                true,
                "\n  SET key value [NX|XX]\n  summary: Set the string value of a key\n  \
                 since: 1.0.0\n  group: string\n\n"
                    .to_string()
            )
        );
        // A container shows its subcommands too; a subcommand alone only itself.
        let (_, all) = help(&d, &["Config"]);
        assert!(
            all.contains("  CONFIG\n") && all.contains("  CONFIG GET parameter"),
            "{all}"
        );
        let (_, one) = help(&d, &["config", "GET"]);
        assert!(
            !one.contains("  CONFIG\n") && one.contains("CONFIG GET"),
            "{one}"
        );
        assert_eq!(
            help(&d, &["nosuch"]),
            (false, "No help for 'nosuch'.\n".to_string())
        );
        // Whole words only: `help se` is not SET.
        assert!(!help(&d, &["se"]).0);
    }

    #[test]
    fn help_for_a_group_omits_the_group_line() {
        let d = sample();
        let (found, s) = help(&d, &["@server"]);
        assert!(found);
        assert!(s.contains("CONFIG GET parameter [parameter ...]"), "{s}");
        assert!(!s.contains("group:") && !s.contains("SET"), "{s}");
        assert!(!help(&d, &["@nosuch"]).0);
    }

    #[test]
    fn colors_only_when_asked() {
        let d = sample();
        let mut out = Vec::new();
        d.write_help(&[b"ping".to_vec()], true, &mut out)
            .expect("write");
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.contains("\x1b[1mPING\x1b[0m"), "{s:?}");
        assert!(!help(&d, &["ping"]).1.contains('\x1b'));
    }

    #[test]
    fn built_in_docs_cover_every_command_of_this_build() {
        let d = Docs::built_in();
        for spec in simplekv_net::cmd::COMMANDS {
            let name = spec.name.as_bytes().to_vec();
            assert!(!d.matching(&[name]).is_empty(), "{}", spec.name);
        }
        assert!(help(&d, &["bitfield"]).1.contains("OVERFLOW"));
    }

    #[test]
    fn overview_groups_commands() {
        let d = sample();
        let mut out = Vec::new();
        d.write_overview("127.0.0.1:7379", &mut out).expect("write");
        let s = String::from_utf8(out).expect("utf8");
        let conn = s.find("@connection").expect("connection group");
        let server = s.find("@server").expect("server group");
        let string = s.find("@string").expect("string group");
        assert!(conn < server && server < string, "{s}");
        assert!(s.contains("  PING        Ping the server\n"), "{s}");
        assert!(s.contains("  CONFIG GET  Get the values"), "{s}");
        let ping = s.find("PING").expect("ping");
        assert!(conn < ping && ping < server);
    }
}

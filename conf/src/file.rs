//! Reading and writing the TOML file.
//!
//! The document is walked through the registry rather than deserialised with serde, so a
//! value in a file goes through exactly the parsing and range checks that `--set` and
//! `CONFIG SET` use, and every error names the setting and points at the line.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::settings::{self, Access, SETTINGS, SettingInfo};
use crate::{ConfError, Config};

/// Parses `text` over the defaults, checking each setting's own range but not the rules
/// between settings.
pub(crate) fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfError> {
    let document = DeTable::parse(text).map_err(|e| {
        let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
        ConfError::Toml {
            path: path.map(Path::to_path_buf),
            line,
            column,
            message: e.message().trim().replace('\n', "; "),
        }
    })?;
    let in_file = |span: Range<usize>, error: ConfError| {
        let location = line_column(text, span.start);
        ConfError::InFile {
            path: path.map(Path::to_path_buf),
            location: Some(location),
            error: Box::new(error),
        }
    };

    // Flatten to (dotted name, key span, value) and sort by position, so the error reported
    // is the first one in the file rather than the first in the map's key order.
    let mut entries: Vec<(String, Range<usize>, &Spanned<DeValue<'_>>)> = Vec::new();
    for (section, table) in document.get_ref() {
        let section_name = section.get_ref().as_ref();
        match table.get_ref() {
            DeValue::Table(keys) => {
                if keys.is_empty() && !SETTINGS.iter().any(|s| s.section() == section_name) {
                    return Err(in_file(section.span(), settings::unknown(section_name)));
                }
                for (key, value) in keys {
                    let name = format!("{section_name}.{}", key.get_ref());
                    entries.push((name, key.span(), value));
                }
            }
            _ => {
                let error = if SETTINGS.iter().any(|s| s.section() == section_name) {
                    ConfError::InvalidValue {
                        name: section_table_name(section_name),
                        value: value_text(text, table).0,
                        expected: format!("a table [{section_name}]"),
                    }
                } else {
                    settings::unknown(section_name)
                };
                return Err(in_file(section.span(), error));
            }
        }
    }
    entries.sort_by_key(|(_, span, _)| span.start);

    let mut config = Config::default();
    for (name, key_span, value) in entries {
        let Some(info) = settings::find_dotted(&name) else {
            return Err(in_file(key_span, settings::unknown(&name)));
        };
        apply_value(info, &mut config, text, value).map_err(|e| in_file(value.span(), e))?;
    }
    Ok(config)
}

/// The `&'static` name of a known section, for `InvalidValue::name`.
fn section_table_name(section: &str) -> &'static str {
    SETTINGS
        .iter()
        .map(|s| s.section())
        .find(|s| *s == section)
        .unwrap_or("config")
}

/// Converts a TOML value to the text form `SettingInfo::apply` takes, after checking that
/// its TOML type suits the setting (so `port = "7379"` is an error, as a string is not a
/// port, but `segment_size = 268435456` and `segment_size = "256mb"` both work).
fn apply_value(
    info: &SettingInfo,
    config: &mut Config,
    text: &str,
    value: &Spanned<DeValue<'_>>,
) -> Result<(), ConfError> {
    let (shown, kind) = value_text(text, value);
    let type_ok = match info.access {
        Access::Int { .. } | Access::SignedInt { .. } => kind == "integer",
        // "" is how the optional ones say none, as their accepted values say.
        Access::OptInt { .. } => kind == "integer" || (kind == "string" && shown.is_empty()),
        Access::Size { .. } => kind == "integer" || kind == "string",
        Access::Float { .. } => kind == "float" || kind == "integer",
        Access::Bool { .. } => kind == "boolean",
        Access::Text { .. } | Access::OptText { .. } => kind == "string",
        // acks = 1 is how Kafka users write it.
        Access::Choice { .. } => kind == "string" || kind == "integer",
    };
    if !type_ok {
        return Err(ConfError::InvalidValue {
            name: info.name,
            value: shown,
            expected: format!("{}, not a TOML {kind}", info.accepts()),
        });
    }
    info.apply(config, &shown)
}

/// The value as text (string contents unquoted, integers in decimal) and its TOML type.
fn value_text(text: &str, value: &Spanned<DeValue<'_>>) -> (String, &'static str) {
    match value.get_ref() {
        DeValue::String(s) => (s.to_string(), "string"),
        DeValue::Integer(i) => {
            let shown = i64::from_str_radix(i.as_str(), i.radix())
                .map(|v| v.to_string())
                .unwrap_or_else(|_| i.to_string());
            (shown, "integer")
        }
        DeValue::Float(f) => (f.as_str().to_owned(), "float"),
        DeValue::Boolean(b) => (b.to_string(), "boolean"),
        other => {
            let raw = text.get(value.span()).unwrap_or_default().to_owned();
            (raw, other.type_str())
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Every setting, grouped by section in registry order; unset optional settings omitted.
pub(crate) fn to_toml_string(config: &Config) -> String {
    let mut out = String::new();
    let mut current_section = "";
    for info in SETTINGS {
        if info.section() != current_section {
            if !out.is_empty() {
                out.push('\n');
            }
            current_section = info.section();
            out.push_str(&format!("[{current_section}]\n"));
        }
        if let Some(value) = info.toml_value(config) {
            out.push_str(&format!("{} = {value}\n", info.key()));
        }
    }
    out
}

//! `poolside config`: the effective configuration as TOML, secrets redacted,
//! each value annotated with the source it came from.

use std::fmt::Write as _;

use figment::Figment;
use serde_json::Value as Json;

use super::{sources, url, Config};

/// Source comments start in this column so a column of values reads as a table.
const COMMENT_COLUMN: usize = 44;

/// The effective configuration as TOML. Secrets print as `<redacted>` (their
/// `Serialize`) and the upstream URL loses its password; unset optional keys
/// are listed as comments so every key is visible.
pub fn render_effective(config: &Config, figment: &Figment) -> String {
    let profile = config.profile;
    let defaults = format!("defaults ({profile})");
    let file = figment.metadata().find_map(|m| match &m.source {
        Some(figment::Source::File(p)) => Some(p.display().to_string()),
        _ => None,
    });
    let mut out = String::new();
    let _ = writeln!(out, "# poolside effective configuration, profile {profile}");
    let _ = writeln!(
        out,
        "# layers, later wins: {defaults} < profiles/{profile}.toml or --config \
         < REDIS_* < POOLSIDE_* < flags"
    );
    let _ = writeln!(
        out,
        "# file: {}",
        file.unwrap_or_else(|| format!("none (no profiles/{profile}.toml in this directory)"))
    );
    let mut root = match serde_json::to_value(config) {
        Ok(Json::Object(root)) => root,
        _ => return out + "# cannot render the configuration\n",
    };
    if let Some(Json::Object(upstream)) = root.get_mut("upstream") {
        let url = url::redact(&config.upstream.url);
        upstream.insert("url".into(), Json::String(url));
    }
    let mut sections = Vec::new();
    for (key, value) in &root {
        match value {
            Json::Object(table) => sections.push((key, table)),
            _ => write_value(&mut out, figment, &defaults, key, key, value),
        }
    }
    for (name, table) in sections {
        write_table(&mut out, figment, &defaults, name, table);
    }
    out
}

/// `[name]` and its keys, then its sub-tables (`[upstream.sentinel]`).
fn write_table(
    out: &mut String,
    figment: &Figment,
    defaults: &str,
    name: &str,
    table: &serde_json::Map<String, Json>,
) {
    let _ = writeln!(out, "\n[{name}]");
    let mut nested = Vec::new();
    for (key, value) in table {
        let path = format!("{name}.{key}");
        match value {
            Json::Object(sub) => nested.push((path, sub)),
            _ => write_value(out, figment, defaults, key, &path, value),
        }
    }
    for (path, sub) in nested {
        write_table(out, figment, defaults, &path, sub);
    }
}

fn write_value(
    out: &mut String,
    figment: &Figment,
    defaults: &str,
    key: &str,
    path: &str,
    value: &Json,
) {
    // `null` (an unset Option) has no TOML form: show the key as a comment.
    let Ok(value) = toml::Value::try_from(value) else {
        let _ = writeln!(out, "# {key} = (not set)");
        return;
    };
    let line = format!("{key} = {value}");
    let source = sources::source_of(figment, path, defaults);
    let _ = writeln!(out, "{line:<COMMENT_COLUMN$} # {source}");
}

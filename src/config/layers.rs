//! The layered sources of ASP.NET configuration, as upstream reads them: `appsettings.json`
//! (or `--config PATH`), then `appsettings.{Environment}.json` beside it, then environment
//! variables (`Section__a__b`), later ones winning. Names are case-insensitive; JSON may
//! carry comments and trailing commas, as ASP.NET's JSON provider allows.
//!
//! This module only reads: it flattens one top-level section into `a:b` paths with their
//! values. What the paths mean is decided by the modules that read a section
//! (`keyConnectorSettings` through [`super::catalog::SettingValues`], `Serilog` in
//! [`super::logging`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ConfigError, ConfigSource};

/// Flattened settings below the section: lower-cased path → (path as written, value).
#[derive(Default)]
pub(crate) struct Values {
    pub(super) entries: BTreeMap<String, (String, String)>,
}

impl Values {
    pub(super) fn set(&mut self, path: String, value: String) {
        self.entries
            .insert(path.to_ascii_lowercase(), (path, value));
    }

    /// A non-empty value (.NET binds an empty string as "not configured" for our purposes).
    pub(super) fn get(&self, path: &str) -> Option<&str> {
        self.entries
            .get(&path.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

/// One section read from every source.
pub(super) struct Section {
    pub(super) values: Values,
    /// Where `appsettings.json` was read from, if one was.
    pub(super) base_file: Option<PathBuf>,
}

/// The configuration files in the order they apply: the base file, then the one for the
/// environment (`ASPNETCORE_ENVIRONMENT`, else `DOTNET_ENVIRONMENT`, else `Production`).
fn configuration_files(source: &ConfigSource) -> Result<Vec<PathBuf>, ConfigError> {
    let base = match &source.file {
        Some(path) => {
            if !path.is_file() {
                return Err(file_error(path, "does not exist or is not a file"));
            }
            Some(path.clone())
        }
        None => Some(PathBuf::from("appsettings.json")).filter(|p| p.is_file()),
    };
    let mut files = Vec::new();
    if let Some(base) = base {
        let environment = env_value(&source.env, "ASPNETCORE_ENVIRONMENT")
            .or_else(|| env_value(&source.env, "DOTNET_ENVIRONMENT"))
            .unwrap_or("Production");
        let layered = base.with_file_name(format!("appsettings.{environment}.json"));
        files.push(base);
        if layered.is_file() {
            files.push(layered);
        }
    }
    Ok(files)
}

/// Reads the top-level section `name` (matched case-insensitively) from the files, then from
/// the environment variables `name__...`, which override the files.
pub(super) fn read_section(source: &ConfigSource, name: &str) -> Result<Section, ConfigError> {
    let mut values = Values::default();
    let files = configuration_files(source)?;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| file_error(file, &e.to_string()).caused_by(e))?;
        let json: Value = serde_json::from_str(&strip_json_comments(&text))
            .map_err(|e| file_error(file, &format!("is not valid JSON: {e}")).caused_by(e))?;
        if let Some((_, section)) = json
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        {
            flatten(section, String::new(), &mut values);
        }
    }

    let prefix = format!("{}__", name.to_ascii_lowercase());
    for (variable, value) in &source.env {
        let lower = variable.to_ascii_lowercase();
        if lower.starts_with(&prefix) {
            // ASCII lower-casing keeps byte offsets, so the original spelling is kept.
            let original = &variable[prefix.len()..];
            values.set(original.replace("__", ":"), value.clone());
        }
    }
    Ok(Section {
        values,
        base_file: files.into_iter().next(),
    })
}

pub(super) fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn file_error(path: &Path, message: &str) -> ConfigError {
    ConfigError {
        setting: format!("configuration file {}", path.display()),
        env_var: "--config".into(),
        message: message.to_owned(),
        source: None,
    }
}

fn flatten(value: &Value, path: String, out: &mut Values) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}:{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                flatten(child, join(key), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                flatten(child, join(&index.to_string()), out);
            }
        }
        Value::Null => out.set(path, String::new()),
        Value::String(text) => out.set(path, text.clone()),
        Value::Bool(b) => out.set(path, if *b { "True" } else { "False" }.into()),
        Value::Number(n) => out.set(path, n.to_string()),
    }
}

/// Removes `//` and `/* */` comments and trailing commas outside strings, which ASP.NET's
/// JSON configuration provider tolerates and `serde_json` does not. Written by hand: it is a
/// small state machine, and no widely used crate does exactly this.
fn strip_json_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for next in chars.by_ref() {
                    if previous == '*' && next == '/' {
                        break;
                    }
                    previous = next;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    remove_trailing_commas(&out)
}

/// Drops a comma that only whitespace separates from a closing `}` or `]`, outside strings.
/// Runs after comments are gone, so a single look-ahead over whitespace suffices.
fn remove_trailing_commas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ','
            && matches!(
                text[index + 1..].trim_start().chars().next(),
                Some('}' | ']')
            )
        {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ConfigSource, read_section, strip_json_comments};
    use serde_json::Value;

    #[test]
    fn a_broken_file_keeps_the_parser_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("appsettings.json");
        std::fs::write(&file, "{ not json").unwrap();
        let source = ConfigSource {
            file: Some(file),
            env: Vec::new(),
        };
        let Err(error) = read_section(&source, "keyConnectorSettings") else {
            panic!("a broken file must be refused");
        };
        let cause = std::error::Error::source(&error).expect("the parser's error");
        assert!(
            cause.downcast_ref::<serde_json::Error>().is_some(),
            "{cause}"
        );
        assert!(error.to_string().contains("is not valid JSON"), "{error}");
    }

    #[test]
    fn comment_stripping_respects_strings() {
        let text = r#"{"a": "x // y", /* c */ "b": "/* z */", "c": [1, 2,], }"#;
        let value: Value = serde_json::from_str(&strip_json_comments(text)).unwrap();
        assert_eq!(value["a"], "x // y");
        assert_eq!(value["b"], "/* z */");
        assert_eq!(value["c"], serde_json::json!([1, 2]));
    }
}

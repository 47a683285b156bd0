//! ADO.NET connection strings: `key=value;key='quoted;value'`.
//!
//! The tokenizer the .NET providers share: pairs separated by `;`, keywords
//! case-insensitive and trimmed, values optionally in single or double quotes with the quote
//! doubled inside, empty segments ignored. Each store interprets the keywords it knows.

/// How to write a value holding `;`, said wherever a stray part suggests one.
pub const QUOTE_HINT: &str =
    " (a value holding `;` must be quoted: `Password='a;b'`, a quote inside doubled)";

/// A parsed connection string: lower-cased keywords with their values, in order.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be passwords: only keywords are shown.
        f.debug_list()
            .entries(self.pairs.iter().map(|(k, _)| k))
            .finish()
    }
}

impl ConnectionString {
    /// Parses the text; the error says where it is malformed (the part, counted from 1),
    /// never what it holds: a password with an unquoted `;` splits into parts that are
    /// pieces of the password, so not even a keyword is repeated.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        let mut rest = text;
        loop {
            let part = pairs.len() + 1;
            rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            let segment_end = rest.find(';').unwrap_or(rest.len());
            let Some(equals) = rest[..segment_end].find('=') else {
                return Err(format!("part {part} has no `=value`{QUOTE_HINT}"));
            };
            let keyword = rest[..equals].trim().to_ascii_lowercase();
            if keyword.is_empty() {
                return Err(format!("part {part} has no keyword before `=`"));
            }
            rest = rest[equals + 1..].trim_start();
            let value;
            if let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
                let mut out = String::new();
                let mut chars = rest[1..].char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == quote {
                        if rest[1 + i + 1..].starts_with(quote) {
                            out.push(quote);
                            chars.next();
                        } else {
                            end = Some(1 + i + 1);
                            break;
                        }
                    } else {
                        out.push(c);
                    }
                }
                let Some(end) = end else {
                    return Err(format!("the value of part {part} has no closing quote"));
                };
                value = out;
                rest = rest[end..].trim_start();
                if !rest.is_empty() && !rest.starts_with(';') {
                    return Err(format!("part {part} has text after its quoted value"));
                }
            } else {
                let end = rest.find(';').unwrap_or(rest.len());
                value = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            pairs.push((keyword, value));
        }
        Ok(Self { pairs })
    }

    /// The last value given for any of `keywords` (lower case), as .NET keeps the last.
    pub fn get(&self, keywords: &[&str]) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| keywords.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    /// Every keyword (lower case) with its value, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every keyword present, lower case.
    pub fn keywords(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_quoted_values() {
        let cs = ConnectionString::parse(
            " Data Source = /var/kc/keys.db ; Password='a;b''c'; Mode=\"Read\"\"Only\";;",
        )
        .unwrap();
        assert_eq!(cs.get(&["data source"]), Some("/var/kc/keys.db"));
        assert_eq!(cs.get(&["password"]), Some("a;b'c"));
        assert_eq!(cs.get(&["mode"]), Some("Read\"Only"));
        assert_eq!(
            cs.keywords().collect::<Vec<_>>(),
            ["data source", "password", "mode"]
        );
    }

    #[test]
    fn the_last_repeated_keyword_wins() {
        let cs = ConnectionString::parse("Host=a;HOST=b").unwrap();
        assert_eq!(cs.get(&["host"]), Some("b"));
    }

    #[test]
    fn malformed_strings_are_rejected_without_echoing_values() {
        assert!(ConnectionString::parse("Data Source").is_err());
        assert!(ConnectionString::parse("=x").is_err());
        for text in ["Password='secret", "Password='secret'x"] {
            let error = ConnectionString::parse(text).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
        }
        assert!(
            !format!("{:?}", ConnectionString::parse("Password=hunter2").unwrap())
                .contains("hunter2")
        );
    }
}

//! Where things are in the policy text, for errors serde cannot place.
//!
//! json5 reports positions only for what it rejects itself. Semantic errors (an undefined group,
//! a bad port range) are found after deserialising, so the text is scanned once into a flat
//! list of string tokens with their line, column and nesting depth, and the offending string is
//! looked up there: first inside the top-level section, narrowed to the entry (the n-th ACL, the
//! group named `k`) when the caller knows it.

/// A 1-based line and column (columns count characters). `0:0` means the position is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// A quoted string or a bare identifier (JSON5 allows unquoted keys).
    Str(String),
    Open,
    Close,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    /// Followed by `:`: an object key.
    is_key: bool,
    /// Brackets open around the token; for `Open` before it, for `Close` after it, so a
    /// matching pair has the same depth.
    depth: usize,
    at: Location,
}

impl Token {
    fn is_str(&self, s: &str) -> bool {
        matches!(&self.kind, Kind::Str(t) if t == s)
    }
}

/// Narrows a lookup inside a top-level section.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Entry<'a> {
    Whole,
    /// The n-th (0-based) element of a top-level array (`acls`).
    Index(usize),
    /// From the key `k` of a top-level object (`groups`, `hosts`, ...) onwards.
    Key(&'a str),
}

#[derive(Debug)]
pub(crate) struct SourceMap {
    tokens: Vec<Token>,
}

impl SourceMap {
    pub(crate) fn new(text: &str) -> SourceMap {
        let chars: Vec<char> = text.chars().collect();
        let mut tokens: Vec<Token> = Vec::new();
        let mut i = 0;
        let (mut line, mut column) = (1usize, 1usize);
        let mut depth = 0usize;
        // The last string token, while only whitespace and comments have followed it.
        let mut last_str: Option<usize> = None;

        // Moves past `n` characters, keeping line and column.
        let advance = |i: &mut usize, line: &mut usize, column: &mut usize, n: usize| {
            for _ in 0..n {
                if *i >= chars.len() {
                    return;
                }
                if chars[*i] == '\n' {
                    *line += 1;
                    *column = 1;
                } else {
                    *column += 1;
                }
                *i += 1;
            }
        };

        while i < chars.len() {
            let c = chars[i];
            let at = Location { line, column };
            if c.is_whitespace() {
                advance(&mut i, &mut line, &mut column, 1);
                continue;
            }
            if c == '/' && chars.get(i + 1) == Some(&'/') {
                while i < chars.len() && chars[i] != '\n' {
                    advance(&mut i, &mut line, &mut column, 1);
                }
                continue;
            }
            if c == '/' && chars.get(i + 1) == Some(&'*') {
                advance(&mut i, &mut line, &mut column, 2);
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    advance(&mut i, &mut line, &mut column, 1);
                }
                advance(&mut i, &mut line, &mut column, 2);
                continue;
            }
            // Any other significant character ends the key check of the last string.
            let pending = last_str.take();
            match c {
                ':' => {
                    if let Some(k) = pending {
                        tokens[k].is_key = true;
                    }
                    advance(&mut i, &mut line, &mut column, 1);
                }
                '{' | '[' => {
                    tokens.push(Token {
                        kind: Kind::Open,
                        is_key: false,
                        depth,
                        at,
                    });
                    depth += 1;
                    advance(&mut i, &mut line, &mut column, 1);
                }
                '}' | ']' => {
                    depth = depth.saturating_sub(1);
                    tokens.push(Token {
                        kind: Kind::Close,
                        is_key: false,
                        depth,
                        at,
                    });
                    advance(&mut i, &mut line, &mut column, 1);
                }
                '"' | '\'' => {
                    let quote = c;
                    advance(&mut i, &mut line, &mut column, 1);
                    let mut s = String::new();
                    while i < chars.len() && chars[i] != quote {
                        if chars[i] == '\\' {
                            advance(&mut i, &mut line, &mut column, 1);
                            match chars.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('r') => s.push('\r'),
                                Some('u') => {
                                    let hex: String = chars.iter().skip(i + 1).take(4).collect();
                                    if let Some(ch) =
                                        u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                                    {
                                        s.push(ch);
                                    }
                                    advance(&mut i, &mut line, &mut column, 4);
                                }
                                Some(&other) => s.push(other),
                                None => {}
                            }
                        } else {
                            s.push(chars[i]);
                        }
                        advance(&mut i, &mut line, &mut column, 1);
                    }
                    advance(&mut i, &mut line, &mut column, 1); // the closing quote
                    last_str = Some(tokens.len());
                    tokens.push(Token {
                        kind: Kind::Str(s),
                        is_key: false,
                        depth,
                        at,
                    });
                }
                c if c.is_alphanumeric() || c == '_' || c == '$' => {
                    let mut s = String::new();
                    while i < chars.len()
                        && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$' | '.'))
                    {
                        s.push(chars[i]);
                        advance(&mut i, &mut line, &mut column, 1);
                    }
                    last_str = Some(tokens.len());
                    tokens.push(Token {
                        kind: Kind::Str(s),
                        is_key: false,
                        depth,
                        at,
                    });
                }
                _ => advance(&mut i, &mut line, &mut column, 1),
            }
        }
        SourceMap { tokens }
    }

    /// The top-level key `key`, e.g. to point at `"grants"`.
    pub(crate) fn key(&self, key: &str) -> Location {
        self.tokens
            .iter()
            .find(|t| t.is_key && t.depth == 1 && t.is_str(key))
            .map(|t| t.at)
            .unwrap_or_default()
    }

    /// The first string `needle` inside `section`, narrowed by `entry`; falls back to wider
    /// ranges, then to the whole text, then to the section key.
    pub(crate) fn locate(&self, section: &str, entry: Entry<'_>, needle: &str) -> Location {
        let all = 0..self.tokens.len();
        let section_range = self.section(section);
        let entry_range = section_range.clone().and_then(|r| self.entry(r, entry));
        for range in [entry_range, section_range.clone(), Some(all)]
            .into_iter()
            .flatten()
        {
            if let Some(t) = self.tokens[range].iter().find(|t| t.is_str(needle)) {
                return t.at;
            }
        }
        self.key(section)
    }

    /// The second occurrence of a key directly inside the top-level object `section`, if any
    /// (serde maps would silently keep the last one).
    pub(crate) fn duplicate_key(&self, section: &str) -> Option<(String, Location)> {
        let range = self.section(section)?;
        let mut seen = std::collections::BTreeSet::new();
        self.tokens[range]
            .iter()
            .filter(|t| t.is_key && t.depth == 2)
            .find_map(|t| match &t.kind {
                Kind::Str(k) if !seen.insert(k.as_str()) => Some((k.clone(), t.at)),
                _ => None,
            })
    }

    /// Token indices of the value of the top-level key `section`.
    fn section(&self, section: &str) -> Option<std::ops::Range<usize>> {
        let start = self
            .tokens
            .iter()
            .position(|t| t.is_key && t.depth == 1 && t.is_str(section))?
            + 1;
        let end = self.tokens[start..]
            .iter()
            .position(|t| t.is_key && t.depth == 1)
            .map_or(self.tokens.len(), |n| start + n);
        Some(start..end)
    }

    fn entry(
        &self,
        range: std::ops::Range<usize>,
        entry: Entry<'_>,
    ) -> Option<std::ops::Range<usize>> {
        let offset = range.start;
        let tokens = &self.tokens[range.clone()];
        match entry {
            Entry::Whole => Some(range),
            Entry::Index(n) => {
                // Elements of the section's array sit at depth 2; count element starts.
                let mut seen = 0;
                for (k, t) in tokens.iter().enumerate() {
                    if t.depth != 2 || t.kind == Kind::Close {
                        continue;
                    }
                    if seen == n {
                        let end = match t.kind {
                            Kind::Open => tokens[k + 1..]
                                .iter()
                                .position(|c| c.kind == Kind::Close && c.depth == 2)
                                .map_or(tokens.len(), |e| k + 1 + e + 1),
                            _ => k + 1,
                        };
                        return Some(offset + k..offset + end);
                    }
                    seen += 1;
                }
                None
            }
            Entry::Key(key) => tokens
                .iter()
                .position(|t| t.is_key && t.depth == 2 && t.is_str(key))
                .map(|k| offset + k..range.end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{
  // "acls" in a comment is not a key
  groups: { "group:a": ["x@y"], 'group:b': ["x@y"] },
  /* block
     comment "x@y" */
  "acls": [
    {"action": "accept", "src": ["x@y"], "dst": ["*:22"]},
    {
      "action": "accept", "src": ["x@y"], "dst": ["*:22"],
    },
  ],
}"#;

    #[test]
    fn finds_strings_by_section_and_entry() {
        let map = SourceMap::new(TEXT);
        assert_eq!(map.key("acls"), Location { line: 6, column: 3 });
        assert_eq!(map.locate("acls", Entry::Index(0), "x@y").line, 7);
        assert_eq!(
            map.locate("acls", Entry::Index(1), "x@y"),
            Location {
                line: 9,
                column: 35
            }
        );
        assert_eq!(
            map.locate("groups", Entry::Key("group:b"), "x@y").column,
            45
        );
        assert_eq!(map.locate("groups", Entry::Whole, "group:b").column, 33);
        assert_eq!(map.locate("hosts", Entry::Whole, "*:22").line, 7);
        assert_eq!(
            map.locate("hosts", Entry::Whole, "absent"),
            Location::default()
        );
    }
}

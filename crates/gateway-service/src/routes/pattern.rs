//! Path patterns (Spring's PathPattern syntax, `/`-separated) and host patterns (Spring's
//! Ant-style host syntax, `.`-separated), compiled once and matched segment by segment.
//!
//! Elements: a literal segment; `*` alone (any one segment; in the middle of a pattern it must
//! not be empty, as in Spring); a segment mixing literals with `*` (zero or more characters),
//! `?` (one character) and `{name}` / `{name:regex}` (compiled to one anchored regex); `{name}`
//! alone (one non-empty segment, captured); `{name:regex}` alone (one segment matching the regex
//! wholly, captured); `**` (zero or more whole segments, anywhere); `{*name}` (paths only, last:
//! the rest of the path, captured with its leading `/`, or empty).
//!
//! Paths are matched raw (as received, percent-encoded): a literal in a pattern that cannot
//! appear raw in a path (a space, `é`, `中`) is percent-encoded at compile time, so `/文档` matches
//! `/%E6%96%87%E6%A1%A3`. A regex in `{name:regex}` sees the raw segment. Captured values are kept
//! raw; [`super::Matched`] decodes them where decoded text is wanted.

use regex::Regex;

/// One captured variable of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Captured<'r> {
    pub name: &'r str,
    /// As it appeared in the request (percent-encoded for a path).
    pub raw: String,
}

#[derive(Debug, Clone)]
enum Elem {
    Literal(String),
    /// `*` alone.
    Wild,
    /// A segment mixing literals and wildcards; `(var, group)`: what each group captures.
    Glob {
        re: Regex,
        vars: Vec<(usize, usize)>,
    },
    /// `{name}` or `{name:regex}` alone.
    Var {
        var: usize,
        re: Option<Regex>,
    },
    /// `**`.
    Any,
    /// `{*name}`.
    Rest {
        var: usize,
    },
}

#[derive(Debug, Clone)]
pub(super) struct SegPattern {
    sep: u8,
    /// Hosts compare case-insensitively.
    ci: bool,
    elems: Vec<Elem>,
    /// Names of the variables this pattern captures.
    pub vars: Vec<String>,
}

/// Characters a raw path may hold as they are (RFC 3986 pchar, `/` and `%`).
pub(super) fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

/// Percent-encodes what a raw path cannot hold as it is. `?` and `#` are refused (`Err`):
/// in an upstream path they would start a query or a fragment.
pub(super) fn encode_path_literal(s: &str) -> Result<String, char> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '?' || c == '#' {
            return Err(c);
        }
        if is_path_char(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    Ok(out)
}

/// A variable's name: a letter or `_`, then letters, digits, `_` or `-`.
pub(super) fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The one line of a regex error that says what is wrong.
pub(super) fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[derive(Debug)]
enum Tok {
    Lit(String),
    Star,
    Quest,
    Var { name: String, re: Option<String> },
    Rest(String),
}

/// Splits on `sep` outside braces (a `{name:regex}` may hold the separator).
fn split_segments(body: &str, sep: char) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut escaped) = (0usize, 0usize, false);
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if depth > 0 => escaped = true,
            '{' => depth += 1,
            '}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "a `}` without its `{`".to_owned())?;
            }
            c if c == sep && depth == 0 => {
                out.push(&body[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("a `{` without its `}`".into());
    }
    out.push(&body[start..]);
    Ok(out)
}

fn tokenize(seg: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let mut chars = seg.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '*' | '?' | '{' if !lit.is_empty() => {
                toks.push(Tok::Lit(std::mem::take(&mut lit)));
            }
            _ => {}
        }
        match c {
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Quest),
            '{' => {
                let (mut depth, mut escaped, mut end) = (1usize, false, None);
                for (j, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '{' {
                        depth += 1;
                    } else if d == '}' {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                }
                let end = end.ok_or_else(|| "a `{` without its `}`".to_owned())?;
                let inner = &seg[i + 1..end];
                if let Some(name) = inner.strip_prefix('*') {
                    check_name(name)?;
                    toks.push(Tok::Rest(name.to_owned()));
                } else {
                    let (name, re) = match inner.split_once(':') {
                        Some((n, r)) => (n, Some(r)),
                        None => (inner, None),
                    };
                    check_name(name)?;
                    if re.is_some_and(str::is_empty) {
                        return Err(format!("`{{{name}:}}` has an empty regex"));
                    }
                    toks.push(Tok::Var {
                        name: name.to_owned(),
                        re: re.map(str::to_owned),
                    });
                }
            }
            '}' => return Err("a `}` without its `{`".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        toks.push(Tok::Lit(lit));
    }
    Ok(toks)
}

fn check_name(name: &str) -> Result<(), String> {
    if is_var_name(name) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a variable name (a letter or `_`, then letters, digits, `_` or `-`)"
        ))
    }
}

impl SegPattern {
    /// A path pattern; it must start with `/`.
    pub fn path(text: &str) -> Result<SegPattern, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("pattern `{text}` must start with `/`"));
        };
        Self::build(body, b'/', false).map_err(|e| format!("pattern `{text}`: {e}"))
    }

    /// A host pattern (without port; compared case-insensitively).
    pub fn host(text: &str) -> Result<SegPattern, String> {
        if text.is_empty() {
            return Err("empty host pattern".into());
        }
        // A `:` outside `[...]` (an IPv6 literal) and `{...}` (a variable's regex) is a port.
        let (mut depth, mut port) = (0i32, false);
        for c in text.chars() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ':' if depth == 0 => port = true,
                _ => {}
            }
        }
        if port {
            return Err(format!(
                "pattern `{text}`: host patterns match the host without its port; drop the `:port`"
            ));
        }
        Self::build(text, b'.', true).map_err(|e| format!("pattern `{text}`: {e}"))
    }

    fn build(body: &str, sep: u8, ci: bool) -> Result<SegPattern, String> {
        let segs = split_segments(body, sep as char)?;
        let mut vars: Vec<String> = Vec::new();
        let mut add_var = |name: String| -> Result<usize, String> {
            if vars.contains(&name) {
                return Err(format!("variable `{{{name}}}` is captured twice"));
            }
            vars.push(name);
            Ok(vars.len() - 1)
        };
        let last = segs.len() - 1;
        let mut elems = Vec::with_capacity(segs.len());
        for (i, seg) in segs.iter().enumerate() {
            if *seg == "**" {
                elems.push(Elem::Any);
                continue;
            }
            let mut toks = tokenize(seg)?;
            let elem = match toks.as_mut_slice() {
                [Tok::Star] => Elem::Wild,
                [Tok::Rest(name)] => {
                    if ci {
                        return Err("`{*name}` is for paths only".into());
                    }
                    if i != last {
                        return Err(format!("`{{*{name}}}` must be the last segment"));
                    }
                    Elem::Rest {
                        var: add_var(std::mem::take(name))?,
                    }
                }
                [Tok::Var { name, re }] => {
                    let re = match re {
                        Some(r) => Some(compile_anchored(r, ci)?),
                        None => None,
                    };
                    Elem::Var {
                        var: add_var(std::mem::take(name))?,
                        re,
                    }
                }
                [] => Elem::Literal(String::new()),
                [Tok::Lit(l)] => Elem::Literal(normalize_literal(l, ci)),
                toks => {
                    let mut re = String::from(if ci { "(?i)\\A" } else { "\\A" });
                    let mut group_vars = Vec::new();
                    for tok in toks.iter_mut() {
                        match tok {
                            Tok::Lit(l) => re.push_str(&regex::escape(&normalize_literal(l, ci))),
                            Tok::Star => re.push_str(".*"),
                            Tok::Quest => re.push('.'),
                            Tok::Var { name, re: inner } => {
                                let v = add_var(std::mem::take(name))?;
                                let inner = inner.as_deref().unwrap_or(".*");
                                re.push_str(&format!("(?P<__pf_v{v}>{inner})"));
                                group_vars.push(v);
                            }
                            Tok::Rest(name) => {
                                return Err(format!("`{{*{name}}}` must be a segment of its own"));
                            }
                        }
                    }
                    re.push_str("\\z");
                    let re = Regex::new(&re)
                        .map_err(|e| format!("segment `{seg}`: bad regex: {}", regex_error(&e)))?;
                    let vars = group_vars
                        .into_iter()
                        .map(|v| {
                            let name = format!("__pf_v{v}");
                            re.capture_names()
                                .position(|n| n == Some(name.as_str()))
                                .map(|g| (v, g))
                                .ok_or_else(|| {
                                    format!(
                                        "segment `{seg}`: a regex may not name a group `{name}`"
                                    )
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Elem::Glob { re, vars }
                }
            };
            elems.push(elem);
        }
        Ok(SegPattern {
            sep,
            ci,
            elems,
            vars,
        })
    }

    /// Matches `s[start..]` (for a path, `start` is 1, past the leading `/`). Pushes what it
    /// captures to `caps`, and leaves `caps` as it found it when there is no match.
    ///
    /// `**` backtracks only to the latest `**` (as glob matching does), so a match costs at
    /// most segments × elements steps, whatever the request.
    pub fn matches<'p>(&'p self, s: &str, start: usize, caps: &mut Vec<Captured<'p>>) -> bool {
        let base = caps.len();
        let n = self.elems.len();
        let bytes = s.as_bytes();
        let seg_end = |from: usize| {
            bytes[from..]
                .iter()
                .position(|b| *b == self.sep)
                .map_or(s.len(), |p| from + p)
        };
        let after = |end: usize| (end < s.len()).then_some(end + 1);
        let (mut pi, mut rest) = (0usize, Some(start));
        // (element after the latest `**`, where that `**` stopped consuming, caps then)
        let mut star: Option<(usize, Option<usize>, usize)> = None;
        loop {
            if pi == n {
                if rest.is_none() {
                    return true;
                }
            } else {
                match &self.elems[pi] {
                    Elem::Any => {
                        if pi + 1 == n {
                            return true;
                        }
                        star = Some((pi + 1, rest, caps.len()));
                        pi += 1;
                        continue;
                    }
                    Elem::Rest { var } => {
                        let from = rest.map_or(s.len(), |r| r - 1);
                        caps.push(Captured {
                            name: &self.vars[*var],
                            raw: s[from..].to_owned(),
                        });
                        return true;
                    }
                    elem => {
                        if let Some(r) = rest {
                            let end = seg_end(r);
                            if self.segment_matches(elem, s, r, end, pi + 1 == n, caps) {
                                pi += 1;
                                rest = after(end);
                                continue;
                            }
                        }
                    }
                }
            }
            // No match here: let the latest `**` take one more segment, if it can.
            match star {
                Some((resume, Some(r), saved)) => {
                    let next = after(seg_end(r));
                    star = Some((resume, next, saved));
                    caps.truncate(saved);
                    pi = resume;
                    rest = next;
                }
                _ => {
                    caps.truncate(base);
                    return false;
                }
            }
        }
    }

    fn segment_matches<'p>(
        &'p self,
        elem: &Elem,
        s: &str,
        from: usize,
        to: usize,
        is_last: bool,
        caps: &mut Vec<Captured<'p>>,
    ) -> bool {
        let seg = &s[from..to];
        match elem {
            Elem::Literal(l) if self.ci => l.eq_ignore_ascii_case(seg),
            Elem::Literal(l) => l == seg,
            // Spring: `/a/*` matches `/a/`, but `/a/*/b` does not match `/a//b`.
            Elem::Wild => is_last || !seg.is_empty(),
            Elem::Var { var, re } => {
                let ok = match re {
                    Some(re) => re.is_match(seg),
                    None => !seg.is_empty(),
                };
                if ok {
                    caps.push(Captured {
                        name: &self.vars[*var],
                        raw: seg.to_owned(),
                    });
                }
                ok
            }
            Elem::Glob { re, vars } if vars.is_empty() => re.is_match(seg),
            Elem::Glob { re, vars } => {
                let Some(c) = re.captures(seg) else {
                    return false;
                };
                for (v, g) in vars {
                    let raw = c.get(*g).map_or("", |m| m.as_str());
                    caps.push(Captured {
                        name: &self.vars[*v],
                        raw: raw.to_owned(),
                    });
                }
                true
            }
            Elem::Any | Elem::Rest { .. } => false,
        }
    }
}

fn normalize_literal(l: &str, ci: bool) -> String {
    if ci {
        l.to_ascii_lowercase()
    } else {
        // `?` never reaches here (it is a wildcard), and `#` cannot be in a received path.
        encode_path_literal(l).unwrap_or_else(|_| l.to_owned())
    }
}

fn compile_anchored(re: &str, ci: bool) -> Result<Regex, String> {
    let flags = if ci { "(?i)" } else { "" };
    Regex::new(&format!("{flags}\\A(?:{re})\\z"))
        .map_err(|e| format!("bad regex `{re}`: {}", regex_error(&e)))
}

/// Strips the port (and a trailing dot) from a Host header value.
pub(super) fn host_without_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_match(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let p = SegPattern::path(pattern).expect("pattern compiles");
        let mut caps = Vec::new();
        path.starts_with('/')
            .then(|| p.matches(path, 1, &mut caps))
            .filter(|m| *m)
            .map(|_| {
                caps.iter()
                    .map(|c| (c.name.to_owned(), c.raw.clone()))
                    .collect()
            })
    }

    fn ok(pattern: &str, path: &str) -> bool {
        path_match(pattern, path).is_some()
    }

    fn var(pattern: &str, path: &str, name: &str) -> Option<String> {
        path_match(pattern, path)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn literals_and_root() {
        assert!(ok("/", "/"));
        assert!(!ok("/", "/a"));
        assert!(ok("/api/users", "/api/users"));
        assert!(!ok("/api/users", "/api/users/"));
        assert!(!ok("/api/users", "/api/Users"));
        assert!(!ok("/api/users", "/api/usersx"));
        assert!(!ok("/api/users", "/api"));
        assert!(ok("/a/", "/a/"));
        assert!(!ok("/a/", "/a"));
    }

    #[test]
    fn double_star_at_end() {
        assert!(ok("/api/users/**", "/api/users"));
        assert!(ok("/api/users/**", "/api/users/"));
        assert!(ok("/api/users/**", "/api/users/me/keys"));
        assert!(!ok("/api/users/**", "/api/usersx"));
        assert!(!ok("/api/users/**", "/api/user"));
        assert!(ok("/**", "/"));
        assert!(ok("/**", "/anything/at/all"));
    }

    #[test]
    fn double_star_in_the_middle() {
        assert!(ok("/a/**/z", "/a/z"));
        assert!(ok("/a/**/z", "/a/b/c/z"));
        assert!(!ok("/a/**/z", "/a/b/c/y"));
        assert!(!ok("/a/**/z", "/a/z/y"));
        assert!(ok("/**/b/**/d", "/x/b/y/d"));
        assert!(ok("/**/b/**/d", "/b/d"));
        assert!(!ok("/**/b/**/d", "/x/d/b"));
        assert_eq!(
            var("/**/items/{id}", "/x/y/items/42", "id").as_deref(),
            Some("42")
        );
        // A captured value from a discarded attempt does not stay behind.
        assert_eq!(
            path_match("/**/{a}/end", "/p/q/end"),
            Some(vec![("a".into(), "q".into())])
        );
    }

    #[test]
    fn long_paths_do_not_blow_up() {
        let path = "/a".repeat(4000);
        assert!(!ok("/**/a/**/a/**/a/**/b", &path));
        assert!(ok("/**/a/**/a/**/a", &path));
    }

    #[test]
    fn single_star_and_question_mark() {
        assert!(ok("/files/*", "/files/x"));
        assert!(ok("/files/*", "/files/"));
        assert!(!ok("/files/*", "/files"));
        assert!(!ok("/files/*", "/files/x/y"));
        assert!(ok("/a/*/c", "/a/b/c"));
        assert!(!ok("/a/*/c", "/a//c"));
        assert!(ok("/files/*.png", "/files/cat.png"));
        assert!(ok("/files/*.png", "/files/.png"));
        assert!(!ok("/files/*.png", "/files/cat.jpg"));
        assert!(!ok("/files/*.png", "/files/a/cat.png"));
        assert!(ok("/v?/x", "/v1/x"));
        assert!(!ok("/v?/x", "/v10/x"));
        assert!(!ok("/v?/x", "/v/x"));
    }

    #[test]
    fn captures() {
        assert_eq!(
            var("/red/{segment}", "/red/blue", "segment").as_deref(),
            Some("blue")
        );
        assert!(!ok("/red/{segment}", "/red/"));
        assert!(!ok("/red/{segment}", "/red/a/b"));
        assert_eq!(var("/u/{id:\\d+}", "/u/42", "id").as_deref(), Some("42"));
        assert!(!ok("/u/{id:\\d+}", "/u/42x"));
        assert!(!ok("/u/{id:\\d+}", "/u/x42"));
        assert_eq!(
            var("/u/{id:[a-z]{2}}", "/u/ab", "id").as_deref(),
            Some("ab")
        );
        assert!(!ok("/u/{id:[a-z]{2}}", "/u/abc"));
        assert_eq!(
            var("/f/{name}.json", "/f/report.json", "name").as_deref(),
            Some("report")
        );
        assert_eq!(
            var("/f/{name:[a-z]+}-{v:\\d+}.tar", "/f/app-12.tar", "v").as_deref(),
            Some("12")
        );
        // Kept raw here; decoded where it is used.
        assert_eq!(var("/t/{tag}", "/t/a%20b", "tag").as_deref(), Some("a%20b"));
    }

    #[test]
    fn capture_the_rest() {
        assert_eq!(
            var("/resources/{*path}", "/resources/css/site.css", "path").as_deref(),
            Some("/css/site.css")
        );
        assert_eq!(
            var("/resources/{*path}", "/resources", "path").as_deref(),
            Some("")
        );
        assert_eq!(
            var("/resources/{*path}", "/resources/", "path").as_deref(),
            Some("/")
        );
        assert_eq!(var("/{*all}", "/", "all").as_deref(), Some("/"));
        assert!(!ok("/resources/{*path}", "/resourcesx"));
    }

    #[test]
    fn literals_are_encoded_like_a_raw_path() {
        assert!(ok("/文档/**", "/%E6%96%87%E6%A1%A3/x"));
        assert!(!ok("/文档/**", "/文档/x"));
        assert!(ok("/a b", "/a%20b"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        let err = |p: &str| SegPattern::path(p).err().unwrap_or_default();
        assert!(
            err("api/x").contains("must start with `/`"),
            "{}",
            err("api/x")
        );
        assert!(err("/a/{id").contains("without its `}`"));
        assert!(err("/a/id}").contains("without its `{`"));
        assert!(err("/a/{*rest}/b").contains("must be the last segment"));
        assert!(err("/a/x{*rest}").contains("segment of its own"));
        assert!(err("/a/{id}/{id}").contains("captured twice"));
        assert!(err("/a/{1x}").contains("not a variable name"));
        assert!(
            err("/a/{id:[}").contains("bad regex `[`"),
            "{}",
            err("/a/{id:[}")
        );
        assert!(err("/a/{id:}").contains("empty regex"));
    }

    fn host_match(pattern: &str, host: &str) -> Option<Vec<(String, String)>> {
        let p = SegPattern::host(pattern).expect("pattern compiles");
        let mut caps = Vec::new();
        let h = host_without_port(host);
        (!h.is_empty() && p.matches(h, 0, &mut caps)).then(|| {
            caps.iter()
                .map(|c| (c.name.to_owned(), c.raw.clone()))
                .collect()
        })
    }

    #[test]
    fn host_patterns() {
        assert!(host_match("**.example.org", "www.example.org").is_some());
        assert!(host_match("**.example.org", "a.b.example.org").is_some());
        assert!(host_match("**.example.org", "example.org").is_some());
        assert!(host_match("**.example.org", "example.com").is_none());
        assert!(host_match("**.example.org", "badexample.org").is_none());
        assert!(host_match("*.example.org", "www.example.org").is_some());
        assert!(host_match("*.example.org", "a.b.example.org").is_none());
        assert!(host_match("Example.ORG", "example.org").is_some());
        assert!(host_match("example.org", "EXAMPLE.org:8080").is_some());
        assert!(host_match("example.org", "example.org.").is_some());
        assert_eq!(
            host_match("{sub}.example.org", "Beta.example.org:443"),
            Some(vec![("sub".into(), "Beta".into())])
        );
        assert_eq!(
            host_match("{sub:[a-z]+\\.eu}.example.org", "shop.eu.example.org"),
            None,
            "a `.` inside the regex still cannot span labels"
        );
        assert!(host_match("[::1]", "[::1]:8080").is_some());
        assert!(host_match("127.0.0.1", "127.0.0.1:80").is_some());
        assert!(SegPattern::host("example.org:8080").is_err());
        assert!(SegPattern::host("{*x}.org").is_err());
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(host_without_port("a.org:8080"), "a.org");
        assert_eq!(host_without_port("a.org"), "a.org");
        assert_eq!(host_without_port("[::1]:1"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("::1"), "::1");
    }

    #[test]
    fn encoding_literals() {
        assert_eq!(
            encode_path_literal("/a b/é").as_deref(),
            Ok("/a%20b/%C3%A9")
        );
        assert_eq!(encode_path_literal("/x?y"), Err('?'));
        assert_eq!(encode_path_literal("/x#y"), Err('#'));
    }
}

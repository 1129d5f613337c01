//! Prompt templates: parsing `{{var}}`, `{{var|default}}` and `{{> include}}` tags,
//! listing variables and includes, and rendering with include resolution.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Includes may nest this many levels below the root prompt.
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Upper bound on rendered output, so include fan-out cannot blow up memory.
pub const MAX_RENDERED_BYTES: usize = 1_048_576;

const MAX_NAME_CHARS: usize = 64;
const MAX_SLUG_CHARS: usize = 64;
/// Offending tag text quoted in error messages is cut to this many chars.
const MAX_QUOTED_CHARS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Variable {
    pub name: String,
    pub default: Option<String>,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Var {
        name: String,
        default: Option<String>,
    },
    /// Ref of the included prompt, lowercased.
    Include(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

/// Position is 1-based; the column counts chars and points at the opening `{{`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Every missing required name, unique, in order of appearance (includes too).
    #[error("missing values for {}", .0.join(", "))]
    Missing(Vec<String>),
    /// The chain of refs from the root to the repeated one, e.g. `["a", "b", "a"]`.
    #[error("include cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("unknown or unreadable include `{0}`")]
    UnknownInclude(String),
    #[error("includes nest deeper than {0}")]
    TooDeep(usize),
    #[error("included prompt `{0}` is not a valid template: {1}")]
    BadInclude(String, ParseError),
    #[error("the rendered text would exceed {0} bytes")]
    TooLarge(usize),
}

/// Parses template source text.
pub fn parse(src: &str) -> Result<Template, ParseError> {
    let bytes = src.as_bytes();
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while let Some(offset) = src[i..].find("{{") {
        let at = i + offset;
        // `\{{` is a literal `{{`; the backslash is dropped.
        if at > i && bytes[at - 1] == b'\\' {
            text.push_str(&src[i..at - 1]);
            text.push_str("{{");
            i = at + 2;
            continue;
        }
        text.push_str(&src[i..at]);
        let (segment, end) = parse_tag(src, at)?;
        if !text.is_empty() {
            segments.push(Segment::Text(std::mem::take(&mut text)));
        }
        segments.push(segment);
        i = end;
    }
    text.push_str(&src[i..]);
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(Template { segments })
}

/// Parses the tag whose `{{` starts at byte `at`; returns it and the byte index after `}}`.
fn parse_tag(src: &str, at: usize) -> Result<(Segment, usize), ParseError> {
    let body_start = at + 2;
    let body = &src.as_bytes()[body_start..];
    // Scanning bytes is safe: the ASCII bytes sought never occur inside multi-byte chars.
    let mut k = 0;
    loop {
        match body.get(k) {
            None => return Err(error_at(src, at, "unclosed `{{`".to_owned())),
            // Stopping at line ends keeps a stray `{{` from swallowing whole paragraphs.
            Some(b'\n' | b'\r') => {
                return Err(error_at(
                    src,
                    at,
                    "unclosed `{{` (a tag must end on the same line)".to_owned(),
                ));
            }
            Some(b'{') if body.get(k + 1) == Some(&b'{') => {
                return Err(error_at(
                    src,
                    at,
                    "unclosed `{{` (another `{{` starts before `}}`)".to_owned(),
                ));
            }
            Some(b'}') if body.get(k + 1) == Some(&b'}') => break,
            Some(_) => k += 1,
        }
    }
    let end = body_start + k + 2;
    let inner = src[body_start..body_start + k].trim();
    if inner.is_empty() {
        return Err(error_at(src, at, "empty tag `{{}}`".to_owned()));
    }
    if let Some(reference) = inner.strip_prefix('>') {
        let reference = reference.trim();
        if !is_valid_ref(reference) {
            let message = if reference.is_empty() {
                "missing include reference after `>`".to_owned()
            } else {
                format!(
                    "invalid include reference `{}` (expected a slug such as `my-prompt` or a UUID)",
                    quote(reference)
                )
            };
            return Err(error_at(src, at, message));
        }
        return Ok((Segment::Include(reference.to_lowercase()), end));
    }
    let (name, default) = match inner.split_once('|') {
        Some((name, default)) => (name.trim(), Some(default.trim().to_owned())),
        None => (inner, None),
    };
    if !is_valid_name(name) {
        let message = if name.is_empty() {
            "missing variable name before `|`".to_owned()
        } else {
            format!(
                "invalid variable name `{}` (use up to {MAX_NAME_CHARS} letters, digits, `_`, `-` or `.`, starting with a letter or `_`)",
                quote(name)
            )
        };
        return Err(error_at(src, at, message));
    }
    let segment = Segment::Var {
        name: name.to_owned(),
        default,
    };
    Ok((segment, end))
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.chars().count() <= MAX_NAME_CHARS
}

fn is_valid_ref(reference: &str) -> bool {
    is_valid_slug(reference) || is_valid_uuid(reference)
}

fn is_valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes.first() {
        Some(first) if allowed(first) => {
            bytes.len() <= MAX_SLUG_CHARS && bytes.iter().all(|b| allowed(b) || *b == b'-')
        }
        _ => false,
    }
}

fn is_valid_uuid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Shortens user text quoted in a message so a huge bad tag cannot bloat it.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Line and column are computed only on error, keeping the happy path a plain scan.
fn error_at(src: &str, at: usize, message: String) -> ParseError {
    let before = &src[..at];
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    ParseError {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message,
    }
}

impl Template {
    /// Unique variables in order of first appearance. `required` is true when no occurrence has a default; `default` is the first default given.
    pub fn variables(&self) -> Vec<Variable> {
        let mut out: Vec<Variable> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for segment in &self.segments {
            let Segment::Var { name, default } = segment else {
                continue;
            };
            match index.get(name.as_str()) {
                Some(&i) => {
                    let variable = &mut out[i];
                    if default.is_some() {
                        variable.required = false;
                        if variable.default.is_none() {
                            variable.default.clone_from(default);
                        }
                    }
                }
                None => {
                    index.insert(name, out.len());
                    out.push(Variable {
                        name: name.clone(),
                        default: default.clone(),
                        required: default.is_none(),
                    });
                }
            }
        }
        out
    }

    /// Include refs in order of first appearance, unique.
    pub fn includes(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Include(reference) if seen.insert(reference.as_str()) => {
                    Some(reference.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// Renders `template`. `values` maps variable names to text. `resolve` returns the source text of an included prompt by ref, or None if it does not exist or the caller may not read it.
/// `root` is the ref of the template being rendered itself (its slug or id), used for cycle detection so that a prompt including itself is a cycle.
pub fn render(
    template: &Template,
    root: &str,
    values: &HashMap<String, String>,
    resolve: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<String, RenderError> {
    let mut walker = Walker::new(root, Some(values), resolve);
    walker.walk(template, 0)?;
    if !walker.missing.is_empty() {
        return Err(RenderError::Missing(walker.missing));
    }
    Ok(walker.out)
}

/// Checks that saving a prompt whose ref is `root` with this template creates no include cycle and no unknown include, following includes through `resolve` (same contract as above). Returns the same errors as render except Missing/TooLarge.
pub fn check_includes(
    template: &Template,
    root: &str,
    resolve: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), RenderError> {
    Walker::new(root, None, resolve)
        .walk(template, 0)
        .map(|_| ())
}

/// An include already rendered in full; reused so fan-out costs no repeated work.
struct Rendered {
    text: Rc<str>,
    /// How many include levels nest below it.
    height: usize,
}

/// Depth-first walk over a template and its includes. Without `values` it only
/// checks the include graph and produces no text.
struct Walker<'a> {
    values: Option<&'a HashMap<String, String>>,
    resolve: &'a mut dyn FnMut(&str) -> Option<String>,
    out: String,
    missing: Vec<String>,
    missing_seen: HashSet<String>,
    /// Refs from the root down to the include being rendered, lowercased.
    stack: Vec<String>,
    done: HashMap<String, Rendered>,
}

impl<'a> Walker<'a> {
    fn new(
        root: &str,
        values: Option<&'a HashMap<String, String>>,
        resolve: &'a mut dyn FnMut(&str) -> Option<String>,
    ) -> Self {
        Walker {
            values,
            resolve,
            out: String::new(),
            missing: Vec::new(),
            missing_seen: HashSet::new(),
            stack: vec![root.to_lowercase()],
            done: HashMap::new(),
        }
    }

    /// Walks `template` found at include `depth`; returns the include height below it.
    fn walk(&mut self, template: &Template, depth: usize) -> Result<usize, RenderError> {
        let mut height = 0;
        for segment in &template.segments {
            match segment {
                Segment::Text(text) => self.emit(text)?,
                Segment::Var { name, default } => {
                    let Some(values) = self.values else {
                        continue;
                    };
                    // A given value, even empty, wins over the default.
                    match values.get(name).or(default.as_ref()) {
                        Some(value) => self.emit(value)?,
                        None => {
                            if self.missing_seen.insert(name.clone()) {
                                self.missing.push(name.clone());
                            }
                        }
                    }
                }
                Segment::Include(reference) => {
                    let below = self.include(reference, depth + 1)?;
                    height = height.max(below + 1);
                }
            }
        }
        Ok(height)
    }

    /// Renders the include `reference` at `depth`; returns its include height.
    fn include(&mut self, reference: &str, depth: usize) -> Result<usize, RenderError> {
        let key = reference.to_lowercase();
        if self.stack.contains(&key) {
            let mut chain = self.stack.clone();
            chain.push(key);
            return Err(RenderError::Cycle(chain));
        }
        if let Some(done) = self.done.get(&key) {
            // A finished include is acyclic, but the depth limit depends on where it is used.
            if depth + done.height > MAX_INCLUDE_DEPTH {
                return Err(RenderError::TooDeep(MAX_INCLUDE_DEPTH));
            }
            let (text, height) = (Rc::clone(&done.text), done.height);
            self.emit(&text)?;
            return Ok(height);
        }
        if depth > MAX_INCLUDE_DEPTH {
            return Err(RenderError::TooDeep(MAX_INCLUDE_DEPTH));
        }
        let source =
            (self.resolve)(&key).ok_or_else(|| RenderError::UnknownInclude(key.clone()))?;
        let template = parse(&source).map_err(|e| RenderError::BadInclude(key.clone(), e))?;
        let start = self.out.len();
        self.stack.push(key.clone());
        let height = self.walk(&template, depth)?;
        self.stack.pop();
        let text: Rc<str> = Rc::from(&self.out[start..]);
        self.done.insert(key, Rendered { text, height });
        Ok(height)
    }

    fn emit(&mut self, text: &str) -> Result<(), RenderError> {
        if self.values.is_none() {
            return Ok(());
        }
        if self.out.len() + text.len() > MAX_RENDERED_BYTES {
            return Err(RenderError::TooLarge(MAX_RENDERED_BYTES));
        }
        self.out.push_str(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Segment {
        Segment::Text(s.to_owned())
    }

    fn var(name: &str, default: Option<&str>) -> Segment {
        Segment::Var {
            name: name.to_owned(),
            default: default.map(str::to_owned),
        }
    }

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse_err(src: &str) -> ParseError {
        parse(src).expect_err("should not parse")
    }

    /// Renders `src` as prompt `root`, resolving includes from `prompts`.
    fn render_with(
        src: &str,
        root: &str,
        vals: &[(&str, &str)],
        prompts: &[(&str, &str)],
    ) -> Result<String, RenderError> {
        let prompts: HashMap<String, String> = values(prompts);
        let mut resolve = |r: &str| prompts.get(r).cloned();
        render(
            &parse(src).expect("parse"),
            root,
            &values(vals),
            &mut resolve,
        )
    }

    fn check_with(src: &str, root: &str, prompts: &[(&str, &str)]) -> Result<(), RenderError> {
        let prompts: HashMap<String, String> = values(prompts);
        let mut resolve = |r: &str| prompts.get(r).cloned();
        check_includes(&parse(src).expect("parse"), root, &mut resolve)
    }

    // --- parsing ---

    #[test]
    fn parses_plain_text() {
        let t = parse("Hello, world.\nSecond line.").expect("parse");
        assert_eq!(t.segments, vec![text("Hello, world.\nSecond line.")]);
        assert_eq!(parse("").expect("parse").segments, vec![]);
    }

    #[test]
    fn parses_variables_with_and_without_defaults() {
        let t = parse("Hi {{name}}, tone {{tone|friendly and warm}}!").expect("parse");
        assert_eq!(
            t.segments,
            vec![
                text("Hi "),
                var("name", None),
                text(", tone "),
                var("tone", Some("friendly and warm")),
                text("!"),
            ]
        );
    }

    #[test]
    fn parses_empty_default_as_optional() {
        let t = parse("{{x|}}{{y| }}").expect("parse");
        assert_eq!(t.segments, vec![var("x", Some("")), var("y", Some(""))]);
    }

    #[test]
    fn default_keeps_everything_after_first_pipe() {
        let t = parse("{{a| b | c }}").expect("parse");
        assert_eq!(t.segments, vec![var("a", Some("b | c"))]);
    }

    #[test]
    fn parses_chinese_names_and_defaults() {
        let t = parse("请写{{主题}}，语气{{tone|正式 formal}}，{{用户.名字_2}}").expect("parse");
        assert_eq!(
            t.segments,
            vec![
                text("请写"),
                var("主题", None),
                text("，语气"),
                var("tone", Some("正式 formal")),
                text("，"),
                var("用户.名字_2", None),
            ]
        );
    }

    #[test]
    fn accepts_valid_name_shapes() {
        for name in [
            "name",
            "_x",
            "user.name",
            "tone_2",
            "a-b",
            "Ünïcödé",
            "主题",
        ] {
            let t = parse(&format!("{{{{{name}}}}}")).expect(name);
            assert_eq!(t.segments, vec![var(name, None)], "{name}");
        }
        let longest = "a".repeat(64);
        assert!(parse(&format!("{{{{{longest}}}}}")).is_ok());
    }

    #[test]
    fn allows_whitespace_inside_tags() {
        let t = parse("{{ name }}{{\tx | d e }}{{>ref}}{{ > ref2 }}{{　全角　}}").expect("parse");
        assert_eq!(
            t.segments,
            vec![
                var("name", None),
                var("x", Some("d e")),
                Segment::Include("ref".to_owned()),
                Segment::Include("ref2".to_owned()),
                var("全角", None),
            ]
        );
    }

    #[test]
    fn parses_includes_by_slug_and_uuid() {
        let t =
            parse("{{> other-prompt}} {{> 0190F3A2-1B2C-7D3E-8F40-123456789ABC }}").expect("parse");
        assert_eq!(
            t.segments,
            vec![
                Segment::Include("other-prompt".to_owned()),
                text(" "),
                Segment::Include("0190f3a2-1b2c-7d3e-8f40-123456789abc".to_owned()),
            ]
        );
    }

    #[test]
    fn escaped_braces_are_literal() {
        let t = parse(r"Use \{{name}} for variables, \{{{{x}}").expect("parse");
        assert_eq!(
            t.segments,
            vec![text("Use {{name}} for variables, {{"), var("x", None),]
        );
        assert_eq!(parse(r"\{{").expect("parse").segments, vec![text("{{")]);
    }

    #[test]
    fn lone_braces_are_literal() {
        let src = "JSON: {\"a\": {\"b\": 1}} and } and { alone }}";
        assert_eq!(parse(src).expect("parse").segments, vec![text(src)]);
        let t = parse("{{a}}} {{b|x}y}}").expect("parse");
        assert_eq!(
            t.segments,
            vec![var("a", None), text("} "), var("b", Some("x}y"))]
        );
        let t = parse("a { {{b}}").expect("parse");
        assert_eq!(t.segments, vec![text("a { "), var("b", None)]);
    }

    #[test]
    fn error_unclosed_at_end_of_text() {
        let e = parse_err("line one\nline two\nab {{name");
        assert_eq!(e.line, 3);
        assert_eq!(e.column, 4);
        assert_eq!(e.to_string(), "line 3, column 4: unclosed `{{`");
        assert_eq!(
            parse_err("{{").to_string(),
            "line 1, column 1: unclosed `{{`"
        );
        assert_eq!(
            parse_err("{{a}").to_string(),
            "line 1, column 1: unclosed `{{`"
        );
    }

    #[test]
    fn error_tag_spanning_newline() {
        let e = parse_err("first\n  {{name\n}} rest");
        assert_eq!((e.line, e.column), (2, 3));
        assert_eq!(
            e.to_string(),
            "line 2, column 3: unclosed `{{` (a tag must end on the same line)"
        );
        let e = parse_err("x{{a\r\n}}");
        assert_eq!((e.line, e.column), (1, 2));
    }

    #[test]
    fn error_nested_open_inside_tag() {
        let e = parse_err("ok {{a {{b}}");
        assert_eq!((e.line, e.column), (1, 4));
        assert_eq!(e.message, "unclosed `{{` (another `{{` starts before `}}`)");
    }

    #[test]
    fn error_column_counts_chars_not_bytes() {
        let e = parse_err("第一行\n中文字{{");
        assert_eq!((e.line, e.column), (2, 4));
    }

    #[test]
    fn error_empty_tag() {
        let e = parse_err("a\nbc{{}}");
        assert_eq!(e.to_string(), "line 2, column 3: empty tag `{{}}`");
        assert_eq!(
            parse_err("{{  }}").to_string(),
            "line 1, column 1: empty tag `{{}}`"
        );
    }

    #[test]
    fn error_invalid_variable_names() {
        for bad in ["1abc", "first name", "a!", "-a", ".a", "a{b"] {
            let e = parse_err(&format!("xx {{{{{bad}}}}}"));
            assert_eq!((e.line, e.column), (1, 4), "{bad}");
            assert!(
                e.message
                    .starts_with(&format!("invalid variable name `{bad}`")),
                "{bad}: {}",
                e.message
            );
        }
        let too_long = "a".repeat(65);
        let e = parse_err(&format!("{{{{{too_long}}}}}"));
        assert!(e.message.starts_with("invalid variable name `aaaa"));
        assert!(e.message.contains('…'), "long names are shortened");
        let e = parse_err("{{|x}}");
        assert_eq!(
            e.to_string(),
            "line 1, column 1: missing variable name before `|`"
        );
    }

    #[test]
    fn error_invalid_include_refs() {
        for bad in [
            "Other",
            "-x",
            "a_b",
            "a b",
            "0190F3A2-1B2C-7D3E-8F40-12345678",
            "x|y",
        ] {
            let e = parse_err(&format!("\n\t{{{{> {bad}}}}}"));
            assert_eq!((e.line, e.column), (2, 2), "{bad}");
            assert!(
                e.message
                    .starts_with(&format!("invalid include reference `{bad}`")),
                "{bad}: {}",
                e.message
            );
        }
        assert!(parse(&format!("{{{{> {}}}}}", "a".repeat(64))).is_ok());
        assert!(parse(&format!("{{{{> {}}}}}", "a".repeat(65))).is_err());
        assert_eq!(
            parse_err("{{>}}").to_string(),
            "line 1, column 1: missing include reference after `>`"
        );
    }

    // --- listing ---

    #[test]
    fn lists_variables_required_and_optional() {
        let t = parse("{{a}} {{b|x}} {{a|late}} {{c}} {{b|y}} {{c}} {{d|}}").expect("parse");
        assert_eq!(
            t.variables(),
            vec![
                Variable {
                    name: "a".into(),
                    default: Some("late".into()),
                    required: false
                },
                Variable {
                    name: "b".into(),
                    default: Some("x".into()),
                    required: false
                },
                Variable {
                    name: "c".into(),
                    default: None,
                    required: true
                },
                Variable {
                    name: "d".into(),
                    default: Some(String::new()),
                    required: false
                },
            ]
        );
    }

    #[test]
    fn lists_includes_unique_in_order() {
        let t = parse("{{> b}}{{> a}}{{>b}}{{x}}{{> A0000000-0000-0000-0000-00000000000A}}")
            .expect("parse");
        assert_eq!(
            t.includes(),
            vec!["b", "a", "a0000000-0000-0000-0000-00000000000a"]
        );
    }

    // --- rendering ---

    #[test]
    fn renders_values_and_defaults() {
        let out = render_with(
            "Hi {{name}}, be {{tone|正式 formal}}. {{extra|}}",
            "root",
            &[("name", "李雷"), ("unused", "ignored")],
            &[],
        );
        assert_eq!(out.as_deref(), Ok("Hi 李雷, be 正式 formal. "));
    }

    #[test]
    fn given_values_win_even_when_empty() {
        let out = render_with("[{{a|def}}][{{b}}]", "root", &[("a", ""), ("b", "")], &[]);
        assert_eq!(out.as_deref(), Ok("[][]"));
    }

    #[test]
    fn rendered_values_are_not_reparsed() {
        let out = render_with("{{a}}", "root", &[("a", "{{b}} {{> x}}")], &[]);
        assert_eq!(out.as_deref(), Ok("{{b}} {{> x}}"));
    }

    #[test]
    fn renders_plain_text_and_escapes() {
        let out = render_with(r"a \{{b}} }} { c", "root", &[], &[]);
        assert_eq!(out.as_deref(), Ok("a {{b}} }} { c"));
    }

    #[test]
    fn renders_includes_with_nested_variables() {
        let out = render_with(
            "Start {{> intro}} end {{>intro}}.",
            "root",
            &[("who", "Ada"), ("topic", "差分")],
            &[
                ("intro", "[hello {{who}}: {{> inner}}]"),
                ("inner", "about {{topic}} in {{lang|English}}"),
            ],
        );
        assert_eq!(
            out.as_deref(),
            Ok("Start [hello Ada: about 差分 in English] end [hello Ada: about 差分 in English].")
        );
    }

    #[test]
    fn missing_values_are_listed_together_across_includes() {
        let err = render_with(
            "{{a}} {{> part}} {{b}} {{a}} {{ok|fine}}",
            "root",
            &[("given", "x")],
            &[
                ("part", "{{c}} {{given}} {{b}} {{> deeper}}"),
                ("deeper", "{{d}}"),
            ],
        );
        assert_eq!(
            err,
            Err(RenderError::Missing(vec![
                "a".into(),
                "c".into(),
                "b".into(),
                "d".into()
            ]))
        );
        assert_eq!(
            err.expect_err("missing").to_string(),
            "missing values for a, c, b, d"
        );
    }

    #[test]
    fn self_include_is_a_cycle() {
        let err = render_with("x {{> me}}", "me", &[], &[("me", "x {{> me}}")]);
        assert_eq!(err, Err(RenderError::Cycle(vec!["me".into(), "me".into()])));
        let err = check_with("x {{> me}}", "Me", &[]);
        assert_eq!(err, Err(RenderError::Cycle(vec!["me".into(), "me".into()])));
    }

    #[test]
    fn three_step_cycle_is_reported_with_chain() {
        let prompts = [("b", "{{> c}}"), ("c", "{{> a}}"), ("a", "{{> b}}")];
        let err = render_with("{{> b}}", "a", &[], &prompts);
        let expected = RenderError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()]);
        assert_eq!(err, Err(expected.clone()));
        assert_eq!(expected.to_string(), "include cycle: a -> b -> c -> a");
        assert_eq!(check_with("{{> b}}", "a", &prompts), Err(expected));
    }

    #[test]
    fn cycle_not_through_root_is_detected() {
        let prompts = [("b", "{{> c}}"), ("c", "{{> b}}")];
        let expected = RenderError::Cycle(vec!["a".into(), "b".into(), "c".into(), "b".into()]);
        assert_eq!(
            render_with("{{> b}}", "a", &[], &prompts),
            Err(expected.clone())
        );
        assert_eq!(check_with("{{> b}}", "a", &prompts), Err(expected));
    }

    #[test]
    fn diamond_include_is_not_a_cycle() {
        let prompts = [("b", "b{{> d}}"), ("c", "c{{> d}}"), ("d", "d")];
        let out = render_with("{{> b}}{{> c}}{{> d}}", "a", &[], &prompts);
        assert_eq!(out.as_deref(), Ok("bdcdd"));
        assert_eq!(check_with("{{> b}}{{> c}}", "a", &prompts), Ok(()));
    }

    #[test]
    fn unknown_include_is_reported() {
        let err = render_with("{{> known}}", "root", &[], &[("known", "{{> ghost}}")]);
        assert_eq!(err, Err(RenderError::UnknownInclude("ghost".into())));
        assert_eq!(
            err.expect_err("unknown").to_string(),
            "unknown or unreadable include `ghost`"
        );
        assert_eq!(
            check_with("{{> ghost}}", "root", &[]),
            Err(RenderError::UnknownInclude("ghost".into()))
        );
    }

    #[test]
    fn bad_include_is_reported_with_its_parse_error() {
        let err = render_with("{{> broken}}", "root", &[], &[("broken", "ok\n {{oops")]);
        let parse_error = ParseError {
            line: 2,
            column: 2,
            message: "unclosed `{{`".into(),
        };
        assert_eq!(
            err,
            Err(RenderError::BadInclude("broken".into(), parse_error))
        );
        assert_eq!(
            err.expect_err("bad").to_string(),
            "included prompt `broken` is not a valid template: line 2, column 2: unclosed `{{`"
        );
    }

    /// Prompts p1..=pN where each includes the next; pN is plain text.
    fn chain(n: usize) -> Vec<(String, String)> {
        (1..=n)
            .map(|i| {
                let body = if i == n {
                    "end".to_owned()
                } else {
                    format!("{{{{> p{}}}}}", i + 1)
                };
                (format!("p{i}"), body)
            })
            .collect()
    }

    fn as_refs(prompts: &[(String, String)]) -> Vec<(&str, &str)> {
        prompts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn depth_limit_allows_max_and_rejects_deeper() {
        let ok = chain(MAX_INCLUDE_DEPTH);
        assert_eq!(
            render_with("{{> p1}}", "root", &[], &as_refs(&ok)).as_deref(),
            Ok("end")
        );
        assert_eq!(check_with("{{> p1}}", "root", &as_refs(&ok)), Ok(()));

        let deep = chain(MAX_INCLUDE_DEPTH + 1);
        let err = render_with("{{> p1}}", "root", &[], &as_refs(&deep));
        assert_eq!(err, Err(RenderError::TooDeep(MAX_INCLUDE_DEPTH)));
        assert_eq!(
            err.expect_err("deep").to_string(),
            "includes nest deeper than 8"
        );
        assert_eq!(
            check_with("{{> p1}}", "root", &as_refs(&deep)),
            Err(RenderError::TooDeep(MAX_INCLUDE_DEPTH))
        );
    }

    #[test]
    fn depth_limit_applies_to_reused_includes() {
        // p2 is first rendered shallow, then reused one level too deep.
        let mut prompts = chain(MAX_INCLUDE_DEPTH);
        prompts.push(("shallow".into(), "{{> p2}}".into()));
        let src = "{{> shallow}}{{> p1}}";
        assert_eq!(
            render_with(src, "root", &[], &as_refs(&prompts)).as_deref(),
            Ok("endend")
        );
        let mut too_deep = chain(MAX_INCLUDE_DEPTH + 1);
        too_deep.push(("shallow".into(), "{{> p3}}".into()));
        assert_eq!(
            render_with(src, "root", &[], &as_refs(&too_deep)),
            Err(RenderError::TooDeep(MAX_INCLUDE_DEPTH))
        );
    }

    /// Prompts f1..=fN where each includes the next 20 times; fN holds `leaf`.
    fn fan_out(n: usize, leaf: &str) -> HashMap<String, String> {
        (1..=n)
            .map(|i| {
                let body = if i == n {
                    leaf.to_owned()
                } else {
                    format!("{{{{> f{}}}}}", i + 1).repeat(20)
                };
                (format!("f{i}"), body)
            })
            .collect()
    }

    #[test]
    fn size_limit_stops_include_fan_out() {
        let prompts = fan_out(MAX_INCLUDE_DEPTH, &"x".repeat(100));
        let mut calls = 0;
        let mut resolve = |r: &str| {
            calls += 1;
            prompts.get(r).cloned()
        };
        let t = parse("{{> f1}}").expect("parse");
        let err = render(&t, "root", &HashMap::new(), &mut resolve);
        assert_eq!(err, Err(RenderError::TooLarge(MAX_RENDERED_BYTES)));
        assert_eq!(
            err.expect_err("large").to_string(),
            "the rendered text would exceed 1048576 bytes"
        );
        assert_eq!(calls, MAX_INCLUDE_DEPTH, "each include is resolved once");
    }

    #[test]
    fn empty_fan_out_is_cheap() {
        // 20^7 include visits without reuse; with reuse each prompt renders once.
        let prompts = fan_out(MAX_INCLUDE_DEPTH, "");
        let mut calls = 0;
        let mut resolve = |r: &str| {
            calls += 1;
            prompts.get(r).cloned()
        };
        let t = parse("{{> f1}}").expect("parse");
        assert_eq!(
            render(&t, "root", &HashMap::new(), &mut resolve).as_deref(),
            Ok("")
        );
        assert_eq!(calls, MAX_INCLUDE_DEPTH);
        assert_eq!(
            check_includes(&t, "root", &mut |r: &str| prompts.get(r).cloned()),
            Ok(())
        );
    }

    #[test]
    fn size_limit_counts_values() {
        let big = "y".repeat(MAX_RENDERED_BYTES);
        let exact = render_with("{{a}}", "root", &[("a", big.as_str())], &[]);
        assert_eq!(exact.map(|s| s.len()), Ok(MAX_RENDERED_BYTES));
        let over = render_with("{{a}}!", "root", &[("a", big.as_str())], &[]);
        assert_eq!(over, Err(RenderError::TooLarge(MAX_RENDERED_BYTES)));
    }

    #[test]
    fn check_includes_ignores_variables() {
        let prompts = [("part", "{{needed}}")];
        assert_eq!(check_with("{{x}} {{> part}}", "root", &prompts), Ok(()));
    }

    #[test]
    fn uuid_refs_compare_case_insensitively() {
        let id = "0190F3A2-1B2C-7D3E-8F40-123456789ABC";
        let lower = id.to_lowercase();
        let prompts = [(
            lower.as_str(),
            "again {{> 0190f3a2-1b2c-7d3e-8f40-123456789abc}}",
        )];
        let src = format!("{{{{> {id}}}}}");
        assert_eq!(
            render_with(&src, id, &[], &prompts),
            Err(RenderError::Cycle(vec![lower.clone(), lower]))
        );
    }
}

//! Tokenization for full-text search, shared by the SQLite (FTS5) and PostgreSQL
//! (tsvector) backends.
//!
//! Both engines must return the same results, so they never tokenize on their own:
//! they only ever see lowercase tokens made of letters and digits, separated by single
//! spaces, which FTS5 `unicode61 remove_diacritics 0` and `to_tsvector('simple', …)`
//! split identically. Everything here is pure: no I/O, no database.

use std::collections::{HashMap, HashSet};

use rust_stemmers::{Algorithm, Stemmer};
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::{canonical_combining_class, is_combining_mark};

/// Longer words are cut, so pasted blobs (hashes, base64) cannot make huge tokens.
const MAX_WORD_CHARS: usize = 64;
/// A one-letter prefix would match most of the index.
const MIN_PREFIX_CHARS: usize = 2;
const ELLIPSIS: char = '…';
const ZWJ: char = '\u{200D}';

/// Tokens for the search index of one text, in order, duplicates kept (callers may dedup).
///
/// Word runs give one (stemmed) token each; a CJK run gives all its chars, then all its
/// adjacent pairs: "提示词" -> 提, 示, 词, 提示, 示词.
pub fn index_tokens(text: &str) -> Vec<String> {
    let stemmer = english_stemmer();
    let stream = normalize(text);
    let mut tokens = Vec::new();
    for run in runs(&stream) {
        let chars: Vec<char> = run_chars(&stream, &run).collect();
        if run.cjk {
            tokens.extend(chars.iter().map(char::to_string));
            tokens.extend(chars.windows(2).map(|pair| pair.iter().collect::<String>()));
        } else {
            tokens.push(word_token(chars.into_iter(), &stemmer));
        }
    }
    tokens
}

/// The index tokens of several fields, deduplicated, joined by single spaces (what is stored).
pub fn index_document(fields: &[&str]) -> String {
    let mut seen = HashSet::new();
    let mut doc = String::new();
    for token in fields.iter().flat_map(|field| index_tokens(field)) {
        if seen.contains(&token) {
            continue;
        }
        if !doc.is_empty() {
            doc.push(' ');
        }
        doc.push_str(&token);
        seen.insert(token);
    }
    doc
}

/// A parsed search query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// Every one of these tokens must be present in a matching document.
    pub terms: Vec<String>,
    /// The word being typed, as a prefix: a document matches when it has all `terms`,
    /// except that the last term may instead be matched by any token starting with
    /// `prefix`. Lowercased, unstemmed, ASCII letters/digits, at least 2 chars.
    ///
    /// Set only when the query ends with an ASCII word run (nothing but that word after
    /// the last separator), so whenever it is `Some`, `terms.last()` is that word's term.
    /// It is `None` when that term already came from an earlier word: the earlier word
    /// requires the term anyway, so the prefix could not widen the results.
    pub prefix: Option<String>,
}

impl Query {
    /// True when the query cannot match anything specific (nothing searchable was typed).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.prefix.is_none()
    }
}

/// Parses what a user typed.
///
/// Word runs become stemmed terms as in indexing. A CJK run of one char becomes that
/// unigram; a longer CJK run becomes its bigrams only (all must match), so one- and
/// two-character Chinese words work and longer phrases match documents containing every
/// adjacent pair. Terms are deduplicated, order kept. Empty or only-punctuation input
/// gives an empty `Query`.
pub fn parse_query(q: &str) -> Query {
    let stemmer = english_stemmer();
    let stream = normalize(q);
    let runs = runs(&stream);
    let mut terms = Vec::new();
    let mut seen = HashSet::new();
    let mut last_was_new = false;
    for run in &runs {
        let chars: Vec<char> = run_chars(&stream, run).collect();
        let run_terms: Vec<String> = if !run.cjk {
            vec![word_token(chars.into_iter(), &stemmer)]
        } else if chars.len() == 1 {
            vec![chars.iter().collect()]
        } else {
            chars.windows(2).map(|pair| pair.iter().collect()).collect()
        };
        for term in run_terms {
            last_was_new = seen.insert(term.clone());
            if last_was_new {
                terms.push(term);
            }
        }
    }

    // Only the word still being typed is a prefix: it must run to the very end of the
    // text (trailing whitespace or punctuation means the word is finished).
    let prefix = runs
        .last()
        .filter(|run| !run.cjk && run.end == stream.len() && last_was_new)
        .map(|run| {
            run_chars(&stream, run)
                .take(MAX_WORD_CHARS)
                .collect::<String>()
        })
        .filter(|word| {
            word.chars().count() >= MIN_PREFIX_CHARS
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    Query { terms, prefix }
}

/// A fragment of a text with the query matches highlighted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snippet {
    /// A fragment of the original text (not normalized), at most about `max_chars`
    /// chars, with "…" at a cut start/end.
    pub text: String,
    /// Highlighted ranges in `text`, as [start, end) offsets counted in UTF-16 code units
    /// (what browsers' JavaScript uses), ascending, non-overlapping, merged when adjacent.
    pub highlights: Vec<[usize; 2]>,
    /// The same fragment HTML-escaped (& < > " ') with each highlight wrapped in
    /// <mark>…</mark>: safe to insert as HTML.
    pub marked: String,
}

/// The best fragment of `text` for `query`: the window of about `max_chars` chars with
/// the most matched query tokens (prefer the earliest on ties), cut at whitespace when
/// possible. `None` when nothing in the text matches.
///
/// Windows are ranked by how many distinct query tokens they contain, then by how many
/// matches. Matching is done on the original text: a word matches when its stem
/// (computed as in indexing) is a query term, or when the word or its stem starts with
/// the prefix; a CJK term (unigram or bigram) matches wherever it occurs.
pub fn snippet(text: &str, query: &Query, max_chars: usize) -> Option<Snippet> {
    if query.is_empty() {
        return None;
    }
    let max_chars = max_chars.max(1);
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let clusters = clusters(&chars);
    let matches = find_matches(&chars, &clusters, query);
    let (a, b) = best_window(&matches, max_chars, query.terms.len() + 1)?;

    let mut boundary = vec![false; n + 1];
    for &(start, _) in &clusters {
        boundary[start] = true;
    }
    boundary[n] = true;

    let (mut start, mut end) = if n <= max_chars {
        (0, n)
    } else {
        // Centre the matched span in the window, shifted back inside the text at its end.
        let slack = max_chars.saturating_sub(b - a);
        let start = a.saturating_sub(slack / 2);
        let end = (start + max_chars).min(n);
        (end.saturating_sub(max_chars).min(start), end)
    };

    // Prefer not to cut words: look a little way inwards for whitespace, never past the
    // matched span [a, b), then never split a char from its combining marks.
    let reach = max_chars / 4;
    if start > 0 && !chars[start - 1].is_whitespace() {
        let limit = a.min(start + reach);
        if let Some(p) = (start..limit).find(|&i| chars[i].is_whitespace()) {
            start = p + 1;
        }
    }
    while start < a && !boundary[start] {
        start += 1;
    }
    if end < n && !chars[end].is_whitespace() {
        let limit = b.max(end.saturating_sub(reach));
        if let Some(p) = (limit..end).rev().find(|&i| chars[i].is_whitespace()) {
            end = p;
        }
    }
    while end > b && !boundary[end] {
        end -= 1;
    }
    while start < a && chars[start].is_whitespace() {
        start += 1;
    }
    while end > b && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    let cut_start = chars[..start].iter().any(|c| !c.is_whitespace());
    let cut_end = chars[end..].iter().any(|c| !c.is_whitespace());

    // Highlights in char indices, clipped to the fragment and merged.
    let mut ranges: Vec<[usize; 2]> = Vec::new();
    for m in &matches {
        let (s, e) = (m.start.max(start), m.end.min(end));
        if s >= e {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if s <= last[1] => last[1] = last[1].max(e),
            _ => ranges.push([s, e]),
        }
    }

    let mut out = String::new();
    let mut marked = String::new();
    if cut_start {
        out.push(ELLIPSIS);
        marked.push(ELLIPSIS);
    }
    out.extend(&chars[start..end]);
    let mut pos = start;
    for &[s, e] in &ranges {
        push_escaped(&mut marked, &chars[pos..s]);
        marked.push_str("<mark>");
        push_escaped(&mut marked, &chars[s..e]);
        marked.push_str("</mark>");
        pos = e;
    }
    push_escaped(&mut marked, &chars[pos..end]);
    if cut_end {
        out.push(ELLIPSIS);
        marked.push(ELLIPSIS);
    }

    // JavaScript indexes strings in UTF-16 code units; "…" is one unit.
    let mut utf16 = Vec::with_capacity(end - start + 1);
    let mut offset = usize::from(cut_start);
    utf16.push(offset);
    for c in &chars[start..end] {
        offset += c.len_utf16();
        utf16.push(offset);
    }
    let highlights = ranges
        .iter()
        .map(|&[s, e]| [utf16[s - start], utf16[e - start]])
        .collect();

    Some(Snippet {
        text: out,
        highlights,
        marked,
    })
}

/// A normalized char and the index of the source cluster it came from (0 when unused).
type Tagged = (char, usize);

/// A maximal run of word chars or of CJK chars, as a range of a normalized stream.
#[derive(Debug, Clone, Copy)]
struct Run {
    cjk: bool,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Cjk,
    Separator,
}

/// A query token found in the original text, as a range of char indices.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    end: usize,
    /// Index of the matched term in `Query::terms`; `terms.len()` for the prefix.
    key: usize,
}

fn english_stemmer() -> Stemmer {
    Stemmer::create(Algorithm::English)
}

fn normalize(text: &str) -> Vec<Tagged> {
    let mut stream = Vec::new();
    normalize_into(text, 0, &mut stream);
    stream
}

/// NFKC, then per-char lowercase, dropping chars that must not split nor appear in a word.
fn normalize_into(text: &str, tag: usize, out: &mut Vec<Tagged>) {
    out.extend(
        text.nfkc()
            .flat_map(char::to_lowercase)
            .filter(|&c| !is_ignorable(c))
            .map(|c| (c, tag)),
    );
}

/// Combining marks left after NFKC (Arabic harakat, Indic vowel signs, the dot of a
/// lowercased "İ") and invisible joiners are dropped rather than treated as separators:
/// SQLite's unicode61 would split a word at most of them while PostgreSQL would not,
/// and splitting "كَتَبَ" into single letters would make it unsearchable.
fn is_ignorable(c: char) -> bool {
    is_combining_mark(c) || matches!(c, '\u{00AD}' | '\u{200C}' | ZWJ | '\u{2060}' | '\u{FEFF}')
}

/// Letters and digits (general categories L* and N*), the only chars both engines keep
/// inside a token.
fn is_token_char(c: char) -> bool {
    // Rust counts enclosed letters (Ⓐ, 🅰) as alphabetic, but they are symbols (So),
    // which SQLite treats as separators.
    c.is_alphanumeric()
        && !is_combining_mark(c)
        && !matches!(c as u32, 0x24B6..=0x24E9 | 0x1F130..=0x1F189)
}

/// Han ideographs (with extensions and compatibility ideographs), kana and Hangul.
fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x1100..=0x11FF // Hangul Jamo
            | 0x3005..=0x3007 // 々 〆 〇
            | 0x3021..=0x3029 // Hangzhou numerals
            | 0x3038..=0x303B // more Hangzhou numerals, 〻
            | 0x3040..=0x309F // Hiragana
            | 0x30A0..=0x30FF // Katakana
            | 0x3130..=0x318F // Hangul Compatibility Jamo
            | 0x31F0..=0x31FF // Katakana Phonetic Extensions
            | 0x3400..=0x4DBF // CJK Extension A
            | 0x4E00..=0x9FFF // CJK Unified Ideographs
            | 0xA960..=0xA97F // Hangul Jamo Extended-A
            | 0xAC00..=0xD7AF // Hangul Syllables
            | 0xD7B0..=0xD7FF // Hangul Jamo Extended-B
            | 0xF900..=0xFAFF // CJK Compatibility Ideographs
            | 0xFF66..=0xFFDC // half-width kana and Hangul (NFKC maps them, kept for safety)
            | 0x1AFF0..=0x1B16F // Kana Extended-B, Kana Supplement, Extended-A, Small Kana
            | 0x20000..=0x3FFFD // planes 2 and 3: CJK Extensions B–J and compatibility
    )
}

fn classify(c: char) -> Class {
    if !is_token_char(c) {
        Class::Separator
    } else if is_cjk(c) {
        Class::Cjk
    } else {
        Class::Word
    }
}

fn runs(stream: &[Tagged]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut current: Option<(Class, usize)> = None;
    for (i, &(c, _)) in stream.iter().enumerate() {
        let class = classify(c);
        if current.is_some_and(|(k, _)| k == class) {
            continue;
        }
        if let Some((k, start)) = current {
            out.push(Run {
                cjk: k == Class::Cjk,
                start,
                end: i,
            });
        }
        current = (class != Class::Separator).then_some((class, i));
    }
    if let Some((k, start)) = current {
        out.push(Run {
            cjk: k == Class::Cjk,
            start,
            end: stream.len(),
        });
    }
    out
}

fn run_chars<'a>(stream: &'a [Tagged], run: &Run) -> impl Iterator<Item = char> + 'a {
    stream[run.start..run.end].iter().map(|&(c, _)| c)
}

/// The token of a word run: its Snowball English stem when it is plain ASCII letters,
/// otherwise the word itself (digits, "gpt4", accented and non-Latin words).
fn word_token(chars: impl Iterator<Item = char>, stemmer: &Stemmer) -> String {
    let word: String = chars.take(MAX_WORD_CHARS).collect();
    if word.bytes().all(|b| b.is_ascii_lowercase()) {
        let stem = stemmer.stem(&word);
        // Snowball only trims ASCII words, but never let it produce an unusable token.
        if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_lowercase()) {
            return stem.into_owned();
        }
    }
    word
}

/// Splits text (as chars) into char-index ranges that NFKC can normalize independently:
/// a char that NFKC could merge into the previous one (combining marks, Hangul vowel and
/// final jamo, half-width voiced sound marks, …) stays with it, so NFKC of the whole
/// text is the concatenation of the NFKC of each cluster, and every normalized char can
/// be traced back to a range of the original text. Emoji ZWJ sequences and skin-tone
/// modifiers are kept together too, so a snippet never cuts inside one.
fn clusters(chars: &[char]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        let joins = i > 0 && (chars[i - 1] == ZWJ || joins_previous(c));
        match out.last_mut() {
            Some(last) if joins => last.1 = i + 1,
            _ => out.push((i, i + 1)),
        }
    }
    out
}

fn joins_previous(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    // U+16D67 (Kirat Rai vowel sign E) is the one spacing starter that composes with a
    // preceding char besides Hangul jamo.
    if c == ZWJ || c == '\u{16D67}' || matches!(c as u32, 0x1F3FB..=0x1F3FF) {
        return true;
    }
    std::iter::once(c).nfkc().next().is_some_and(|first| {
        is_combining_mark(first)
            || canonical_combining_class(first) != 0
            || matches!(first as u32, 0x1160..=0x11FF | 0xD7B0..=0xD7FF)
    })
}

/// All places in the original text where a query token matches, sorted by position.
fn find_matches(chars: &[char], clusters: &[(usize, usize)], query: &Query) -> Vec<Match> {
    let stemmer = english_stemmer();
    let mut stream = Vec::new();
    let mut piece = String::new();
    for (k, &(s, e)) in clusters.iter().enumerate() {
        piece.clear();
        piece.extend(&chars[s..e]);
        normalize_into(&piece, k, &mut stream);
    }

    let keys: HashMap<&str, usize> = query
        .terms
        .iter()
        .enumerate()
        .map(|(i, term)| (term.as_str(), i))
        .collect();
    let prefix_key = query.terms.len();
    // Snowball English only rewrites word endings: a word whose first two letters start no
    // term (and not the prefix) cannot match, and is not stemmed at all.
    let heads: Vec<String> = query
        .terms
        .iter()
        .chain(query.prefix.iter())
        .map(|t| t.chars().take(2).collect())
        .collect();
    // Stream range -> original char range, through the clusters the chars came from.
    let span = |from: usize, to: usize| (clusters[stream[from].1].0, clusters[stream[to - 1].1].1);

    let mut matches = Vec::new();
    let mut push =
        |(start, end): (usize, usize), key: usize| matches.push(Match { start, end, key });
    for run in runs(&stream) {
        if run.cjk {
            for i in run.start..run.end {
                let unigram = stream[i].0.to_string();
                if let Some(&key) = keys.get(unigram.as_str()) {
                    push(span(i, i + 1), key);
                }
                if i + 1 < run.end {
                    let bigram: String = [stream[i].0, stream[i + 1].0].iter().collect();
                    if let Some(&key) = keys.get(bigram.as_str()) {
                        push(span(i, i + 2), key);
                    }
                }
            }
        } else {
            let word: String = run_chars(&stream, &run).collect();
            if !heads.iter().any(|h| word.starts_with(h.as_str())) {
                continue;
            }
            let token = word_token(word.chars(), &stemmer);
            let key = keys.get(token.as_str()).copied().or_else(|| {
                query
                    .prefix
                    .as_deref()
                    .filter(|p| word.starts_with(p) || token.starts_with(p))
                    .map(|_| prefix_key)
            });
            if let Some(key) = key {
                push(span(run.start, run.end), key);
            }
        }
    }
    matches.sort_by_key(|m| (m.start, m.end));
    matches
}

/// The char range [first match start, last match end) of the best window of
/// `max_chars` chars: most distinct query tokens, then most matches, then earliest.
fn best_window(matches: &[Match], max_chars: usize, key_count: usize) -> Option<(usize, usize)> {
    let mut seen = vec![usize::MAX; key_count];
    let mut best: Option<((usize, usize), (usize, usize))> = None;
    for (i, first) in matches.iter().enumerate() {
        let limit = first.start + max_chars;
        let (mut distinct, mut total, mut last_end) = (0, 0, first.start);
        for m in matches[i..].iter().take_while(|m| m.start < limit) {
            if m.end > limit {
                continue;
            }
            total += 1;
            if seen[m.key] != i {
                seen[m.key] = i;
                distinct += 1;
            }
            last_end = last_end.max(m.end);
        }
        if total == 0 {
            // This match alone is longer than the window: show its beginning.
            (distinct, total, last_end) = (1, 1, limit);
        }
        let score = (distinct, total);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, (first.start, last_end)));
        }
    }
    best.map(|(_, window)| window)
}

fn push_escaped(out: &mut String, chars: &[char]) {
    for &c in chars {
        platform::text::push_escaped(out, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<String> {
        index_tokens(text)
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Strings that have broken tokenizers or query parsers somewhere.
    const NASTY: &[&str] = &[
        "",
        " ",
        "\0",
        "a\0b",
        "'",
        "''",
        "\"",
        "\"\"",
        "it's \"quoted\" 'text'",
        "*",
        "promp*",
        "a:b",
        "title:secret",
        "a & b | !c",
        "!(a | b) & c:*",
        "'a':* & !'b'",
        "(",
        "())(",
        "a <-> b <2> c",
        "NEAR(a b, 3)",
        "a AND b OR NOT c",
        "^start + -minus",
        "col:{a b} : c",
        "'; DROP TABLE prompts; --",
        "1' OR '1'='1",
        "SELECT * FROM t WHERE x = 'y'",
        "to_tsquery('simple', 'a & b')",
        "\\ \\\\ \\x00 %s %d {} []",
        "snake_case_word kebab-case dotted.name",
        "😀👍🏽👩‍💻🇨🇳",
        "emoji😀inside",
        "\u{200F}עברית\u{200E} mixed \u{202E}reversed\u{202C}",
        "مرحبا كَتَبَ",
        "e\u{0301}\u{0301}\u{0308} \u{0301}alone",
        "Z\u{0351}\u{0337}\u{0353}a\u{0336}\u{0342}lgo",
        "हिन्दी தமிழ் ไทย",
        "ｆｕｌｌ－ｗｉｄｔｈ　ＧＰＴ４！",
        "ﬁﬂ ½ ⑴ ① ™ ㎏ ㍻ Ⓐ 🅰 𝐁𝐨𝐥𝐝",
        "İstanbul ΣΑΣ ß ẞ ǅ",
        "ｶﾞｷﾞ ㄱㅏ ᄀ\u{1161}\u{11A8}",
        "提示词，“中文”标点！？",
        "\u{00AD}\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
        "\t\n\r\u{0B}\u{0C}\u{85}\u{2028}\u{2029}",
        "\u{E000}private\u{F8FF}",
        "a\u{FE0F}b\u{E0100}",
        "𠀀𪜀𰀀 〇々〆",
    ];

    fn assert_token_ok(token: &str, input: &str) {
        assert!(!token.is_empty(), "empty token from {input:?}");
        assert!(
            token.chars().all(char::is_alphanumeric),
            "non-alphanumeric token {token:?} from {input:?}"
        );
        assert!(
            token.chars().flat_map(char::to_lowercase).eq(token.chars()),
            "token {token:?} from {input:?} is not lowercase"
        );
        assert!(token.chars().count() <= MAX_WORD_CHARS);
    }

    #[test]
    fn english_words_are_stemmed() {
        assert_eq!(toks("running prompts"), strs(&["run", "prompt"]));
        assert_eq!(
            toks("Writing THE Prompts"),
            strs(&["write", "the", "prompt"])
        );
    }

    #[test]
    fn non_ascii_and_mixed_words_are_kept_as_is() {
        assert_eq!(
            toks("gpt4 2024 Café Привет naïve"),
            strs(&["gpt4", "2024", "café", "привет", "naïve"])
        );
    }

    #[test]
    fn separators_split_words() {
        assert_eq!(
            toks("snake_case kebab-case it's a.b"),
            strs(&["snake", "case", "kebab", "case", "it", "s", "a", "b"])
        );
    }

    #[test]
    fn full_width_text_is_normalized() {
        assert_eq!(toks("ＧＰＴ４"), strs(&["gpt4"]));
        assert_eq!(toks("ｐｒｏｍｐｔｓ！"), strs(&["prompt"]));
        assert_eq!(toks("ｶﾞ"), strs(&["ガ"]));
    }

    #[test]
    fn decomposed_marks_join_their_word() {
        assert_eq!(toks("cafe\u{0301}"), strs(&["café"]));
        assert_eq!(toks("İstanbul"), strs(&["istanbul"]));
        assert_eq!(toks("كَتَبَ"), strs(&["كتب"]));
        assert_eq!(toks("soft\u{00AD}ware"), strs(&["softwar"]));
    }

    #[test]
    fn mixed_chinese_and_latin_tokens() {
        assert_eq!(
            toks("用GPT4写作文"),
            strs(&["用", "gpt4", "写", "作", "文", "写作", "作文"])
        );
    }

    #[test]
    fn chinese_index_has_unigrams_and_bigrams() {
        assert_eq!(toks("提示词"), strs(&["提", "示", "词", "提示", "示词"]));
        assert_eq!(
            toks("提示，词"),
            strs(&["提", "示", "提示", "词"]),
            "punctuation ends a CJK run"
        );
        assert_eq!(toks("ひらがなカタカナ"), {
            let mut v = strs(&["ひ", "ら", "が", "な", "カ", "タ", "カ", "ナ"]);
            v.extend(strs(&[
                "ひら", "らが", "がな", "なカ", "カタ", "タカ", "カナ",
            ]));
            v
        });
    }

    #[test]
    fn long_words_are_cut() {
        let long = "x".repeat(100);
        assert_eq!(toks(&long), vec!["x".repeat(MAX_WORD_CHARS)]);
        let digits = "7".repeat(70);
        assert_eq!(toks(&digits), vec!["7".repeat(MAX_WORD_CHARS)]);
    }

    #[test]
    fn index_document_dedups() {
        assert_eq!(
            index_document(&["Prompt prompts", "提示 提示", "PROMPTING"]),
            "prompt 提 示 提示"
        );
        assert_eq!(index_document(&[]), "");
        assert_eq!(index_document(&["", "!!!"]), "");
    }

    #[test]
    fn tokens_never_contain_non_alphanumerics() {
        for input in NASTY {
            for token in index_tokens(input) {
                assert_token_ok(&token, input);
            }
            let doc = index_document(&[input, "x"]);
            for token in doc.split(' ') {
                assert_token_ok(token, input);
            }
        }
        assert!(index_tokens("🅰 Ⓑ").iter().all(|t| t == "b"));
    }

    #[test]
    fn query_from_nasty_input_is_alphanumeric() {
        for input in NASTY {
            let query = parse_query(input);
            for term in &query.terms {
                assert_token_ok(term, input);
            }
            if let Some(prefix) = &query.prefix {
                assert_token_ok(prefix, input);
                assert!(prefix.is_ascii());
                assert!(prefix.len() >= MIN_PREFIX_CHARS);
            }
            let unique: HashSet<&String> = query.terms.iter().collect();
            assert_eq!(
                unique.len(),
                query.terms.len(),
                "duplicate terms for {input:?}"
            );
        }
    }

    #[test]
    fn query_for_one_char_chinese_word() {
        let q = parse_query("词");
        assert_eq!(q.terms, strs(&["词"]));
        assert_eq!(q.prefix, None);
    }

    #[test]
    fn query_for_two_char_chinese_word() {
        let q = parse_query("提示");
        assert_eq!(q.terms, strs(&["提示"]));
        assert_eq!(q.prefix, None);
    }

    #[test]
    fn query_for_four_char_chinese_phrase() {
        let q = parse_query("提示工程");
        assert_eq!(q.terms, strs(&["提示", "示工", "工程"]));
        let doc: HashSet<String> = index_tokens("学习提示工程的方法").into_iter().collect();
        assert!(q.terms.iter().all(|t| doc.contains(t)));
    }

    #[test]
    fn query_mixes_words_and_chinese() {
        let q = parse_query("用 GPT4 写作文 ");
        assert_eq!(q.terms, strs(&["用", "gpt4", "写作", "作文"]));
        assert_eq!(q.prefix, None);
    }

    #[test]
    fn query_prefix_depends_on_trailing_space() {
        let typing = parse_query("write promp");
        assert_eq!(typing.terms, strs(&["write", "promp"]));
        assert_eq!(typing.prefix.as_deref(), Some("promp"));

        let done = parse_query("write promp ");
        assert_eq!(done.terms, strs(&["write", "promp"]));
        assert_eq!(done.prefix, None);

        let stemmed = parse_query("Running");
        assert_eq!(stemmed.terms, strs(&["run"]));
        assert_eq!(stemmed.prefix.as_deref(), Some("running"));

        assert_eq!(parse_query("gpt4").prefix.as_deref(), Some("gpt4"));
        assert_eq!(parse_query("ｐｒｏｍ").prefix.as_deref(), Some("prom"));
    }

    #[test]
    fn query_prefix_only_for_ascii_words_of_two_chars() {
        assert_eq!(parse_query("p").prefix, None);
        assert_eq!(parse_query("a p").terms, strs(&["a", "p"]));
        assert_eq!(parse_query("prompt 提示").prefix, None);
        assert_eq!(parse_query("prompt 词").prefix, None);
        assert_eq!(parse_query("café").prefix, None);
        assert_eq!(parse_query("promp.").prefix, None);
        assert_eq!(parse_query("promp\u{3000}").prefix, None);
    }

    #[test]
    fn query_prefix_dropped_when_term_repeats() {
        let q = parse_query("prompt prompts");
        assert_eq!(q.terms, strs(&["prompt"]));
        assert_eq!(q.prefix, None);
    }

    #[test]
    fn query_terms_are_deduplicated_in_order() {
        let q = parse_query("prompts write Prompt 提示 提示 ");
        assert_eq!(q.terms, strs(&["prompt", "write", "提示"]));
    }

    #[test]
    fn empty_queries() {
        for input in [
            "",
            "   ",
            "!!! --- ...",
            "\"*:&|!()",
            "😀 👍",
            "\u{200D}\u{0301}",
        ] {
            let q = parse_query(input);
            assert_eq!(q, Query::default(), "{input:?}");
            assert!(q.is_empty());
        }
        assert!(!parse_query("a").is_empty());
    }

    #[test]
    fn per_cluster_normalization_equals_whole_text() {
        let mut samples: Vec<String> = NASTY.iter().map(|s| (*s).to_owned()).collect();
        let pool = [
            "a",
            "e",
            "\u{0301}",
            "\u{0323}",
            "ｶ",
            "ﾞ",
            "ﾟ",
            "ㄱ",
            "ㅏ",
            "ᄀ",
            "\u{1161}",
            "\u{11A8}",
            "가",
            "\u{0BC6}",
            "\u{0BBE}",
            "\u{0E33}",
            "ก",
            "\u{16D63}",
            "\u{16D67}",
            "ﬁ",
            "①",
            " ",
            "😀",
            "\u{200D}",
            "\u{1F3FD}",
            "İ",
            "Σ",
            "提",
        ];
        for x in pool {
            for y in pool {
                for z in ["", "a", "\u{0301}", "ﾞ", "ㅏ"] {
                    samples.push(format!("{x}{y}{z}"));
                }
            }
        }
        for sample in samples {
            let chars: Vec<char> = sample.chars().collect();
            let mut pieces = Vec::new();
            for &(s, e) in &clusters(&chars) {
                let piece: String = chars[s..e].iter().collect();
                normalize_into(&piece, 0, &mut pieces);
            }
            assert_eq!(pieces, normalize(&sample), "{sample:?}");
        }
    }

    #[test]
    fn snippet_of_short_text_is_whole() {
        let s = snippet("Write a running prompt", &parse_query("run "), 100);
        let s = s.expect("match");
        assert_eq!(s.text, "Write a running prompt");
        assert_eq!(s.highlights, vec![[8, 15]]);
        assert_eq!(s.marked, "Write a <mark>running</mark> prompt");
    }

    #[test]
    fn snippet_none_when_nothing_matches() {
        assert_eq!(snippet("Write a prompt", &parse_query("essay "), 50), None);
        assert_eq!(snippet("Write a prompt", &Query::default(), 50), None);
        assert_eq!(snippet("", &parse_query("prompt"), 50), None);
        assert_eq!(snippet("提示", &parse_query("词"), 50), None);
    }

    #[test]
    fn snippet_window_has_ellipses_and_cuts_at_whitespace() {
        let filler = "lorem ipsum dolor sit amet ".repeat(20);
        let text = format!("{filler}the magic prompt is here {filler}");
        let s = snippet(&text, &parse_query("prompt "), 40).expect("match");
        assert!(
            s.text.starts_with('…') && s.text.ends_with('…'),
            "{:?}",
            s.text
        );
        let inner: String = s.text.trim_matches('…').to_owned();
        assert!(inner.chars().count() <= 40);
        assert!(text.contains(&inner));
        assert!(!inner.starts_with(' ') && !inner.ends_with(' '));
        // Cut at whitespace: the fragment starts and ends with whole words.
        let words: HashSet<&str> = text.split(' ').collect();
        let inner_words: Vec<&str> = inner.split(' ').collect();
        assert!(inner_words.iter().all(|w| words.contains(w)), "{inner:?}");
        assert_eq!(s.highlights.len(), 1);
        let [a, b] = s.highlights[0];
        let utf16: Vec<u16> = s.text.encode_utf16().collect();
        assert_eq!(String::from_utf16_lossy(&utf16[a..b]), "prompt");
        assert!(s.marked.contains("<mark>prompt</mark>"));
    }

    #[test]
    fn snippet_at_text_start_has_no_leading_ellipsis() {
        let text = format!("Prompt engineering {}", "and more words ".repeat(30));
        let s = snippet(&text, &parse_query("prompt "), 30).expect("match");
        assert!(s.text.starts_with("Prompt engineering"));
        assert!(s.text.ends_with('…'));
        assert_eq!(s.highlights, vec![[0, 6]]);
    }

    #[test]
    fn snippet_prefers_window_with_most_terms() {
        let filler = "filler words go here ".repeat(10);
        let text = format!("prompt alone {filler} essay and prompt together {filler}");
        let s = snippet(&text, &parse_query("prompt essay "), 40).expect("match");
        assert!(s.text.contains("essay and prompt together"), "{:?}", s.text);
        assert_eq!(s.highlights.len(), 2);
    }

    #[test]
    fn snippet_prefers_earliest_on_ties() {
        let filler = "filler words go here ".repeat(10);
        let text = format!("{filler} first prompt {filler} second prompt {filler}");
        let s = snippet(&text, &parse_query("prompt "), 30).expect("match");
        assert!(s.text.contains("first prompt"), "{:?}", s.text);
    }

    #[test]
    fn snippet_utf16_offsets_after_emoji() {
        let s = snippet("😀 提示词 prompt", &parse_query("prompt "), 50).expect("match");
        assert_eq!(s.text, "😀 提示词 prompt");
        // The emoji is two UTF-16 units: 2 + 1 + 3 + 1 = 7.
        assert_eq!(s.highlights, vec![[7, 13]]);

        let cut = format!("{}😀 prompt", "x ".repeat(50));
        let s = snippet(&cut, &parse_query("prompt "), 10).expect("match");
        // "…" + "x " + emoji (2 units) + " " = 6.
        assert_eq!(s.text, "…x 😀 prompt");
        assert_eq!(s.highlights, vec![[6, 12]]);
    }

    #[test]
    fn snippet_merges_chinese_bigrams() {
        let s = snippet("这是提示词工程，很有用。", &parse_query("提示词"), 50).expect("match");
        assert_eq!(s.highlights, vec![[2, 5]]);
        assert_eq!(s.marked, "这是<mark>提示词</mark>工程，很有用。");

        let one = snippet("词语和提示词", &parse_query("词"), 50).expect("match");
        assert_eq!(one.highlights, vec![[0, 1], [5, 6]]);
    }

    #[test]
    fn snippet_of_long_chinese_text() {
        let text = format!(
            "{}提示工程{}",
            "无关的内容。".repeat(30),
            "其他的文字。".repeat(30)
        );
        let s = snippet(&text, &parse_query("提示工程"), 20).expect("match");
        assert!(s.text.starts_with('…') && s.text.ends_with('…'));
        assert!(s.text.chars().count() <= 22);
        assert!(s.marked.contains("<mark>提示工程</mark>"), "{:?}", s.marked);
    }

    #[test]
    fn snippet_matches_on_original_text() {
        let s = snippet("用ＧＰＴ４写作文", &parse_query("gpt4 "), 50).expect("match");
        assert_eq!(s.text, "用ＧＰＴ４写作文");
        assert_eq!(s.highlights, vec![[1, 5]]);

        let s = snippet("un cafe\u{0301} noir", &parse_query("café "), 50).expect("match");
        assert_eq!(s.highlights, vec![[3, 8]]);
        assert_eq!(s.marked, "un <mark>cafe\u{0301}</mark> noir");
    }

    #[test]
    fn snippet_highlights_prefix() {
        let s = snippet("Prompting tips", &parse_query("promp"), 50).expect("match");
        assert_eq!(s.highlights, vec![[0, 9]]);
        let s = snippet("the runner runs", &parse_query("runn"), 50).expect("match");
        assert_eq!(s.highlights, vec![[4, 10]]);
    }

    #[test]
    fn snippet_escapes_html() {
        let text = "<script>alert('x & \"y\"')</script> prompt";
        let s = snippet(text, &parse_query("prompt "), 100).expect("match");
        assert_eq!(s.text, text);
        assert_eq!(
            s.marked,
            "&lt;script&gt;alert(&#39;x &amp; &quot;y&quot;&#39;)&lt;/script&gt; <mark>prompt</mark>"
        );
        let s = snippet(text, &parse_query("script "), 100).expect("match");
        assert!(s.marked.starts_with("&lt;<mark>script</mark>&gt;"));
        assert!(!s.marked.contains("<script"));
    }

    #[test]
    fn snippet_of_word_longer_than_window() {
        let text = format!("start {} end", "a".repeat(100));
        let s = snippet(&text, &parse_query(&"a".repeat(70)), 20).expect("match");
        assert_eq!(s.text, format!("…{}…", "a".repeat(20)));
        assert_eq!(s.highlights, vec![[1, 21]]);
    }

    #[test]
    fn snippet_serializes() {
        let s = snippet("a prompt", &parse_query("prompt "), 50).expect("match");
        let json = serde_json::to_value(&s).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "text": "a prompt",
                "highlights": [[2, 8]],
                "marked": "a <mark>prompt</mark>",
            })
        );
    }

    #[test]
    fn snippet_of_nasty_text_is_well_formed() {
        let query = parse_query("a b 提 gpt4 prompt");
        for input in NASTY {
            let text = format!("{input} a prompt {input}");
            let Some(s) = snippet(&text, &query, 12) else {
                panic!("no snippet for {text:?}");
            };
            let units = s.text.encode_utf16().count();
            let mut prev_end = None;
            for &[a, b] in &s.highlights {
                assert!(a < b && b <= units, "{s:?}");
                if let Some(p) = prev_end {
                    assert!(a > p, "highlights not merged/ascending: {s:?}");
                }
                prev_end = Some(b);
            }
            assert!(!s.marked.contains("<script"));
        }
    }
}

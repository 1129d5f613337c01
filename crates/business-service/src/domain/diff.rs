//! Line diffs between two versions of a prompt.
//!
//! Line endings are normalised first (`\r\n` and lone `\r` become `\n`): prompts
//! arrive from browsers, files and APIs with mixed endings, and a version that only
//! changed line endings should not show every line as rewritten.

use std::borrow::Cow;

use similar::{ChangeTag, TextDiff};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Equal,
    Insert,
    Delete,
}

/// One line of a diff; line numbers are 1-based and `text` has no line ending.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Line {
    pub op: Op,
    pub old_line: Option<usize>,
    pub new_line: Option<usize>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    pub added: usize,
    pub removed: usize,
    pub lines: Vec<Line>,
}

/// Full line diff: every line of both texts appears once.
///
/// Lines are compared without their endings, so a text that differs only in its
/// final newline diffs as equal here (a [`Line`] cannot show that); [`unified`]
/// does show it.
pub fn diff(old: &str, new: &str) -> Diff {
    let old = normalize_newlines(old);
    let new = normalize_newlines(new);
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let text_diff = TextDiff::configure().diff_slices(&old_lines, &new_lines);

    let mut result = Diff {
        added: 0,
        removed: 0,
        lines: Vec::with_capacity(old_lines.len().max(new_lines.len())),
    };
    for change in text_diff.iter_all_changes() {
        let op = match change.tag() {
            ChangeTag::Equal => Op::Equal,
            ChangeTag::Insert => {
                result.added += 1;
                Op::Insert
            }
            ChangeTag::Delete => {
                result.removed += 1;
                Op::Delete
            }
        };
        result.lines.push(Line {
            op,
            old_line: change.old_index().map(|i| i + 1),
            new_line: change.new_index().map(|i| i + 1),
            text: change.value().to_owned(),
        });
    }
    result
}

/// Unified diff text (like `diff -u`), with `---`/`+++` headers using the labels, `@@ -a,b +c,d @@` hunks and `context` lines of context; empty string when the texts are equal. A last line without trailing newline is marked with "\ No newline at end of file" as diff -u does.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str, context: usize) -> String {
    let old = normalize_newlines(old);
    let new = normalize_newlines(new);
    TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(context)
        .missing_newline_hint(true)
        .header(&single_line(old_label), &single_line(new_label))
        .to_string()
}

fn normalize_newlines(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A newline in a label would forge extra diff lines.
fn single_line(label: &str) -> Cow<'_, str> {
    if label.contains(['\n', '\r']) {
        Cow::Owned(label.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(op: Op, old_line: Option<usize>, new_line: Option<usize>, text: &str) -> Line {
        Line {
            op,
            old_line,
            new_line,
            text: text.to_owned(),
        }
    }

    #[test]
    fn identical_texts() {
        let d = diff("a\nb\n", "a\nb\n");
        assert_eq!((d.added, d.removed), (0, 0));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Equal, Some(1), Some(1), "a"),
                line(Op::Equal, Some(2), Some(2), "b"),
            ]
        );
        assert_eq!(unified("a\nb\n", "a\nb\n", "v1", "v2", 3), "");
    }

    #[test]
    fn both_empty() {
        let d = diff("", "");
        assert_eq!(
            d,
            Diff {
                added: 0,
                removed: 0,
                lines: vec![]
            }
        );
        assert_eq!(unified("", "", "v1", "v2", 3), "");
    }

    #[test]
    fn pure_insert() {
        let d = diff("a\nc\n", "a\nb\nc\n");
        assert_eq!((d.added, d.removed), (1, 0));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Equal, Some(1), Some(1), "a"),
                line(Op::Insert, None, Some(2), "b"),
                line(Op::Equal, Some(2), Some(3), "c"),
            ]
        );
    }

    #[test]
    fn pure_delete() {
        let d = diff("a\nb\nc\n", "a\nc\n");
        assert_eq!((d.added, d.removed), (0, 1));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Equal, Some(1), Some(1), "a"),
                line(Op::Delete, Some(2), None, "b"),
                line(Op::Equal, Some(3), Some(2), "c"),
            ]
        );
    }

    #[test]
    fn change_in_the_middle_has_line_numbers() {
        let old = "one\ntwo\nthree\nfour\nfive\n";
        let new = "one\ntwo\n3\n3.5\nfour\nfive\n";
        let d = diff(old, new);
        assert_eq!((d.added, d.removed), (2, 1));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Equal, Some(1), Some(1), "one"),
                line(Op::Equal, Some(2), Some(2), "two"),
                line(Op::Delete, Some(3), None, "three"),
                line(Op::Insert, None, Some(3), "3"),
                line(Op::Insert, None, Some(4), "3.5"),
                line(Op::Equal, Some(4), Some(5), "four"),
                line(Op::Equal, Some(5), Some(6), "five"),
            ]
        );
    }

    #[test]
    fn empty_old_or_new() {
        let d = diff("", "x\ny");
        assert_eq!((d.added, d.removed), (2, 0));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Insert, None, Some(1), "x"),
                line(Op::Insert, None, Some(2), "y"),
            ]
        );
        let d = diff("x\ny\n", "");
        assert_eq!((d.added, d.removed), (0, 2));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Delete, Some(1), None, "x"),
                line(Op::Delete, Some(2), None, "y"),
            ]
        );
        assert_eq!(
            unified("", "x\n", "a", "b", 3),
            "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n"
        );
        assert_eq!(
            unified("x\ny\n", "", "a", "b", 3),
            "--- a\n+++ b\n@@ -1,2 +0,0 @@\n-x\n-y\n"
        );
    }

    #[test]
    fn blank_lines_count_as_lines() {
        let d = diff("\n\n", "\n");
        assert_eq!((d.added, d.removed), (0, 1));
        assert_eq!(d.lines.len(), 2);
        assert!(d.lines.iter().all(|l| l.text.is_empty()));
    }

    #[test]
    fn crlf_and_missing_final_newline_do_not_change_lines() {
        let d = diff("a\r\nb\r\n", "a\nb");
        assert_eq!((d.added, d.removed), (0, 0));
        assert_eq!(
            d.lines,
            vec![
                line(Op::Equal, Some(1), Some(1), "a"),
                line(Op::Equal, Some(2), Some(2), "b"),
            ]
        );
        let d = diff("a\rb\r\nc", "a\nB\nc\n");
        assert_eq!((d.added, d.removed), (1, 1));
        assert_eq!(d.lines[1], line(Op::Delete, Some(2), None, "b"));
        assert_eq!(d.lines[2], line(Op::Insert, None, Some(2), "B"));
        assert_eq!(unified("a\r\nb\r\n", "a\nb\n", "v1", "v2", 3), "");
    }

    #[test]
    fn chinese_text() {
        let d = diff("你好\n世界\n", "你好\n天下\n");
        assert_eq!(
            d.lines,
            vec![
                line(Op::Equal, Some(1), Some(1), "你好"),
                line(Op::Delete, Some(2), None, "世界"),
                line(Op::Insert, None, Some(2), "天下"),
            ]
        );
        assert_eq!(
            unified("你好\n世界\n", "你好\n天下\n", "旧", "新", 1),
            "--- 旧\n+++ 新\n@@ -1,2 +1,2 @@\n 你好\n-世界\n+天下\n"
        );
    }

    #[test]
    fn unified_exact_output() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\nfour\n5\n6\n7\n8\n9\nten\n";
        let expected = "\
--- prompt v1
+++ prompt v2
@@ -2,5 +2,5 @@
 2
 3
-4
+four
 5
 6
@@ -8,2 +8,3 @@
 8
 9
+ten
";
        assert_eq!(unified(old, new, "prompt v1", "prompt v2", 2), expected);
    }

    #[test]
    fn unified_zero_context() {
        let out = unified("a\nb\nc\n", "a\nB\nc\n", "old", "new", 0);
        assert_eq!(out, "--- old\n+++ new\n@@ -2 +2 @@\n-b\n+B\n");
    }

    #[test]
    fn unified_marks_missing_final_newline() {
        let out = unified("a\nb", "a\nc", "old", "new", 3);
        let expected = "\
--- old
+++ new
@@ -1,2 +1,2 @@
 a
-b
\\ No newline at end of file
+c
\\ No newline at end of file
";
        assert_eq!(out, expected);

        let out = unified("a", "a\n", "old", "new", 3);
        assert_eq!(
            out,
            "--- old\n+++ new\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+a\n"
        );
    }

    #[test]
    fn unified_labels_stay_on_one_line() {
        let out = unified("a\n", "b\n", "x\n+++ forged", "y", 3);
        assert!(out.starts_with("--- x +++ forged\n+++ y\n"), "{out}");
    }

    #[test]
    fn serializes_ops_lowercase() {
        let d = diff("a\n", "b\n");
        let json = serde_json::to_value(&d).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "added": 1,
                "removed": 1,
                "lines": [
                    {"op": "delete", "old_line": 1, "new_line": null, "text": "a"},
                    {"op": "insert", "old_line": null, "new_line": 1, "text": "b"},
                ]
            })
        );
    }
}

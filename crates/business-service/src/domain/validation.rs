//! What valid prompts, folders, tags and categories look like. Every check returns the
//! message a client sees. Text may be in any language; names never carry control or
//! direction-changing characters.

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 2000;
pub const TAG_MAX: usize = 64;
pub const TAGS_MAX: usize = 20;
pub const CATEGORY_MAX: usize = 64;
pub const SLUG_MAX: usize = 64;
pub const FOLDER_NAME_MAX: usize = 100;
pub const ICON_MAX: usize = 32;
pub const MESSAGE_MAX: usize = 500;

pub const VISIBILITIES: &[&str] = &["private", "unlisted", "public"];
pub const STATUSES: &[&str] = &["active", "archived"];

use platform::text::is_hostile as hostile;

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A one-line name: non-blank, at most `max` characters, no hostile characters.
pub fn name(s: &str, max: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("may not be blank".into());
    }
    if chars(s) > max {
        return Err(format!("must be at most {max} characters"));
    }
    if s.chars().any(hostile) {
        return Err("may not contain control or direction-changing characters".into());
    }
    Ok(())
}

pub fn title(s: &str) -> Result<(), String> {
    name(s, TITLE_MAX)
}

/// Prompt text: anything printable, tabs and newlines included, up to `max` characters.
pub fn content(s: &str, max: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("may not be blank".into());
    }
    if chars(s) > max {
        return Err(format!("must be at most {max} characters"));
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("may not contain control characters other than tabs and newlines".into());
    }
    Ok(())
}

pub fn description(s: &str) -> Result<(), String> {
    if chars(s) > DESCRIPTION_MAX {
        return Err(format!("must be at most {DESCRIPTION_MAX} characters"));
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("may not contain control characters other than tabs and newlines".into());
    }
    Ok(())
}

/// Tags, trimmed and deduplicated case-insensitively (first spelling kept).
pub fn tags(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in list {
        let tag = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        name(&tag, TAG_MAX).map_err(|e| format!("tag `{}` {e}", raw.trim()))?;
        if !out.iter().any(|t| key(t) == key(&tag)) {
            out.push(tag);
        }
    }
    if out.len() > TAGS_MAX {
        return Err(format!("at most {TAGS_MAX} tags"));
    }
    Ok(out)
}

/// `a-z`, digits and single hyphens: what `{{> slug}}` refers to.
pub fn slug(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= SLUG_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {SLUG_MAX} of a-z, 0-9 and single inner hyphens"
        ))
    }
}

pub fn one_of(s: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(format!("must be one of {}", allowed.join(", ")))
    }
}

/// `#rgb` or `#rrggbb`.
pub fn color(s: &str) -> Result<(), String> {
    let hex = s.strip_prefix('#').unwrap_or("");
    if (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("must be a colour like #3b82f6".into())
    }
}

/// An icon name or an emoji.
pub fn icon(s: &str) -> Result<(), String> {
    if s.is_empty() || chars(s) > ICON_MAX {
        return Err(format!("must be 1 to {ICON_MAX} characters"));
    }
    if s.chars().any(|c| hostile(c) || c.is_whitespace()) {
        return Err("may not contain spaces or control characters".into());
    }
    Ok(())
}

pub fn message(s: &str) -> Result<(), String> {
    if chars(s) > MESSAGE_MAX {
        return Err(format!("must be at most {MESSAGE_MAX} characters"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err("may not contain control characters".into());
    }
    Ok(())
}

/// The case-insensitive key of a name.
pub fn key(s: &str) -> String {
    s.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_deduplicated_and_checked() {
        let got = tags(&[" GPT-4 ".into(), "gpt-4".into(), "写作  助手".into()]).unwrap();
        assert_eq!(got, vec!["GPT-4".to_owned(), "写作 助手".to_owned()]);
        assert!(tags(&["".into()]).is_err());
        assert!(tags(&["x\u{202E}y".into()]).is_err());
        assert!(tags(&(0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn slugs_colors_icons() {
        assert!(slug("other-prompt").is_ok());
        assert!(slug("Other").is_err() && slug("-a").is_err() && slug("a--b").is_err());
        assert!(color("#3B82F6").is_ok() && color("#fff").is_ok());
        assert!(color("red").is_err() && color("#12345").is_err());
        assert!(icon("📁").is_ok() && icon("folder-open").is_ok());
        assert!(icon("a b").is_err());
    }

    #[test]
    fn content_keeps_newlines_and_refuses_other_controls() {
        assert!(content("line one\n\tline two\r\n", 100).is_ok());
        assert!(content("bell\u{7}", 100).is_err());
        assert!(content("   ", 100).is_err());
        assert!(content(&"字".repeat(101), 100).is_err());
    }
}

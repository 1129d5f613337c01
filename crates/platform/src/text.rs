//! Text rules every service applies to names a person reads.

/// Characters never accepted in names: controls, bidirectional overrides and isolates,
/// zero-width characters and byte-order marks (they disguise what a name says).
pub fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{FEFF}')
}

/// Writes `c` escaped for HTML and XML text or attribute values.
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// `text` escaped for HTML and XML.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    text.chars().for_each(|c| push_escaped(&mut out, c));
    out
}

/// Percent-encodes one URL path segment (everything but unreserved characters), e.g. an
/// instance id holding `:` or `/`, or a config label.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::escape_markup("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn controls_and_direction_changes_are_hostile() {
        for c in [
            '\u{0}', '\u{7}', '\u{202E}', '\u{2067}', '\u{200B}', '\u{FEFF}',
        ] {
            assert!(super::is_hostile(c), "{c:?}");
        }
        for c in ['a', '张', ' ', '📁', 'é'] {
            assert!(!super::is_hostile(c), "{c:?}");
        }
    }
}

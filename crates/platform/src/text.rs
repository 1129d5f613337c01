//! Text rules every service applies to names a person reads.

/// Characters never accepted in names: controls, bidirectional overrides and isolates,
/// zero-width characters and byte-order marks (they disguise what a name says).
pub fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
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

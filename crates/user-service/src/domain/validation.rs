//! What valid account data looks like. Every check returns the message a client sees.
//!
//! Free text (display names, bios) may be any language, Chinese included, but never carries
//! control characters or bidirectional overrides, which are used to disguise names.

use platform::FieldError;

pub const USERNAME_MAX: usize = 32;
pub const EMAIL_MAX: usize = 254;
pub const PASSWORD_MIN: usize = 8;
/// Argon2 takes any length; this bounds the work one request can ask for.
pub const PASSWORD_MAX: usize = 256;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const BIO_MAX: usize = 1000;
pub const URL_MAX: usize = 2048;
pub const DEVICE_FIELD_MAX: usize = 128;
pub const PREFERENCES_MAX_BYTES: usize = 16 * 1024;

/// Collects field errors so that a client learns of every bad field at once.
#[derive(Debug, Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&mut self, field: &str, result: Result<(), String>) -> &mut Self {
        if let Err(message) = result {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    pub fn finish(self) -> Result<(), platform::Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(platform::Problem::validation(self.0))
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Characters never accepted in names: controls, bidi overrides and isolates, zero-width
/// joiners, byte-order marks.
use platform::text::is_hostile;

pub fn username(s: &str) -> Result<(), String> {
    let n = chars(s);
    if !(3..=USERNAME_MAX).contains(&n) {
        return Err(format!("must be 3 to {USERNAME_MAX} characters"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("may contain only letters a-z, digits, `_`, `-` and `.`".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    if s.contains('@') {
        return Err("may not contain `@`".into());
    }
    Ok(())
}

pub fn email(s: &str) -> Result<(), String> {
    if s.len() > EMAIL_MAX {
        return Err(format!("must be at most {EMAIL_MAX} characters"));
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Err("is not an email address".into());
    };
    let ok = !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && s.chars().all(|c| !c.is_whitespace() && !is_hostile(c))
        && !local.contains('@')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err("is not an email address".into())
    }
}

pub fn password(s: &str) -> Result<(), String> {
    let n = chars(s);
    if n < PASSWORD_MIN {
        return Err(format!("must be at least {PASSWORD_MIN} characters"));
    }
    if n > PASSWORD_MAX {
        return Err(format!("must be at most {PASSWORD_MAX} characters"));
    }
    if s.chars().any(|c| c == '\0') {
        return Err("may not contain NUL characters".into());
    }
    Ok(())
}

pub fn display_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("may not be blank".into());
    }
    if chars(s) > DISPLAY_NAME_MAX {
        return Err(format!("must be at most {DISPLAY_NAME_MAX} characters"));
    }
    if s.chars().any(is_hostile) {
        return Err("may not contain control or direction-changing characters".into());
    }
    Ok(())
}

pub fn bio(s: &str) -> Result<(), String> {
    if chars(s) > BIO_MAX {
        return Err(format!("must be at most {BIO_MAX} characters"));
    }
    if s.chars().any(|c| c != '\n' && is_hostile(c)) {
        return Err("may not contain control or direction-changing characters".into());
    }
    Ok(())
}

/// Only absolute http(s) URLs: a `javascript:` or `data:` avatar would run in a browser.
pub fn avatar_url(s: &str) -> Result<(), String> {
    if s.len() > URL_MAX {
        return Err(format!("must be at most {URL_MAX} characters"));
    }
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && s.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(())
        }
        _ => Err("must be an absolute http or https URL".into()),
    }
}

pub fn device_field(s: &str) -> Result<(), String> {
    if s.is_empty() || chars(s) > DEVICE_FIELD_MAX {
        return Err(format!("must be 1 to {DEVICE_FIELD_MAX} characters"));
    }
    if s.chars().any(is_hostile) {
        return Err("may not contain control characters".into());
    }
    Ok(())
}

/// The key an account name or address is unique under: case does not make a new account.
pub fn key(s: &str) -> String {
    s.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(username("alice_01").is_ok());
        assert!(username("al").is_err());
        assert!(username("_alice").is_err());
        assert!(username("alice smith").is_err());
        assert!(username("ali<script>").is_err());
        assert!(
            username("张三丰").is_err(),
            "display names carry other scripts"
        );
        assert!(username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn emails() {
        assert!(email("alice@example.com").is_ok());
        assert!(email("王@例子.中国").is_ok());
        assert!(email("alice@example").is_err());
        assert!(email("alice example@x.com").is_err());
        assert!(email("@x.com").is_err());
        assert!(email("a@b@x.com").is_err());
        assert!(email("alice@x..com").is_err());
    }

    #[test]
    fn free_text_takes_any_script_but_not_hostile_characters() {
        assert!(display_name("张三 Zhang").is_ok());
        assert!(display_name("evil\u{202E}gnp.exe").is_err());
        assert!(display_name("a\u{0000}b").is_err());
        assert!(display_name("   ").is_err());
        assert!(bio("第一行\n second line").is_ok());
        assert!(bio("bell\u{7}").is_err());
    }

    #[test]
    fn avatar_urls_must_be_http() {
        assert!(avatar_url("https://cdn.example.com/a.png").is_ok());
        assert!(avatar_url("javascript:alert(1)").is_err());
        assert!(avatar_url("data:image/png;base64,AAAA").is_err());
        assert!(avatar_url("https:///nohost").is_err());
        assert!(avatar_url("https://x.com/a b.png").is_err());
    }

    #[test]
    fn passwords() {
        assert!(password("correct horse").is_ok());
        assert!(password("short").is_err());
        assert!(password(&"x".repeat(257)).is_err());
    }
}

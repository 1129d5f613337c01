//! Roles and scopes. A user's scopes follow from their roles; a service account's scopes
//! are its own.

use serde::{Deserialize, Serialize};

pub const PROMPTS_READ: &str = "prompts:read";
pub const PROMPTS_WRITE: &str = "prompts:write";
pub const USERS_ADMIN: &str = "users:admin";
/// Every scope a token may carry.
pub const KNOWN_SCOPES: &[&str] = &[PROMPTS_READ, PROMPTS_WRITE, USERS_ADMIN];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    fn scopes(self) -> &'static [&'static str] {
        match self {
            Role::User => &[PROMPTS_READ, PROMPTS_WRITE],
            Role::Admin => &[PROMPTS_READ, PROMPTS_WRITE, USERS_ADMIN],
        }
    }
}

/// Roles as stored: space-separated names. Unknown names are dropped.
pub fn parse_roles(stored: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = stored.split_whitespace().filter_map(Role::parse).collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Roles for storage: sorted, deduplicated, space-separated; every account is a `user`.
pub fn format_roles(roles: &[Role]) -> String {
    let mut all = roles.to_vec();
    all.push(Role::User);
    all.sort();
    all.dedup();
    all.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" ")
}

/// The scopes granted by `roles`, space-separated, in a stable order.
pub fn scopes_for(roles: &[Role]) -> String {
    KNOWN_SCOPES
        .iter()
        .filter(|s| roles.iter().any(|r| r.scopes().contains(s)))
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a requested scope list against the known scopes.
pub fn validate_scopes(scopes: &[String]) -> Result<String, String> {
    if let Some(bad) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(format!(
            "unknown scope `{bad}`; known scopes are {}",
            KNOWN_SCOPES.join(", ")
        ));
    }
    let mut sorted: Vec<&str> = KNOWN_SCOPES
        .iter()
        .filter(|k| scopes.iter().any(|s| s == *k))
        .copied()
        .collect();
    sorted.dedup();
    Ok(sorted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_get_the_admin_scope_and_users_do_not() {
        assert_eq!(scopes_for(&[Role::User]), "prompts:read prompts:write");
        assert_eq!(
            scopes_for(&parse_roles("user admin")),
            "prompts:read prompts:write users:admin"
        );
        assert_eq!(format_roles(&[Role::Admin]), "user admin");
        assert_eq!(
            parse_roles("admin bogus user admin"),
            vec![Role::User, Role::Admin]
        );
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(
            validate_scopes(&["prompts:write".into(), "prompts:read".into()]).unwrap(),
            "prompts:read prompts:write"
        );
        assert!(validate_scopes(&["root".into()]).is_err());
    }
}

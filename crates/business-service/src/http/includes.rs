//! Snippets: `{{> ref}}` includes another prompt, by its slug (in the including prompt's
//! owner's library) or by its id. Everything a template includes, and what those include, is
//! loaded here before rendering (the template engine itself does no I/O), and cycles are
//! found on prompt ids, so a prompt reached by slug and by id is still one prompt.

use std::collections::{HashMap, HashSet};

use platform::Problem;
use uuid::Uuid;

use super::AppState;
use super::caller::Caller;
use super::error::Result;
use crate::domain::template::{self, MAX_INCLUDE_DEPTH, Template};
use crate::storage::prompts::Prompt;

/// At most this many distinct prompts take part in one render.
const MAX_INCLUDED: usize = 64;
/// Following every path through the includes stops after this many steps.
const MAX_VISITS: usize = 512;

/// The source text of every prompt a template reaches, by lower-cased ref.
#[derive(Debug, Default)]
pub struct Resolved {
    pub sources: HashMap<String, String>,
}

impl Resolved {
    pub fn resolver(&self) -> impl FnMut(&str) -> Option<String> + '_ {
        move |r: &str| self.sources.get(&r.to_lowercase()).cloned()
    }
}

/// Loads what `template` includes. `root` is the prompt being saved or rendered (None for a
/// new prompt), `owner` the library its slugs refer to.
pub async fn resolve(
    state: &AppState,
    caller: &Caller,
    owner: Uuid,
    root: Option<Uuid>,
    template: &Template,
) -> Result<Resolved> {
    let mut resolved = Resolved::default();
    // (refs to follow, the library their slugs name, depth, the ids on the way here)
    let mut stack: Vec<(Vec<String>, Uuid, usize, Vec<Uuid>)> =
        vec![(template.includes(), owner, 0, root.into_iter().collect())];
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut visits = 0usize;
    while let Some((refs, owner, depth, path)) = stack.pop() {
        for r in refs {
            let prompt = find(state, caller, owner, &r)
                .await?
                .ok_or_else(|| unresolved(&r))?;
            if path.contains(&prompt.id) {
                let mut chain: Vec<String> = path.iter().map(Uuid::to_string).collect();
                chain.push(prompt.id.to_string());
                return Err(bad_template(format!("include cycle: {}", chain.join(" -> "))).into());
            }
            if depth + 1 > MAX_INCLUDE_DEPTH {
                return Err(
                    bad_template(format!("includes nest deeper than {MAX_INCLUDE_DEPTH}")).into(),
                );
            }
            resolved
                .sources
                .entry(r.to_lowercase())
                .or_insert_with(|| prompt.content.clone());
            // Every path is followed (so a cycle is found whichever way it is reached), with
            // the total work bounded.
            seen.insert(prompt.id);
            visits += 1;
            if seen.len() > MAX_INCLUDED || visits > MAX_VISITS {
                return Err(
                    bad_template(format!("more than {MAX_INCLUDED} prompts are included")).into(),
                );
            }
            let inner = template::parse(&prompt.content).map_err(|e| {
                bad_template(format!(
                    "included prompt `{r}` is not a valid template: {e}"
                ))
            })?;
            let mut next_path = path.clone();
            next_path.push(prompt.id);
            stack.push((inner.includes(), prompt.owner_id, depth + 1, next_path));
        }
    }
    Ok(resolved)
}

async fn find(state: &AppState, caller: &Caller, owner: Uuid, r: &str) -> Result<Option<Prompt>> {
    let prompt = match Uuid::parse_str(r) {
        Ok(id) => state.store.prompt(id).await?.map(|rec| rec.prompt),
        Err(_) => state.store.prompt_by_slug(owner, r).await?,
    };
    Ok(prompt.filter(|p| p.deleted_at.is_none() && caller.can_read(p)))
}

fn unresolved(r: &str) -> Problem {
    bad_template(format!(
        "`{{{{> {r}}}}}` includes a prompt that does not exist or that you may not read"
    ))
}

pub fn bad_template(message: String) -> Problem {
    Problem::invalid_field("content", message)
}

//! Beyond Spring: an application's configuration history (the commits that changed a file
//! it reads) and rollback as a new commit (history is never rewritten).
//!
//! Functions here take the locked `git2::Repository`; `Config` does the locking.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Offset as _;
use git2::{Delta, Oid, Repository};
use serde::Serialize;

/// Scanning stops after this many commits per page, so that one request for a rarely
/// changed application cannot walk a huge history; `next_cursor` carries on from there.
const SCAN_LIMIT: usize = 5_000;

pub const AUTHOR: &str = "PromptFlow config-service";
const EMAIL: &str = "config-service@promptflow.local";

/// Does `application` read the file at `path`? Any file whose stem is `application`,
/// `{application}`, `application-*` or `{application}-*` with a config extension, in the
/// root or one of `dirs` (the application's search folders; `""` is the root).
pub fn reads(application: &str, dirs: &[String], path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if !dirs.iter().any(|d| d == dir) {
        return false;
    }
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !crate::environment::EXTENSIONS.contains(&ext) {
        return false;
    }
    ["application", application].iter().any(|base| {
        stem == *base
            || stem
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|profile| !profile.is_empty())
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: String,
    pub change: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    pub id: String,
    pub short_id: String,
    pub author: String,
    pub email: String,
    pub time: String,
    pub message: String,
    pub files: Vec<FileChange>,
}

#[derive(Debug)]
pub struct Page {
    pub commits: Vec<Commit>,
    pub next_cursor: Option<String>,
}

#[derive(Debug)]
pub enum HistoryError {
    /// The cursor is not a commit of this label's history.
    UnknownCursor,
    Git(git2::Error),
}

impl From<git2::Error> for HistoryError {
    fn from(e: git2::Error) -> Self {
        Self::Git(e)
    }
}

fn diff<'r>(
    repo: &'r Repository,
    old: Option<Oid>,
    new: Oid,
) -> Result<git2::Diff<'r>, git2::Error> {
    let old = old
        .map(|o| repo.find_commit(o).and_then(|c| c.tree()))
        .transpose()?;
    let new = repo.find_commit(new)?.tree()?;
    let mut diff = repo.diff_tree_to_tree(old.as_ref(), Some(&new), None)?;
    diff.find_similar(Some(git2::DiffFindOptions::new().renames(true)))?;
    Ok(diff)
}

fn delta_paths(delta: &git2::DiffDelta<'_>) -> Vec<String> {
    let mut paths = Vec::new();
    for file in [delta.old_file(), delta.new_file()] {
        if let Some(p) = file.path().and_then(Path::to_str)
            && !paths.iter().any(|q| q == p)
        {
            paths.push(p.to_owned());
        }
    }
    paths
}

/// The files that differ between two commits, both sides of a rename; `old: None` means
/// from an empty repository.
pub fn changed_paths(
    repo: &Repository,
    old: Option<Oid>,
    new: Oid,
) -> Result<Vec<String>, git2::Error> {
    let diff = diff(repo, old, new)?;
    let mut out = BTreeSet::new();
    for delta in diff.deltas() {
        out.extend(delta_paths(&delta));
    }
    Ok(out.into_iter().collect())
}

fn rfc3339(time: git2::Time) -> String {
    // A malformed offset in a commit (possible from outside) falls back to UTC.
    let offset =
        chrono::FixedOffset::east_opt(time.offset_minutes() * 60).unwrap_or(chrono::Utc.fix());
    chrono::DateTime::from_timestamp(time.seconds(), 0)
        .map(|t| t.with_timezone(&offset).to_rfc3339())
        .unwrap_or_default()
}

/// Newest first from `head`, the commits whose change (against their first parent) touches
/// a file `reads` accepts; after `cursor` (exclusive) when given.
pub fn history(
    repo: &Repository,
    head: Oid,
    reads: &dyn Fn(&str) -> bool,
    limit: usize,
    cursor: Option<Oid>,
) -> Result<Page, HistoryError> {
    let mut walk = repo.revwalk()?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)?;
    walk.push(head)?;
    let mut skipping = cursor.is_some();
    let (mut commits, mut scanned, mut last) = (Vec::new(), 0usize, None);
    for oid in walk {
        let oid = oid?;
        if skipping {
            skipping = Some(oid) != cursor;
            continue;
        }
        if commits.len() == limit || scanned == SCAN_LIMIT {
            // More to come: carry on after the last commit looked at.
            return Ok(Page {
                commits,
                next_cursor: last.map(|o: Oid| o.to_string()),
            });
        }
        scanned += 1;
        last = Some(oid);
        let commit = repo.find_commit(oid)?;
        let parent = commit.parent_ids().next();
        let diff = diff(repo, parent, oid)?;
        let mut files = Vec::new();
        for delta in diff.deltas() {
            if !delta_paths(&delta).iter().any(|p| reads(p)) {
                continue;
            }
            let change = match delta.status() {
                Delta::Added | Delta::Copied => "added",
                Delta::Deleted => "deleted",
                Delta::Renamed => "renamed",
                _ => "modified",
            };
            let path = delta
                .new_file()
                .path()
                .or_else(|| delta.old_file().path())
                .and_then(Path::to_str)
                .unwrap_or_default()
                .to_owned();
            files.push(FileChange { path, change });
        }
        if files.is_empty() {
            continue;
        }
        let author = commit.author();
        commits.push(Commit {
            id: oid.to_string(),
            short_id: commit
                .as_object()
                .short_id()
                .ok()
                .and_then(|b| b.as_str().ok().map(str::to_owned))
                .unwrap_or_else(|| oid.to_string()[..7].to_owned()),
            author: author.name().unwrap_or_default().to_owned(),
            email: author.email().unwrap_or_default().to_owned(),
            time: rfc3339(commit.time()),
            message: commit.message().unwrap_or_default().trim_end().to_owned(),
            files,
        });
    }
    if skipping {
        return Err(HistoryError::UnknownCursor);
    }
    Ok(Page {
        commits,
        next_cursor: None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only the files the application reads.
    #[default]
    Application,
    /// Every file.
    Repository,
}

/// A rollback worked out but not yet made.
#[derive(Debug)]
pub struct Plan {
    /// `refs/heads/<branch>`.
    pub branch: String,
    /// The branch's commit the plan starts from; the commit is made only if it is still
    /// there (compare-and-swap).
    pub base: Oid,
    pub tree: Oid,
    pub restored: Vec<String>,
}

#[derive(Debug)]
pub enum RollbackError {
    /// The branch moved since the plan was made.
    Moved,
    /// A file to restore is modified in the checked-out working tree.
    Dirty(String),
    /// The remote refused the push (a protected branch, say).
    Refused(String),
    Git(git2::Error),
}

impl From<git2::Error> for RollbackError {
    fn from(e: git2::Error) -> Self {
        Self::Git(e)
    }
}

/// Every blob path of `tree` that `reads` accepts.
fn files(
    repo: &Repository,
    tree: Oid,
    reads: &dyn Fn(&str) -> bool,
) -> Result<BTreeSet<String>, git2::Error> {
    let mut out = BTreeSet::new();
    repo.find_tree(tree)?
        .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                let path = format!("{dir}{name}");
                if reads(&path) {
                    out.insert(path);
                }
            }
            git2::TreeWalkResult::Ok
        })?;
    Ok(out)
}

/// The tree of `branch` (at `base`) with the files in scope as they were at `to`.
/// `reads` is `None` for the whole repository.
pub fn plan(
    repo: &Repository,
    branch: &str,
    base: Oid,
    to: Oid,
    reads: Option<&dyn Fn(&str) -> bool>,
) -> Result<Plan, git2::Error> {
    let base_tree = repo.find_commit(base)?.tree()?;
    let to_tree = repo.find_commit(to)?.tree()?;
    let tree = match reads {
        None => to_tree.id(),
        Some(reads) => {
            let mut paths = files(repo, base_tree.id(), reads)?;
            paths.extend(files(repo, to_tree.id(), reads)?);
            let mut update = git2::build::TreeUpdateBuilder::new();
            for path in &paths {
                match to_tree.get_path(Path::new(path)) {
                    Ok(entry) => {
                        let mode = match entry.filemode() {
                            0o100755 => git2::FileMode::BlobExecutable,
                            _ => git2::FileMode::Blob,
                        };
                        update.upsert(path.as_str(), entry.id(), mode);
                    }
                    // Not there at `to`: it goes.
                    Err(_) => {
                        update.remove(path.as_str());
                    }
                }
            }
            update.create_updated(repo, &base_tree)?
        }
    };
    let new_tree = repo.find_tree(tree)?;
    let diff = repo.diff_tree_to_tree(Some(&base_tree), Some(&new_tree), None)?;
    let mut restored = BTreeSet::new();
    for delta in diff.deltas() {
        restored.extend(delta_paths(&delta));
    }
    Ok(Plan {
        branch: branch.to_owned(),
        base,
        tree,
        restored: restored.into_iter().collect(),
    })
}

/// Is `plan.branch` the branch checked out in the repository's working tree?
fn checked_out(repo: &Repository, plan: &Plan) -> bool {
    !repo.is_bare()
        && repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(|t| t == plan.branch))
            .unwrap_or(false)
}

/// Makes the plan's commit, on no branch yet. Refused when a file to restore is modified
/// in the checked-out working tree.
pub fn commit(repo: &Repository, plan: &Plan, message: &str) -> Result<Oid, RollbackError> {
    if checked_out(repo, plan) {
        // Someone's edit in the checkout must not be overwritten (nor silently reverted).
        for path in &plan.restored {
            match repo.status_file(Path::new(path)) {
                Ok(s) if s.is_empty() => {}
                Err(e) if e.code() == git2::ErrorCode::NotFound => {}
                _ => return Err(RollbackError::Dirty(path.clone())),
            }
        }
    }
    let me = git2::Signature::now(AUTHOR, EMAIL)?;
    let tree = repo.find_tree(plan.tree)?;
    let parent = repo.find_commit(plan.base)?;
    Ok(repo.commit(None, &me, &me, message, &tree, &[&parent])?)
}

/// Makes the plan's commit and moves the branch to it if it is still at `plan.base`; when
/// the branch is checked out, its working tree and index follow for the restored files.
pub fn apply(repo: &Repository, plan: &Plan, message: &str) -> Result<Oid, RollbackError> {
    let commit = commit(repo, plan, message)?;
    repo.reference_matching(&plan.branch, commit, true, plan.base, message)
        .map_err(|e| match e.code() {
            git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked => {
                RollbackError::Moved
            }
            _ => RollbackError::Git(e),
        })?;
    if checked_out(repo, plan)
        && let Err(e) = repo
            .find_tree(plan.tree)
            .and_then(|tree| sync_worktree(repo, &tree, &plan.restored))
    {
        // The commit stands; only the checkout lags (git status shows it).
        tracing::error!(error = %e.message(), "rolled back, but the working tree could not be updated");
    }
    Ok(commit)
}

/// Writes the restored files into the working tree and index, so `git status` stays clean.
fn sync_worktree(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    paths: &[String],
) -> Result<(), git2::Error> {
    let Some(workdir) = repo.workdir() else {
        return Ok(());
    };
    let mut index = repo.index()?;
    let io = |e: std::io::Error| git2::Error::from_str(&e.to_string());
    for path in paths {
        let file = workdir.join(path);
        match tree.get_path(Path::new(path)) {
            Ok(entry) => {
                let blob = repo.find_blob(entry.id())?;
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(&file, blob.content()).map_err(io)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = if entry.filemode() == 0o100755 {
                        0o755
                    } else {
                        0o644
                    };
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                        .map_err(io)?;
                }
                index.add_path(Path::new(path))?;
            }
            Err(_) => {
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
                index.remove_path(Path::new(path))?;
            }
        }
    }
    index.write()
}

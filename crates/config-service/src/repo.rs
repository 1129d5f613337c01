//! Where the configuration files are: a git repository (label = branch, tag or commit id;
//! `version` = the commit served) or a plain folder (no labels, no version).
//!
//! Files are read from git's objects, never from a working tree, so any number of labels
//! are served at once and a half-edited file in a checkout is never seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a label could not be served.
#[derive(Debug)]
pub enum Error {
    /// No branch, tag or commit by that name.
    UnknownLabel(String),
    /// The repository cannot be read.
    Unreadable(String),
}

/// The files of one label, as served.
pub struct Snapshot<'r> {
    pub label: Option<String>,
    pub version: Option<String>,
    tree: Tree<'r>,
}

enum Tree<'r> {
    Git(&'r Git, git2::Oid),
    Folder(&'r Path),
}

pub enum Backend {
    Git(Git),
    Folder(PathBuf),
}

pub struct Git {
    repo: Mutex<git2::Repository>,
    default_label: String,
}

fn lock(repo: &Mutex<git2::Repository>) -> std::sync::MutexGuard<'_, git2::Repository> {
    repo.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Backend {
    pub fn git(path: &Path, default_label: &str) -> Result<Self, Error> {
        let repo = git2::Repository::open(path)
            .map_err(|e| Error::Unreadable(format!("{}: {}", path.display(), e.message())))?;
        Ok(Self::Git(Git {
            repo: Mutex::new(repo),
            default_label: default_label.to_owned(),
        }))
    }

    /// Where property source names start (`file:<path>`, as Spring names local ones).
    pub fn location(&self) -> String {
        match self {
            Self::Git(g) => {
                let repo = lock(&g.repo);
                let dir = repo.workdir().unwrap_or_else(|| repo.path());
                format!("file:{}", dir.display())
            }
            Self::Folder(p) => format!("file:{}", p.display()),
        }
    }

    /// The files of `label` (the default label when `None`).
    pub fn snapshot(&self, label: Option<&str>) -> Result<Snapshot<'_>, Error> {
        match self {
            Self::Folder(path) => Ok(Snapshot {
                label: label.map(str::to_owned),
                version: None,
                tree: Tree::Folder(path),
            }),
            Self::Git(git) => {
                let wanted = label.unwrap_or(&git.default_label);
                let (oid, name) = git.resolve(wanted)?;
                Ok(Snapshot {
                    label: Some(name),
                    version: Some(oid.to_string()),
                    tree: Tree::Git(git, oid),
                })
            }
        }
    }

    /// For readiness: the repository opens and its default label resolves.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Folder(p) if p.is_dir() => Ok(()),
            Self::Folder(p) => Err(format!("{} is not a folder", p.display())),
            Self::Git(g) => g
                .resolve(&g.default_label)
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
        }
    }
}

impl Backend {
    pub fn as_git(&self) -> Option<&Git> {
        match self {
            Self::Git(g) => Some(g),
            Self::Folder(_) => None,
        }
    }
}

impl Git {
    /// Runs `f` with the repository (locked: git2 handles are not shared between threads).
    pub fn with<T>(&self, f: impl FnOnce(&git2::Repository) -> T) -> T {
        f(&lock(&self.repo))
    }

    pub fn default_label(&self) -> &str {
        &self.default_label
    }

    /// The label when none is given: `main` falls back to `master` as in `resolve`.
    pub fn label_or_default<'a>(&'a self, label: Option<&'a str>) -> &'a str {
        label.unwrap_or(&self.default_label)
    }

    /// Every branch, tag and fetched branch as `refs/...` name → commit. Cheap: refs only.
    pub fn refs(&self) -> Result<BTreeMap<String, git2::Oid>, Error> {
        let repo = lock(&self.repo);
        let mut out = BTreeMap::new();
        for glob in ["refs/heads/*", "refs/tags/*", "refs/remotes/origin/*"] {
            let refs = repo
                .references_glob(glob)
                .map_err(|e| Error::Unreadable(e.message().to_owned()))?;
            for r in refs.flatten() {
                // `refs/remotes/origin/HEAD` only points at another ref.
                if r.kind() == Some(git2::ReferenceType::Symbolic) {
                    continue;
                }
                if let (Ok(name), Ok(commit)) = (r.name(), r.peel_to_commit()) {
                    out.insert(name.to_owned(), commit.id());
                }
            }
        }
        Ok(out)
    }

    /// The files that differ between two commits (both sides of a rename); `None` = from
    /// nothing.
    pub fn changed(&self, old: Option<git2::Oid>, new: git2::Oid) -> Result<Vec<String>, Error> {
        let repo = lock(&self.repo);
        crate::history::changed_paths(&repo, old, new)
            .map_err(|e| Error::Unreadable(e.message().to_owned()))
    }

    /// A branch, then a tag, then a commit id; `main` and `master` stand in for each other
    /// (clients that send no label ask for `master`).
    pub fn resolve(&self, label: &str) -> Result<(git2::Oid, String), Error> {
        let repo = lock(&self.repo);
        let tries = spellings(label);
        resolve_in(&repo, label, &tries)
    }
}

/// The label's name under `refs/heads/`, `refs/tags/`, `refs/remotes/origin/`.
pub fn label_of(full: &str) -> &str {
    ["refs/heads/", "refs/tags/", "refs/remotes/origin/"]
        .iter()
        .find_map(|p| full.strip_prefix(p))
        .unwrap_or(full)
}

/// The names `label` may stand for: `main` and `master` stand in for each other.
pub fn spellings(label: &str) -> Vec<String> {
    let mut tries = vec![label.to_owned()];
    match label {
        "main" => tries.push("master".into()),
        "master" => tries.push("main".into()),
        _ => {}
    }
    tries
}

fn resolve_in(
    repo: &git2::Repository,
    label: &str,
    tries: &[String],
) -> Result<(git2::Oid, String), Error> {
    for name in tries {
        for full in [
            format!("refs/heads/{name}"),
            format!("refs/tags/{name}"),
            format!("refs/remotes/origin/{name}"),
        ] {
            if !git2::Reference::is_valid_name(&full) {
                continue;
            }
            if let Ok(r) = repo.find_reference(&full)
                && let Ok(commit) = r.peel_to_commit()
            {
                return Ok((commit.id(), label.to_owned()));
            }
        }
    }
    commit_id(repo, label)
        .map(|oid| (oid, label.to_owned()))
        .ok_or_else(|| Error::UnknownLabel(label.to_owned()))
}

/// A commit id, whole or abbreviated (hex only: no revision syntax from outside).
pub fn commit_id(repo: &git2::Repository, id: &str) -> Option<git2::Oid> {
    if !(4..=40).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let object = repo.revparse_single(id).ok()?;
    object.peel_to_commit().ok().map(|c| c.id())
}

impl Git {
    fn read(&self, commit: git2::Oid, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let repo = lock(&self.repo);
        let unreadable = |e: git2::Error| Error::Unreadable(e.message().to_owned());
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(unreadable)?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return Ok(None);
        }
        let blob = repo.find_blob(entry.id()).map_err(unreadable)?;
        Ok(Some(blob.content().to_vec()))
    }
}

impl Snapshot<'_> {
    /// The file at `path` (relative, `/`-separated), if there is one.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        if path.split('/').any(|part| part == ".." || part.is_empty()) {
            return Ok(None);
        }
        match &self.tree {
            Tree::Git(git, oid) => git.read(*oid, path),
            Tree::Folder(root) => match std::fs::read(root.join(path)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Ok(None),
                Err(e) => Err(Error::Unreadable(e.to_string())),
            },
        }
    }
}

/// The files a new repository starts with: PromptFlow's own shared settings, ready to edit
/// and commit.
const STARTER: &[(&str, &str)] = &[(
    "application.yml",
    "# Settings every PromptFlow service reads from config-service (Spring Cloud Config\n\
     # layout: application.yml for all, <service>.yml and <service>-<profile>.yml for one).\n\
     # Edit, then commit: the commit id is the `version` config-service serves.\n\
     log:\n  level: info\n",
)];

/// Makes `path` a git repository on branch `branch` holding the starter files, when it does
/// not exist yet. An existing folder is never touched.
pub fn create_if_missing(path: &Path, branch: &str) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(path)?;
    let mut options = git2::RepositoryInitOptions::new();
    options.initial_head(branch);
    let repo = git2::Repository::init_opts(path, &options)?;
    let mut index = repo.index()?;
    for (name, text) in STARTER {
        std::fs::write(path.join(name), text)?;
        index.add_path(Path::new(name))?;
    }
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let me = git2::Signature::now("PromptFlow", "promptflow@localhost")?;
    repo.commit(
        Some("HEAD"),
        &me,
        &me,
        "PromptFlow's starter settings",
        &tree,
        &[],
    )?;
    Ok(true)
}

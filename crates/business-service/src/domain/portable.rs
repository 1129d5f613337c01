//! Import and export formats of a user's prompt library: PromptFlow JSON and YAML,
//! a zip of Markdown files with YAML front matter, a single Markdown file, and the
//! JSON written by the original Kotlin version.
//!
//! Pure and I/O-free: bytes in, values or bytes out. Imports never trust the upload:
//! sizes, nesting and YAML alias expansion are bounded, zip entry names are never used
//! as paths, and a bad item is refused on its own so the rest of the upload imports.
//!
//! Markdown file names (export): the title is kept as it is, Unicode letters, digits
//! and spaces included, except that
//! - any whitespace run becomes one space;
//! - ASCII other than letters, digits and `-_.,()[]{}'&+!@#=~;` (so `/ \ : * ? " < > |`
//!   and control characters), invisible or bidi formatting characters, private-use
//!   characters and slash look-alikes become `_`; a run of `_` (or of spaces)
//!   shrinks to one;
//! - leading and trailing spaces and dots are dropped (hidden files, `.`/`..`, Windows);
//! - the name is cut to 150 bytes of UTF-8 (whole characters);
//! - an empty result becomes `untitled` (`folder` for a directory);
//! - a Windows device name (`CON`, `nul.txt`, `COM1`…) gets a leading `_`;
//! - names are unique per directory ignoring case: ` (2)`, ` (3)`… before `.md`.
//!
//! Folder directories follow the same rule; `library.yaml` maps every directory whose
//! name had to change back to its folder path, so a re-import restores folders exactly.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{self, Cursor, Read, Write};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

/// The `format` of a PromptFlow library document.
pub const FORMAT: &str = "promptflow-library";
/// The library `version` this module writes.
pub const VERSION: u32 = 1;

/// Most prompts (and, separately, folders) one upload may hold.
pub const MAX_ITEMS: usize = 10_000;
/// Zip-bomb guard: the most bytes a zip upload may unpack to, counted as actually
/// decompressed.
pub const MAX_UNZIPPED_BYTES: u64 = 64 * 1024 * 1024;
/// Largest JSON document parsed as a whole.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// Largest YAML or Markdown document (and zip entry): the YAML parser holds every
/// event of a document in memory, up to ~70 bytes per input byte for "[a,a,a,…]", so
/// YAML gets a tighter bound than JSON (large libraries fit in JSON or a zip).
pub const MAX_YAML_BYTES: usize = 8 * 1024 * 1024;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONTENT_CHARS: usize = 100_000;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 64;

/// Largest single zip entry read; any valid prompt file is far smaller.
const MAX_ENTRY_BYTES: u64 = MAX_YAML_BYTES as u64;
/// Deepest nesting accepted; real documents need about five levels.
const MAX_NESTING: usize = 32;
/// Most values one document may produce (aliases included); ~100 per possible item.
const MAX_NODES: usize = 1_000_000;
/// Errors listed per refused item; the rest are only counted.
const MAX_ERRORS_SHOWN: usize = 8;
const MANIFEST: &str = "library.yaml";
/// Leaves room for " (12345).md" under the usual 255-byte file-name limit.
const MAX_NAME_BYTES: usize = 150;
const VISIBILITIES: [&str; 3] = ["private", "unlisted", "public"];
/// Keys only the Kotlin version writes; any of them marks an upload as Kotlin JSON.
const KOTLIN_KEYS: [&str; 9] = [
    "isPublic",
    "userId",
    "usageCount",
    "isFavorite",
    "folderId",
    "categoryId",
    "createdAt",
    "updatedAt",
    "lastUsedAt",
];

fn default_visibility() -> String {
    "private".to_owned()
}

fn default_status() -> String {
    "active".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortablePrompt {
    /// PromptFlow UUID when exported by PromptFlow; anything (or none) on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub title: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Folder path from the library root, segments joined by "/", e.g. "Work/Emails";
    /// None = no folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// "private" | "unlisted" | "public"
    #[serde(default = "default_visibility")]
    pub visibility: String,
    #[serde(default)]
    pub favorite: bool,
    /// "active" | "archived"
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub usage_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortableFolder {
    /// Segments joined by "/", e.g. "Work/Emails".
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default)]
    pub position: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Library {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    #[serde(default)]
    pub folders: Vec<PortableFolder>,
    #[serde(default)]
    pub prompts: Vec<PortablePrompt>,
}

impl Library {
    pub fn new(
        exported_at: DateTime<Utc>,
        folders: Vec<PortableFolder>,
        prompts: Vec<PortablePrompt>,
    ) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            exported_at,
            folders,
            prompts,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("cannot write the zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("cannot write the zip archive: {0}")]
    Io(#[from] io::Error),
}

// ---------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------

/// Pretty JSON of the whole library.
pub fn to_json(lib: &Library) -> Result<Vec<u8>, ExportError> {
    let mut out = serde_json::to_vec_pretty(lib)?;
    out.push(b'\n');
    Ok(out)
}

/// YAML of the whole library.
pub fn to_yaml(lib: &Library) -> Result<Vec<u8>, ExportError> {
    Ok(serde_norway::to_string(lib)?.into_bytes())
}

/// A zip with `library.yaml` (format, version, exported_at, folders and the renamed
/// directories) at the root and one Markdown file per prompt under its folder's
/// directory; see the module docs for the naming rule.
pub fn to_markdown_zip(lib: &Library) -> Result<Vec<u8>, ExportError> {
    let layout = Layout::plan(lib);
    let mut options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    if let Some(time) = zip_time(lib.exported_at) {
        options = options.last_modified_time(time);
    }
    let manifest = ManifestOut {
        format: &lib.format,
        version: lib.version,
        exported_at: lib.exported_at,
        folders: &lib.folders,
        directories: &layout.renamed,
    };

    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(MANIFEST, options)?;
    zip.write_all(serde_norway::to_string(&manifest)?.as_bytes())?;
    for dir in &layout.dirs {
        zip.add_directory(format!("{dir}/"), options.unix_permissions(0o755))?;
    }
    for (prompt, path) in lib.prompts.iter().zip(&layout.files) {
        zip.start_file(path.as_str(), options)?;
        zip.write_all(markdown_file(prompt)?.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}

#[derive(Serialize)]
struct ManifestOut<'a> {
    format: &'a str,
    version: u32,
    exported_at: DateTime<Utc>,
    folders: &'a [PortableFolder],
    /// Directory in the archive -> folder path, where the two differ.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    directories: &'a BTreeMap<String, String>,
}

/// Every field but content and folder: the body is the content, the directory the folder.
#[derive(Serialize)]
struct FrontMatter<'a> {
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: &'a Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slug: Option<&'a str>,
    visibility: &'a str,
    favorite: bool,
    status: &'a str,
    usage_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<DateTime<Utc>>,
}

fn markdown_file(p: &PortablePrompt) -> Result<String, ExportError> {
    let yaml = serde_norway::to_string(&FrontMatter {
        title: &p.title,
        id: p.id.as_deref(),
        description: p.description.as_deref(),
        tags: &p.tags,
        category: p.category.as_deref(),
        slug: p.slug.as_deref(),
        visibility: &p.visibility,
        favorite: p.favorite,
        status: &p.status,
        usage_count: p.usage_count,
        created_at: p.created_at,
        updated_at: p.updated_at,
    })?;
    let mut out = String::with_capacity(yaml.len() + p.content.len() + 10);
    out.push_str("---\n");
    out.push_str(&yaml);
    if !yaml.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("---\n\n");
    out.push_str(&p.content);
    Ok(out)
}

fn zip_time(t: DateTime<Utc>) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        u8::try_from(t.month()).ok()?,
        u8::try_from(t.day()).ok()?,
        u8::try_from(t.hour()).ok()?,
        u8::try_from(t.minute()).ok()?,
        u8::try_from(t.second().min(59)).ok()?,
    )
    .ok()
}

/// Where each folder and prompt goes in the archive.
struct Layout {
    /// Directory paths, parents first.
    dirs: Vec<String>,
    /// One path per prompt, in the library's order.
    files: Vec<String>,
    /// Directory -> folder path, where they differ.
    renamed: BTreeMap<String, String>,
}

/// Names used in one directory, compared without case: zips are unpacked on
/// case-insensitive file systems too.
#[derive(Default)]
struct DirNames {
    taken: HashSet<String>,
    /// Next suffix to try per stem, so 10,000 equal titles stay linear.
    next: HashMap<String, u64>,
}

impl DirNames {
    fn claim(&mut self, stem: &str, ext: &str) -> String {
        let key = stem.to_lowercase();
        let mut n = self.next.get(&key).copied().unwrap_or(1);
        let mut name = if n == 1 {
            format!("{stem}{ext}")
        } else {
            format!("{stem} ({n}){ext}")
        };
        while self.taken.contains(&name.to_lowercase()) {
            n += 1;
            name = format!("{stem} ({n}){ext}");
        }
        self.next.insert(key, n + 1);
        self.taken.insert(name.to_lowercase());
        name
    }
}

impl Layout {
    fn plan(lib: &Library) -> Self {
        // Every declared or used folder and all its ancestors; sorted, so parents
        // (strict prefixes) come before their children.
        let mut paths = BTreeSet::new();
        let declared = lib.folders.iter().map(|f| f.path.as_str());
        let used = lib.prompts.iter().filter_map(|p| p.folder.as_deref());
        for path in declared.chain(used).filter_map(normalize_folder_path) {
            let mut end = 0;
            while let Some(slash) = path[end..].find('/') {
                paths.insert(path[..end + slash].to_owned());
                end += slash + 1;
            }
            paths.insert(path);
        }

        let mut names: HashMap<String, DirNames> = HashMap::new();
        names
            .entry(String::new())
            .or_default()
            .taken
            .insert(MANIFEST.to_owned());
        let mut dir_of: HashMap<&str, String> = HashMap::new();
        let mut dirs = Vec::with_capacity(paths.len());
        let mut renamed = BTreeMap::new();
        for path in &paths {
            let (parent, leaf) = path.rsplit_once('/').unwrap_or(("", path));
            let parent_dir = dir_of.get(parent).cloned().unwrap_or_default();
            let name = names
                .entry(parent_dir.clone())
                .or_default()
                .claim(&safe_name(leaf, "folder"), "");
            let dir = join_path(&parent_dir, &name);
            if dir != *path {
                renamed.insert(dir.clone(), path.clone());
            }
            dir_of.insert(path, dir.clone());
            dirs.push(dir);
        }

        let files = lib
            .prompts
            .iter()
            .map(|p| {
                let folder = p.folder.as_deref().and_then(normalize_folder_path);
                let dir = folder
                    .and_then(|f| dir_of.get(f.as_str()).cloned())
                    .unwrap_or_default();
                let name = names
                    .entry(dir.clone())
                    .or_default()
                    .claim(&safe_name(&p.title, "untitled"), ".md");
                join_path(&dir, &name)
            })
            .collect();
        Self {
            dirs,
            files,
            renamed,
        }
    }
}

fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// One file or directory name from a title or folder name; see the module docs.
fn safe_name(raw: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_BYTES + 4));
    for c in raw.chars() {
        let mapped = if c.is_whitespace() {
            ' '
        } else if name_char_allowed(c) {
            c
        } else {
            '_'
        };
        // One space or `_` per run keeps names readable.
        if (mapped == ' ' || mapped == '_') && out.ends_with(mapped) {
            continue;
        }
        if out.len() + mapped.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(mapped);
    }
    let trimmed = out.trim_matches(|c| c == ' ' || c == '.');
    if trimmed.is_empty() {
        return fallback.to_owned();
    }
    if is_windows_device_name(trimmed) {
        return format!("_{trimmed}");
    }
    trimmed.to_owned()
}

fn name_char_allowed(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || "-_.,()[]{}'&+!@#=~;".contains(c);
    }
    !(c.is_control()
        || matches!(c,
            '\u{00AD}'                       // soft hyphen
            | '\u{200B}'..='\u{200F}'        // zero-width, LRM/RLM
            | '\u{202A}'..='\u{202E}'        // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}'        // word joiner, bidi isolates
            | '\u{FEFF}'                     // BOM
            | '\u{FFF0}'..='\u{FFFF}'        // specials, noncharacters
            | '\u{FDD0}'..='\u{FDEF}'        // noncharacters
            | '\u{E000}'..='\u{F8FF}'        // private use
            | '\u{E0000}'..='\u{E007F}'      // tag characters
            | '\u{F0000}'..='\u{10FFFF}'     // supplementary private use
            | '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{29F8}' | '\u{29F9}'
            | '\u{FF0F}' | '\u{FF3C}'        // slash and backslash look-alikes
        ))
}

/// Windows refuses these as names, whatever follows the first dot.
fn is_windows_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            upper.len() == 4
                && (upper.starts_with("COM") || upper.starts_with("LPT"))
                && upper.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        }
    }
}

/// "Work / Emails/" -> "Work/Emails"; None when nothing is left.
fn normalize_folder_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path
        .split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!segments.is_empty()).then(|| segments.join("/"))
}

// ---------------------------------------------------------------------------
// Import: public shapes
// ---------------------------------------------------------------------------

// Items are built once and moved into a Vec; boxing every prompt would cost an
// allocation each and change the agreed shape.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Prompt(PortablePrompt),
    /// `index` is the item's 0-based position in the upload (for a zip, among its
    /// Markdown files in archive order).
    Refused {
        index: usize,
        title: Option<String>,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Folders the upload declares (a library's `folders`, a zip's `library.yaml`).
    /// Folders only implied by prompts' paths are not listed: the importer creates them.
    pub folders: Vec<PortableFolder>,
    pub items: Vec<Item>,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    PromptflowJson,
    PromptflowYaml,
    MarkdownZip,
    Markdown,
    KotlinJson,
}

/// Failures of a whole upload; a bad item is an [`Item::Refused`] instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the upload is empty")]
    Empty,
    #[error("the upload is not UTF-8 text")]
    NotUtf8,
    #[error("the upload is not valid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    #[error("the upload is not a readable zip archive: {0}")]
    Zip(String),
    #[error("the upload is not a prompt library: {0}")]
    Unrecognized(String),
    #[error("library.yaml in the archive is invalid: {0}")]
    Manifest(String),
    #[error("the upload is larger than {limit} bytes (unpacked)")]
    TooLarge { limit: u64 },
    #[error("the upload is too complex: {0}")]
    TooComplex(String),
    #[error("the upload has {found} {what}; at most {limit} can be imported at once")]
    TooManyItems {
        what: &'static str,
        found: usize,
        limit: usize,
    },
}

// ---------------------------------------------------------------------------
// Import: dispatch
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zip,
    Json,
    Yaml,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Json,
    Yaml,
}

impl Syntax {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML",
        }
    }

    fn limit(self) -> usize {
        match self {
            Self::Json => MAX_DOCUMENT_BYTES,
            Self::Yaml => MAX_YAML_BYTES,
        }
    }
}

/// Reads an upload. `content_type` is the request's media type; when it is empty or
/// unknown the bytes are sniffed: zip magic, a leading `{` or `[` (JSON), a leading
/// `---` closed by another `---` line (a Markdown file with front matter), else YAML.
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Parsed, ImportError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty);
    }
    match detect(bytes, text, content_type) {
        Kind::Zip => parse_zip(bytes),
        Kind::Json => parse_document(text, Syntax::Json),
        Kind::Yaml => parse_document(text, Syntax::Yaml),
        Kind::Markdown => parse_markdown(text),
    }
}

fn detect(raw: &[u8], text: &[u8], content_type: &str) -> Kind {
    // A zip is never valid text, so its magic wins over any declared type.
    if raw.starts_with(b"PK\x03\x04") || raw.starts_with(b"PK\x05\x06") {
        return Kind::Zip;
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/zip"
        | "application/x-zip-compressed"
        | "application/x-zip"
        | "multipart/x-zip" => Kind::Zip,
        "application/json" | "text/json" => Kind::Json,
        m if m.ends_with("+json") => Kind::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Kind::Yaml,
        m if m.ends_with("+yaml") => Kind::Yaml,
        "text/markdown" | "text/x-markdown" => Kind::Markdown,
        _ => sniff(text),
    }
}

fn sniff(text: &[u8]) -> Kind {
    match text.trim_ascii_start().first() {
        Some(b'{' | b'[') => Kind::Json,
        _ if text.starts_with(b"---")
            && std::str::from_utf8(text).is_ok_and(|t| split_front_matter(t).is_some()) =>
        {
            Kind::Markdown
        }
        _ => Kind::Yaml,
    }
}

/// What the root of a JSON or YAML document holds.
struct Shape {
    items: Vec<Value>,
    folders: Vec<PortableFolder>,
    kotlin: bool,
}

fn parse_document(bytes: &[u8], syntax: Syntax) -> Result<Parsed, ImportError> {
    if bytes.len() > syntax.limit() {
        return Err(too_large(syntax.limit()));
    }
    let root = parse_tree(bytes, syntax)?;
    let shape = classify(root)?;
    if shape.items.len() > MAX_ITEMS {
        return Err(ImportError::TooManyItems {
            what: "prompts",
            found: shape.items.len(),
            limit: MAX_ITEMS,
        });
    }
    let lenient = syntax == Syntax::Yaml;
    let source = match syntax {
        Syntax::Json if shape.kotlin => Source::KotlinJson,
        Syntax::Json => Source::PromptflowJson,
        Syntax::Yaml => Source::PromptflowYaml,
    };
    let items = shape
        .items
        .iter()
        .enumerate()
        .map(|(index, value)| prompt_item(index, value, lenient))
        .collect();
    Ok(Parsed {
        folders: shape.folders,
        items,
        source,
    })
}

fn too_large(limit: usize) -> ImportError {
    ImportError::TooLarge {
        limit: u64::try_from(limit).unwrap_or(u64::MAX),
    }
}

fn classify(root: Value) -> Result<Shape, ImportError> {
    let mut map = match root {
        Value::Array(items) => {
            let kotlin = looks_kotlin(&items);
            return Ok(Shape {
                items,
                folders: Vec::new(),
                kotlin,
            });
        }
        Value::Object(map) => map,
        other => {
            return Err(ImportError::Unrecognized(format!(
                "expected a library or a list of prompts, found {}",
                kind_of(&other)
            )));
        }
    };

    if let Some(format) = map.get("format") {
        if format.as_str() != Some(FORMAT) {
            return Err(ImportError::Unrecognized(format!(
                "format {} is not {FORMAT:?}",
                shown_value(format)
            )));
        }
        let folders = folders_from(map.get("folders"))?;
        let items = item_list(map.remove("prompts"), "prompts")?;
        return Ok(Shape {
            items,
            folders,
            kotlin: false,
        });
    }

    // The Kotlin API wrapper: {"success": …, "data": [...] | {"content": [...]} | {prompt}}.
    if map.contains_key("success") || map.contains_key("data") {
        let items = match map.remove("data") {
            Some(Value::Array(items)) => items,
            // A Spring page, or one prompt on its own.
            Some(Value::Object(mut page)) => match page.remove("content") {
                Some(Value::Array(items)) => items,
                Some(content) => {
                    page.insert("content".to_owned(), content);
                    vec![Value::Object(page)]
                }
                None => vec![Value::Object(page)],
            },
            Some(other) if !other.is_null() => {
                return Err(ImportError::Unrecognized(format!(
                    "data: expected a list of prompts, found {}",
                    kind_of(&other)
                )));
            }
            _ => {
                let why = map
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or(String::new(), |m| format!(" ({})", shown(m)));
                return Err(ImportError::Unrecognized(format!(
                    "the response wrapper holds no data{why}"
                )));
            }
        };
        return Ok(Shape {
            items,
            folders: Vec::new(),
            kotlin: true,
        });
    }

    if map.contains_key("prompts") {
        let items = item_list(map.remove("prompts"), "prompts")?;
        let kotlin = looks_kotlin(&items);
        let folders = folders_from(map.get("folders"))?;
        return Ok(Shape {
            items,
            folders,
            kotlin,
        });
    }

    // A Spring page saved without the wrapper.
    if let Some(Value::Array(_)) = map.get("content") {
        let items = item_list(map.remove("content"), "content")?;
        return Ok(Shape {
            items,
            folders: Vec::new(),
            kotlin: true,
        });
    }

    // A single prompt on its own.
    if map.contains_key("title") || map.contains_key("content") {
        let kotlin = KOTLIN_KEYS.iter().any(|k| map.contains_key(*k));
        return Ok(Shape {
            items: vec![Value::Object(map)],
            folders: Vec::new(),
            kotlin,
        });
    }

    Err(ImportError::Unrecognized(
        "expected a library, a list of prompts or a Kotlin export".to_owned(),
    ))
}

fn item_list(value: Option<Value>, field: &str) -> Result<Vec<Value>, ImportError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(ImportError::Unrecognized(format!(
            "{field}: expected a list, found {}",
            kind_of(&other)
        ))),
    }
}

fn looks_kotlin(items: &[Value]) -> bool {
    items.iter().any(|item| {
        item.as_object()
            .is_some_and(|m| KOTLIN_KEYS.iter().any(|k| m.contains_key(*k)))
    })
}

/// Declared folders; entries without a usable path are skipped, odd attributes
/// fall back to their defaults (folders carry no user content worth refusing over).
fn folders_from(value: Option<&Value>) -> Result<Vec<PortableFolder>, ImportError> {
    let entries = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(ImportError::Unrecognized(format!(
                "folders: expected a list, found {}",
                kind_of(other)
            )));
        }
    };
    if entries.len() > MAX_ITEMS {
        return Err(ImportError::TooManyItems {
            what: "folders",
            found: entries.len(),
            limit: MAX_ITEMS,
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for entry in entries {
        let Some(m) = entry.as_object() else { continue };
        let Some(path) = m
            .get("path")
            .and_then(Value::as_str)
            .and_then(normalize_folder_path)
        else {
            continue;
        };
        if !seen.insert(path.clone()) {
            continue;
        }
        let text = |key: &str| m.get(key).and_then(Value::as_str).map(str::to_owned);
        out.push(PortableFolder {
            path,
            color: text("color"),
            icon: text("icon"),
            position: m
                .get("position")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Import: Markdown
// ---------------------------------------------------------------------------

fn parse_markdown(bytes: &[u8]) -> Result<Parsed, ImportError> {
    if bytes.len() > MAX_YAML_BYTES {
        return Err(too_large(MAX_YAML_BYTES));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ImportError::NotUtf8)?;
    let body = split_front_matter(text).map_or(text, |(_, body)| body);
    let heading = first_heading(body);
    Ok(Parsed {
        folders: Vec::new(),
        items: vec![markdown_item(0, text, heading, FolderFrom::FrontMatter)],
        source: Source::Markdown,
    })
}

enum FolderFrom {
    /// A zip entry's directory decides; the front matter's `folder` is ignored.
    Directory(Option<String>),
    FrontMatter,
}

/// Splits "---\n<yaml>---\n\n<body>" into the YAML and the body. The body starts
/// after the closing line and one blank line, if there is one; None when the text does
/// not open with `---` or never closes it.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("---")?;
    let first_break = rest.find('\n')?;
    if !rest[..first_break].trim().is_empty() {
        return None;
    }
    let yaml_start = 3 + first_break + 1;
    let mut line_start = yaml_start;
    while line_start <= text.len() {
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |i| line_start + i);
        let line = text[line_start..line_end].trim_end();
        if line == "---" || line == "..." {
            let after = (line_end + 1).min(text.len());
            let body = &text[after..];
            let body = body
                .strip_prefix("\r\n")
                .or_else(|| body.strip_prefix('\n'))
                .unwrap_or(body);
            return Some((&text[yaml_start..line_start], body));
        }
        if line_end >= text.len() {
            break;
        }
        line_start = line_end + 1;
    }
    None
}

/// The text of a leading "# Title" line: a title for a lone Markdown file.
fn first_heading(body: &str) -> Option<&str> {
    let line = body.lines().find(|l| !l.trim().is_empty())?;
    let title = line.strip_prefix("# ")?.trim();
    (!title.is_empty()).then_some(title)
}

/// A prompt from one Markdown text; `fallback_title` stands in when the front
/// matter has none.
fn markdown_item(
    index: usize,
    text: &str,
    fallback_title: Option<&str>,
    folder: FolderFrom,
) -> Item {
    let refuse = |error: String| Item::Refused {
        index,
        title: fallback_title.map(str::to_owned),
        error,
    };
    let (front, body) = match split_front_matter(text) {
        Some((front, body)) => (Some(front), body),
        None => (None, text),
    };
    let mut fields = match front.map(|f| parse_tree(f.as_bytes(), Syntax::Yaml)) {
        None | Some(Ok(Value::Null)) => Map::new(),
        Some(Ok(Value::Object(map))) => map,
        Some(Ok(other)) => {
            return refuse(format!(
                "front matter: expected a mapping of fields, found {}",
                kind_of(&other)
            ));
        }
        Some(Err(e)) => return refuse(format!("front matter: {e}")),
    };
    fields.insert("content".to_owned(), Value::String(body.to_owned()));
    if let FolderFrom::Directory(dir) = folder {
        fields.insert("folder".to_owned(), dir.map_or(Value::Null, Value::String));
    }
    if let Some(title) = fallback_title
        && fields.get("title").is_none_or(Value::is_null)
    {
        fields.insert("title".to_owned(), Value::String(title.to_owned()));
    }
    prompt_item(index, &Value::Object(fields), true)
}

// ---------------------------------------------------------------------------
// Import: zip
// ---------------------------------------------------------------------------

/// A Markdown entry of the archive, in archive order.
enum Entry {
    File {
        zip_index: usize,
        name: String,
        parts: Vec<String>,
    },
    Refused {
        name: String,
        error: &'static str,
    },
}

fn parse_zip(bytes: &[u8]) -> Result<Parsed, ImportError> {
    let mut archive =
        ZipArchive::new(Cursor::new(bytes)).map_err(|e| ImportError::Zip(e.to_string()))?;

    let mut entries = Vec::new();
    let mut manifests: Vec<(usize, Vec<String>)> = Vec::new();
    let mut declared: u64 = 0;
    for zip_index in 0..archive.len() {
        let Ok(meta) = archive.by_index_data(zip_index) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let name = meta.name().map_or_else(
            |_| String::from_utf8_lossy(meta.name_raw()).into_owned(),
            |n| n.into_owned(),
        );
        let lower = name.to_lowercase();
        let is_markdown = lower.ends_with(".md") || lower.ends_with(".markdown");
        let Some(parts) = safe_parts(&name) else {
            if is_markdown {
                entries.push(Entry::Refused {
                    name,
                    error: "unsafe path in the archive (absolute or climbing out with ..)",
                });
            }
            continue;
        };
        // Hidden files and macOS resource forks are not the user's prompts.
        if parts.iter().any(|p| p.starts_with('.') || p == "__MACOSX") {
            continue;
        }
        let is_manifest = parts
            .last()
            .is_some_and(|p| p.eq_ignore_ascii_case(MANIFEST));
        if is_manifest {
            declared = declared.saturating_add(meta.size());
            manifests.push((zip_index, parts));
        } else if is_markdown {
            if meta.is_symlink() {
                entries.push(Entry::Refused {
                    name,
                    error: "a symbolic link, not a file",
                });
            } else {
                declared = declared.saturating_add(meta.size());
                entries.push(Entry::File {
                    zip_index,
                    name,
                    parts,
                });
            }
        }
    }
    if entries.len() > MAX_ITEMS {
        return Err(ImportError::TooManyItems {
            what: "Markdown files",
            found: entries.len(),
            limit: MAX_ITEMS,
        });
    }
    // Declared sizes only fail an honest big archive early; the actual bytes are
    // counted while reading.
    if declared > MAX_UNZIPPED_BYTES {
        return Err(ImportError::TooLarge {
            limit: MAX_UNZIPPED_BYTES,
        });
    }
    let mut budget = MAX_UNZIPPED_BYTES;

    // The manifest sits at the root, or in the one top-level directory that holds
    // everything (an archive of the folder rather than of its contents).
    let root_manifest = manifests.iter().find(|(_, p)| p.len() == 1);
    let nested_manifest = match manifests.as_slice() {
        [(i, p)] if p.len() == 2 => {
            let top = &p[0];
            let all_inside = entries.iter().all(|e| match e {
                Entry::File { parts, .. } => parts.len() > 1 && parts[0] == *top,
                Entry::Refused { .. } => true,
            });
            all_inside.then(|| (*i, top.clone()))
        }
        _ => None,
    };
    let (manifest_index, prefix) = match (root_manifest, nested_manifest) {
        (Some((i, _)), _) => (Some(*i), None),
        (None, Some((i, top))) => (Some(i), Some(top)),
        (None, None) => (None, None),
    };

    let mut folders = Vec::new();
    let mut renamed = HashMap::new();
    if let Some(index) = manifest_index {
        let data = read_entry(&mut archive, index, &mut budget)?.map_err(ImportError::Manifest)?;
        let manifest = read_manifest(&data)?;
        folders = manifest.0;
        renamed = manifest.1;
    }

    let mut items = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let (zip_index, name, parts) = match entry {
            Entry::Refused { name, error } => {
                items.push(Item::Refused {
                    index,
                    title: file_stem(&name).map(str::to_owned),
                    error: format!("{name}: {error}"),
                });
                continue;
            }
            Entry::File {
                zip_index,
                name,
                parts,
            } => (zip_index, name, parts),
        };
        let parts = match prefix {
            Some(_) => parts.get(1..).unwrap_or_default(),
            None => &parts[..],
        };
        // Every entry yields one item, so indexes stay positions.
        let Some((file, dirs)) = parts.split_last() else {
            items.push(Item::Refused {
                index,
                title: None,
                error: format!("{name}: no file name"),
            });
            continue;
        };
        let dir = dirs.join("/");
        let folder = renamed
            .get(&dir)
            .cloned()
            .or_else(|| normalize_folder_path(&dir));
        let stem = file_stem(file);
        let refused = |error: String| Item::Refused {
            index,
            title: stem.map(str::to_owned),
            error: format!("{name}: {error}"),
        };
        let data = match read_entry(&mut archive, zip_index, &mut budget)? {
            Ok(data) => data,
            Err(error) => {
                items.push(refused(error));
                continue;
            }
        };
        let Ok(text) = String::from_utf8(data) else {
            items.push(refused("not UTF-8 text".to_owned()));
            continue;
        };
        let item = match markdown_item(index, &text, stem, FolderFrom::Directory(folder)) {
            Item::Refused {
                index,
                title,
                error,
            } => Item::Refused {
                index,
                title,
                error: format!("{name}: {error}"),
            },
            prompt => prompt,
        };
        items.push(item);
    }

    Ok(Parsed {
        folders,
        items,
        source: Source::MarkdownZip,
    })
}

/// The path segments of an entry name, or None when it is absolute, climbs out with
/// `..`, names a drive or holds NUL: such a name is never used as a path.
fn safe_parts(name: &str) -> Option<Vec<String>> {
    if name.contains('\0') {
        return None;
    }
    let name = name.replace('\\', "/");
    if name.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for segment in name.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if parts.is_empty() && s.len() == 2 && s.ends_with(':') => return None,
            s => parts.push(s.to_owned()),
        }
    }
    (!parts.is_empty()).then_some(parts)
}

/// "Email reply.md" -> "Email reply".
fn file_stem(name: &str) -> Option<&str> {
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = match file.rsplit_once('.') {
        Some((stem, ext))
            if ext.eq_ignore_ascii_case("md") || ext.eq_ignore_ascii_case("markdown") =>
        {
            stem
        }
        _ => file,
    };
    let stem = stem.trim();
    (!stem.is_empty()).then_some(stem)
}

/// Reads one entry, counting what it really unpacks to against `budget`. The outer
/// error fails the upload (a bomb); the inner one refuses only this entry.
fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    budget: &mut u64,
) -> Result<Result<Vec<u8>, String>, ImportError> {
    let bomb = ImportError::TooLarge {
        limit: MAX_UNZIPPED_BYTES,
    };
    let mut file = match archive.by_index(index) {
        Ok(file) => file,
        Err(e) => return Ok(Err(format!("cannot be read: {e}"))),
    };
    let mut data = Vec::new();
    let cap = MAX_ENTRY_BYTES.min(*budget).saturating_add(1);
    let result = file.by_ref().take(cap).read_to_end(&mut data);
    let got = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if got > *budget {
        return Err(bomb);
    }
    *budget -= got;
    if let Err(e) = result {
        return Ok(Err(format!("cannot be read: {e}")));
    }
    if got > MAX_ENTRY_BYTES {
        // Count the rest too: a single huge entry is a bomb, not just one bad file.
        let rest = drain(&mut file, budget.saturating_add(1));
        if rest > *budget {
            return Err(bomb);
        }
        *budget -= rest;
        return Ok(Err(format!("larger than {MAX_ENTRY_BYTES} bytes")));
    }
    Ok(Ok(data))
}

/// Reads and drops up to `limit` bytes, returning how many came; a read error ends
/// the count but keeps what was already inflated.
fn drain(reader: &mut impl Read, limit: u64) -> u64 {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0u64;
    while total < limit {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX)),
        }
    }
    total
}

type Manifest = (Vec<PortableFolder>, HashMap<String, String>);

fn read_manifest(data: &[u8]) -> Result<Manifest, ImportError> {
    let root = match parse_tree(data, Syntax::Yaml) {
        Ok(root) => root,
        Err(e @ ImportError::TooComplex(_)) => return Err(e),
        Err(e) => return Err(ImportError::Manifest(e.to_string())),
    };
    let map = match root {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            return Err(ImportError::Manifest(format!(
                "expected a mapping, found {}",
                kind_of(&other)
            )));
        }
    };
    if let Some(format) = map.get("format")
        && format.as_str() != Some(FORMAT)
    {
        return Err(ImportError::Manifest(format!(
            "format {} is not {FORMAT:?}",
            shown_value(format)
        )));
    }
    let folders = folders_from(map.get("folders"))?;
    let renamed = map
        .get("directories")
        .and_then(Value::as_object)
        .map(|dirs| {
            dirs.iter()
                .filter_map(|(dir, path)| {
                    let path = normalize_folder_path(path.as_str()?)?;
                    Some((normalize_folder_path(dir)?, path))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((folders, renamed))
}

// ---------------------------------------------------------------------------
// Import: one prompt
// ---------------------------------------------------------------------------

fn prompt_item(index: usize, value: &Value, lenient: bool) -> Item {
    let Value::Object(map) = value else {
        return Item::Refused {
            index,
            title: None,
            error: format!("item {index} is not an object (found {})", kind_of(value)),
        };
    };
    match prompt_from_map(map, lenient) {
        Ok(prompt) => Item::Prompt(prompt),
        Err((title, error)) => Item::Refused {
            index,
            title,
            error,
        },
    }
}

/// Reads the fields of one prompt, PromptFlow (snake_case) or Kotlin (camelCase).
/// On failure: the title if known, and every problem found, each naming its field.
fn prompt_from_map(
    map: &Map<String, Value>,
    lenient: bool,
) -> Result<PortablePrompt, (Option<String>, String)> {
    let mut f = Fields {
        map,
        lenient,
        errors: Vec::new(),
        more: 0,
    };

    let title = f.text(&["title"]).map(|t| t.trim().to_owned());
    let shown_title = title
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| t.chars().take(MAX_TITLE_CHARS).collect::<String>());
    match &title {
        Some(t) if t.is_empty() => f.fail("title: must not be blank".to_owned()),
        Some(t) => f.check_len("title", t, MAX_TITLE_CHARS),
        None if !f.has(&["title"]) => f.fail("title: required".to_owned()),
        None => {}
    }

    let content = f.text(&["content"]);
    match &content {
        Some(c) if c.trim().is_empty() => f.fail("content: must not be empty".to_owned()),
        Some(c) => f.check_len("content", c, MAX_CONTENT_CHARS),
        None if !f.has(&["content"]) => f.fail("content: required".to_owned()),
        None => {}
    }

    let description = f.text(&["description"]).filter(|d| !d.trim().is_empty());
    if let Some(d) = &description {
        f.check_len("description", d, MAX_DESCRIPTION_CHARS);
    }

    let tags = f.tags(&["tags"]);
    let id = f.scalar_text(&["id"], true).and_then(non_blank);
    let category = f.text(&["category"]).and_then(non_blank);
    let slug = f.text(&["slug"]).and_then(non_blank);
    let folder = f.text(&["folder"]).and_then(|p| normalize_folder_path(&p));

    let visibility = match f.text(&["visibility"]) {
        Some(v) => {
            let v = v.trim().to_ascii_lowercase();
            if VISIBILITIES.contains(&v.as_str()) {
                v
            } else {
                f.fail(format!(
                    "visibility: must be private, unlisted or public, found {}",
                    shown(&v)
                ));
                default_visibility()
            }
        }
        // Kotlin had only public or private.
        None => match f.flag(&["isPublic", "is_public"]) {
            Some(true) => "public".to_owned(),
            _ => default_visibility(),
        },
    };

    let status = match f.text(&["status"]) {
        Some(s) => match s.trim().to_ascii_lowercase().as_str() {
            v @ ("active" | "archived") => v.to_owned(),
            "deleted" => {
                f.fail("status: deleted in the source".to_owned());
                default_status()
            }
            _ => {
                f.fail(format!(
                    "status: must be active or archived, found {}",
                    shown(&s)
                ));
                default_status()
            }
        },
        None => default_status(),
    };

    let favorite = f
        .flag(&["favorite", "isFavorite", "is_favorite"])
        .unwrap_or(false);
    let usage_count = f.count(&["usage_count", "usageCount"]).unwrap_or(0);
    let created_at = f.date(&["created_at", "createdAt"]);
    let updated_at = f.date(&["updated_at", "updatedAt"]);

    match (title, content) {
        (Some(title), Some(content)) if f.errors.is_empty() => Ok(PortablePrompt {
            id,
            title,
            content,
            description,
            tags,
            category,
            folder,
            slug,
            visibility,
            favorite,
            status,
            created_at,
            updated_at,
            usage_count,
        }),
        _ => Err((shown_title, f.message())),
    }
}

fn non_blank(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Typed access to one prompt's fields; a null counts as absent (Jackson writes
/// nulls for every empty field).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// YAML: a plain `2024` or `true` where text is expected is meant as text.
    lenient: bool,
    errors: Vec<String>,
    more: usize,
}

impl<'a> Fields<'a> {
    fn get(&self, names: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        let map = self.map;
        names
            .iter()
            .find_map(|n| map.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    fn has(&self, names: &[&'static str]) -> bool {
        self.get(names).is_some()
    }

    fn fail(&mut self, error: String) {
        if self.errors.len() < MAX_ERRORS_SHOWN {
            self.errors.push(error);
        } else {
            self.more += 1;
        }
    }

    fn message(&self) -> String {
        let mut message = self.errors.join("; ");
        if self.more > 0 {
            message.push_str(&format!("; and {} more", self.more));
        }
        message
    }

    fn check_len(&mut self, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.fail(format!("{field}: too long ({n} characters, at most {max})"));
        }
    }

    fn text(&mut self, names: &[&'static str]) -> Option<String> {
        self.scalar_text(names, self.lenient)
    }

    fn scalar_text(&mut self, names: &[&'static str], scalars: bool) -> Option<String> {
        let (name, value) = self.get(names)?;
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if scalars => Some(n.to_string()),
            Value::Bool(b) if scalars => Some(b.to_string()),
            other => {
                let error = format!("{name}: expected text, found {}", kind_of(other));
                self.fail(error);
                None
            }
        }
    }

    fn flag(&mut self, names: &[&'static str]) -> Option<bool> {
        let (name, value) = self.get(names)?;
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                let error = format!("{name}: expected true or false, found {}", kind_of(other));
                self.fail(error);
                None
            }
        }
    }

    fn count(&mut self, names: &[&'static str]) -> Option<u64> {
        let (name, value) = self.get(names)?;
        let count = value.as_u64();
        if count.is_none() {
            let error = format!(
                "{name}: expected a whole number ≥ 0, found {}",
                shown_value(value)
            );
            self.fail(error);
        }
        count
    }

    fn date(&mut self, names: &[&'static str]) -> Option<DateTime<Utc>> {
        let (name, value) = self.get(names)?;
        let date = match value {
            Value::String(s) => parse_datetime(s),
            Value::Array(parts) => datetime_from_parts(parts),
            _ => None,
        };
        if date.is_none() {
            let error = format!(
                "{name}: expected a date-time like 2024-05-01T10:20:30Z, found {}",
                shown_value(value)
            );
            self.fail(error);
        }
        date
    }

    fn tags(&mut self, names: &[&'static str]) -> Vec<String> {
        let Some((name, value)) = self.get(names) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            let error = format!("{name}: expected a list of text, found {}", kind_of(value));
            self.fail(error);
            return Vec::new();
        };
        let mut tags: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let tag = match item {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) if self.lenient => n.to_string(),
                Value::Bool(b) if self.lenient => b.to_string(),
                other => {
                    self.fail(format!(
                        "{name}[{i}]: expected text, found {}",
                        kind_of(other)
                    ));
                    continue;
                }
            };
            let n = tag.chars().count();
            if n == 0 || n > MAX_TAG_CHARS {
                self.fail(format!(
                    "{name}[{i}]: must be 1 to {MAX_TAG_CHARS} characters, has {n}"
                ));
            } else if tag.chars().any(char::is_control) {
                self.fail(format!("{name}[{i}]: must not contain control characters"));
            } else if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.len() > MAX_TAGS {
            self.fail(format!(
                "{name}: too many ({}, at most {MAX_TAGS})",
                tags.len()
            ));
        }
        tags
    }
}

/// RFC 3339, or a zone-less date-time (Kotlin's LocalDateTime, taken as UTC), or a
/// bare date (midnight UTC).
fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Jackson's array form of a LocalDateTime: [year, month, day, hour, minute, second?, nanos?].
fn datetime_from_parts(parts: &[Value]) -> Option<DateTime<Utc>> {
    if !(5..=7).contains(&parts.len()) {
        return None;
    }
    let n: Vec<i64> = parts.iter().map(Value::as_i64).collect::<Option<_>>()?;
    let at = |i: usize| u32::try_from(n.get(i).copied().unwrap_or(0)).ok();
    NaiveDate::from_ymd_opt(i32::try_from(n[0]).ok()?, at(1)?, at(2)?)?
        .and_hms_nano_opt(at(3)?, at(4)?, at(5)?, at(6)?)
        .map(|t| t.and_utc())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A user's value in an error message, cut short.
fn shown(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        format!(
            "{:?}",
            format!("{}…", s.chars().take(MAX).collect::<String>())
        )
    } else {
        format!("{s:?}")
    }
}

fn shown_value(value: &Value) -> String {
    match value {
        Value::String(s) => shown(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind_of(other).to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Import: bounded JSON/YAML value trees
// ---------------------------------------------------------------------------

/// Parses a JSON or YAML document into a value tree with bounded depth, node count
/// and text: YAML aliases replay their anchor on every use, so an alias "billion
/// laughs" would otherwise grow without end.
fn parse_tree(bytes: &[u8], syntax: Syntax) -> Result<Value, ImportError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ImportError::NotUtf8)?;
    let budget = Budget {
        nodes: Cell::new(MAX_NODES),
        // Text never decodes longer than its source, so twice that leaves room for
        // honest aliases.
        text_bytes: Cell::new(text.len().saturating_mul(2).saturating_add(4096)),
        tripped: Cell::new(None),
    };
    let seed = TreeSeed {
        budget: &budget,
        depth: 0,
    };
    let result = match syntax {
        Syntax::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            seed.deserialize(&mut de)
                .and_then(|v| de.end().map(|()| v))
                .map_err(|e| e.to_string())
        }
        Syntax::Yaml => seed
            .deserialize(serde_norway::Deserializer::from_str(text))
            .map_err(|e| e.to_string()),
    };
    result.map_err(|message| match budget.tripped.take() {
        Some(why) => ImportError::TooComplex(why.to_owned()),
        None => ImportError::Syntax {
            format: syntax.name(),
            message,
        },
    })
}

struct Budget {
    nodes: Cell<usize>,
    text_bytes: Cell<usize>,
    tripped: Cell<Option<&'static str>>,
}

impl Budget {
    fn trip<E: de::Error>(&self, why: &'static str) -> E {
        self.tripped.set(Some(why));
        E::custom(why)
    }

    fn charge<E: de::Error>(&self, text_len: usize) -> Result<(), E> {
        let nodes = self.nodes.get();
        let text = self.text_bytes.get();
        if nodes == 0 || text < text_len {
            return Err(self.trip("it expands to too many values (YAML aliases?)"));
        }
        self.nodes.set(nodes - 1);
        self.text_bytes.set(text - text_len);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct TreeSeed<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl TreeSeed<'_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_NESTING {
            return Err(self.budget.trip("it is nested too deeply"));
        }
        self.budget.charge(0)?;
        Ok(Self {
            budget: self.budget,
            depth: self.depth + 1,
        })
    }

    fn leaf<E: de::Error>(self, text_len: usize, value: Value) -> Result<Value, E> {
        self.budget.charge(text_len)?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for TreeSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TreeSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.leaf(0, Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.leaf(0, Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.leaf(0, Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        let text = v.to_string();
        self.leaf(text.len(), Value::String(text))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        let text = v.to_string();
        self.leaf(text.len(), Value::String(text))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // NaN and infinities have no JSON number; keep them as their YAML-ish text.
        let value = serde_json::Number::from_f64(v)
            .map_or_else(|| Value::String(v.to_string()), Value::Number);
        self.leaf(0, value)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.leaf(v.len(), Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.leaf(v.len(), Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.leaf(0, Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.leaf(0, Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut out = Vec::new();
        while let Some(value) = seq.next_element_seed(child)? {
            out.push(value);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(child)? {
            let value = map.next_value_seed(child)?;
            // YAML allows any key; fields are named by text, so others are dropped.
            let key = match key {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    /// A YAML value with a custom `!tag`: the tag is dropped, the value kept.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (_tag, variant) = data.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test date")
            .with_timezone(&Utc)
    }

    fn prompt(title: &str, content: &str, folder: Option<&str>) -> PortablePrompt {
        PortablePrompt {
            id: None,
            title: title.to_owned(),
            content: content.to_owned(),
            description: None,
            tags: Vec::new(),
            category: None,
            folder: folder.map(str::to_owned),
            slug: None,
            visibility: default_visibility(),
            favorite: false,
            status: default_status(),
            created_at: None,
            updated_at: None,
            usage_count: 0,
        }
    }

    fn folder(path: &str, position: i32) -> PortableFolder {
        PortableFolder {
            path: path.to_owned(),
            color: None,
            icon: None,
            position,
        }
    }

    fn sample() -> Library {
        let full = PortablePrompt {
            id: Some("0190a3c5-7b1e-7c8d-9f00-123456789abc".to_owned()),
            title: "写作助手".to_owned(),
            content: "你是一位专业的写作助手。\n\n请帮我润色：{{text}}\n".to_owned(),
            description: Some("帮助润色中文文章".to_owned()),
            tags: vec!["写作".to_owned(), "中文".to_owned(), "AI".to_owned()],
            category: Some("写作".to_owned()),
            folder: Some("工作".to_owned()),
            slug: Some("writing-assistant".to_owned()),
            visibility: "public".to_owned(),
            favorite: true,
            status: "archived".to_owned(),
            created_at: Some(at("2024-05-01T10:20:30.123Z")),
            updated_at: Some(at("2024-06-02T03:04:05Z")),
            usage_count: 42,
        };
        let mut reply = prompt(
            "Email reply",
            "\nDear {{name}},\n---\nThanks!\n\n",
            Some("工作/邮件"),
        );
        reply.tags = vec!["email".to_owned()];
        reply.visibility = "unlisted".to_owned();
        reply.description = Some("Line 1\nLine 2: with colon".to_owned());
        let mut ambiguous = prompt("123", "numbers", None);
        ambiguous.tags = vec!["2024".to_owned(), "yes".to_owned(), "true".to_owned()];
        ambiguous.description = Some("~".to_owned());
        ambiguous.category = Some("null".to_owned());
        let mut idea = prompt(
            "Idea: build a 🚀",
            "Ship it: `cargo build`  \t\n",
            Some("Personal/Ideas: 2024"),
        );
        idea.slug = Some("idea".to_owned());
        let mut colored = folder("工作", 1);
        colored.color = Some("#ff0000".to_owned());
        colored.icon = Some("briefcase".to_owned());
        let mut home = folder("Personal", 3);
        home.icon = Some("🏠".to_owned());
        let mut ideas = folder("Personal/Ideas: 2024", 4);
        ideas.color = Some("#00ff00".to_owned());
        Library::new(
            at("2024-07-01T12:00:00Z"),
            vec![
                colored,
                folder("工作/邮件", 2),
                home,
                ideas,
                folder("Empty folder", 5),
            ],
            vec![
                full,
                reply,
                prompt("Email reply", "Second", Some("工作/邮件")),
                prompt("email reply", "Third", Some("工作/邮件")),
                ambiguous,
                idea,
                prompt("Old notes", "old", Some("Archive/Old")),
                prompt("---", "---\n---\n", None),
                prompt("true", "Windows\r\nline ends\r\n", Some("工作")),
            ],
        )
    }

    fn prompts_of(parsed: &Parsed) -> Vec<PortablePrompt> {
        parsed
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Prompt(p) => Some(p.clone()),
                Item::Refused { .. } => None,
            })
            .collect()
    }

    fn refusals(parsed: &Parsed) -> Vec<(usize, Option<String>, String)> {
        parsed
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Refused {
                    index,
                    title,
                    error,
                } => Some((*index, title.clone(), error.clone())),
                Item::Prompt(_) => None,
            })
            .collect()
    }

    fn sorted(mut prompts: Vec<PortablePrompt>) -> Vec<PortablePrompt> {
        prompts.sort_by(|a, b| {
            (&a.folder, &a.title, &a.content).cmp(&(&b.folder, &b.title, &b.content))
        });
        prompts
    }

    fn zip_names(bytes: &[u8]) -> Vec<String> {
        let mut archive = ZipArchive::new(Cursor::new(bytes)).expect("zip");
        (0..archive.len())
            .map(|i| {
                archive
                    .by_index(i)
                    .expect("entry")
                    .name()
                    .expect("name")
                    .into_owned()
            })
            .collect()
    }

    fn zip_entry(bytes: &[u8], name: &str) -> String {
        let mut archive = ZipArchive::new(Cursor::new(bytes)).expect("zip");
        let mut file = archive.by_name(name).expect("entry");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("text");
        text
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            zip.start_file(*name, SimpleFileOptions::default())
                .expect("start");
            zip.write_all(data).expect("write");
        }
        zip.finish().expect("finish").into_inner()
    }

    fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) {
        assert_eq!(from.len(), to.len());
        let mut i = 0;
        while i + from.len() <= bytes.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
    }

    // --- round trips -------------------------------------------------------

    #[test]
    fn json_round_trip_keeps_every_field() {
        let lib = sample();
        let bytes = to_json(&lib).expect("export");
        for content_type in ["application/json", "", "application/octet-stream"] {
            let parsed = parse(&bytes, content_type).expect("import");
            assert_eq!(parsed.source, Source::PromptflowJson);
            assert_eq!(parsed.folders, lib.folders);
            assert_eq!(prompts_of(&parsed), lib.prompts);
            assert!(refusals(&parsed).is_empty());
        }
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.contains("\"format\": \"promptflow-library\""));
        assert!(text.contains("\"usage_count\": 42"));
        assert!(text.contains("\"exported_at\": \"2024-07-01T12:00:00Z\""));
    }

    #[test]
    fn yaml_round_trip_keeps_every_field() {
        let lib = sample();
        let bytes = to_yaml(&lib).expect("export");
        for content_type in ["application/yaml", "text/yaml; charset=utf-8", ""] {
            let parsed = parse(&bytes, content_type).expect("import");
            assert_eq!(parsed.source, Source::PromptflowYaml);
            assert_eq!(parsed.folders, lib.folders);
            assert_eq!(prompts_of(&parsed), lib.prompts);
        }
    }

    #[test]
    fn markdown_zip_round_trip_keeps_prompts_and_folders() {
        let lib = sample();
        let bytes = to_markdown_zip(&lib).expect("export");
        for content_type in ["application/zip", "application/x-zip-compressed", ""] {
            let parsed = parse(&bytes, content_type).expect("import");
            assert_eq!(parsed.source, Source::MarkdownZip);
            assert_eq!(parsed.folders, lib.folders);
            assert!(refusals(&parsed).is_empty(), "{:?}", refusals(&parsed));
            assert_eq!(sorted(prompts_of(&parsed)), sorted(lib.prompts.clone()));
        }
    }

    #[test]
    fn markdown_zip_layout_names_files_from_titles() {
        let bytes = to_markdown_zip(&sample()).expect("export");
        let names = zip_names(&bytes);
        let expected = [
            "library.yaml",
            "Archive/",
            "Archive/Old/",
            "Empty folder/",
            "Personal/",
            "Personal/Ideas_ 2024/",
            "工作/",
            "工作/邮件/",
            "工作/写作助手.md",
            "工作/邮件/Email reply.md",
            "工作/邮件/Email reply (2).md",
            "工作/邮件/email reply (3).md",
            "123.md",
            "Personal/Ideas_ 2024/Idea_ build a 🚀.md",
            "Archive/Old/Old notes.md",
            "---.md",
            "工作/true.md",
        ];
        assert_eq!(names, expected);

        let manifest = zip_entry(&bytes, "library.yaml");
        assert!(
            manifest.starts_with("format: promptflow-library\nversion: 1\n"),
            "{manifest}"
        );
        assert!(
            manifest.contains("Personal/Ideas_ 2024: 'Personal/Ideas: 2024'"),
            "{manifest}"
        );

        let file = zip_entry(&bytes, "工作/写作助手.md");
        assert!(
            file.starts_with("---\ntitle: 写作助手\nid: 0190a3c5-"),
            "{file}"
        );
        assert!(!file.contains("folder:"), "{file}");
        assert!(
            file.ends_with("---\n\n你是一位专业的写作助手。\n\n请帮我润色：{{text}}\n"),
            "{file}"
        );
        assert!(file.contains("\nusage_count: 42\n"), "{file}");
    }

    #[test]
    fn hostile_titles_and_folders_stay_inside_the_archive() {
        let titles = [
            "../../etc/passwd",
            "a/b",
            "CON",
            "con.txt",
            "nul",
            "COM1",
            "lpt9.md",
            "x\0y",
            "\0",
            &"A".repeat(300),
            &"写".repeat(300),
            "",
            "   ",
            ".hidden",
            "...",
            "a\\b",
            "C:\\Windows\\x",
            "/abs",
            "\u{202E}gpj.exe",
            "tab\there\nnew line",
            "library.yaml",
            "LIBRARY",
        ];
        let folders = [
            "../..", "a:b", "a_b", "/etc/", "CON/AUX", " . /x", "\u{200B}",
        ];
        let mut lib = Library::new(at("2024-07-01T12:00:00Z"), Vec::new(), Vec::new());
        lib.folders = folders.iter().map(|f| folder(f, 0)).collect();
        for (i, title) in titles.iter().enumerate() {
            let folder = folders.get(i % (folders.len() + 1)).copied();
            lib.prompts.push(prompt(title, "body", folder));
        }
        let bytes = to_markdown_zip(&lib).expect("export");

        let mut archive = ZipArchive::new(Cursor::new(bytes.as_slice())).expect("zip");
        for i in 0..archive.len() {
            let file = archive.by_index(i).expect("entry");
            let name = file.name().expect("name").into_owned();
            assert!(file.enclosed_name().is_some(), "{name:?}");
            assert!(!name.starts_with('/') && !name.contains('\\') && !name.contains(':'));
            assert!(!name.chars().any(char::is_control), "{name:?}");
            for segment in name.trim_end_matches('/').split('/') {
                assert!(!segment.is_empty(), "{name:?}");
                assert!(
                    !segment.starts_with('.') && !segment.ends_with('.'),
                    "{name:?}"
                );
                assert!(
                    !segment.starts_with(' ') && !segment.ends_with(' '),
                    "{name:?}"
                );
                assert!(segment.len() <= 255, "{name:?}");
                assert!(!is_windows_device_name(segment), "{name:?}");
            }
        }
        let names = zip_names(&bytes);
        assert_eq!(
            names
                .iter()
                .filter(|n| n.eq_ignore_ascii_case("library.yaml"))
                .count(),
            1
        );
        let unique: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(unique.len(), names.len());

        // What is valid comes back with its exact title and folder.
        let parsed = parse(&bytes, "").expect("import");
        let expected: Vec<PortablePrompt> = lib
            .prompts
            .iter()
            .filter(|p| !p.title.trim().is_empty() && p.title.chars().count() <= MAX_TITLE_CHARS)
            .map(|p| {
                let mut p = p.clone();
                p.title = p.title.trim().to_owned();
                p.folder = p.folder.as_deref().and_then(normalize_folder_path);
                p
            })
            .collect();
        assert_eq!(sorted(prompts_of(&parsed)), sorted(expected));
        let expected_folders: Vec<String> = folders
            .iter()
            .filter_map(|f| normalize_folder_path(f))
            .collect();
        let got_folders: Vec<String> = parsed.folders.iter().map(|f| f.path.clone()).collect();
        assert_eq!(got_folders, expected_folders);
        assert_eq!(refusals(&parsed).len(), 4);
    }

    #[test]
    fn file_names_follow_the_documented_rule() {
        let cases = [
            ("Email reply", "Email reply"),
            ("写作助手", "写作助手"),
            ("हिन्दी सहायक", "हिन्दी सहायक"),
            ("a/b", "a_b"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("What? Why: \"now\" <ok> | *", "What_ Why_ _now_ _ok_ _ _"),
            ("x\0y", "x_y"),
            ("\0", "_"),
            ("", "untitled"),
            ("...", "untitled"),
            (" .env file ", "env file"),
            ("tab\there\r\nand\u{3000}more", "tab here and more"),
            ("CON", "_CON"),
            ("con.txt", "_con.txt"),
            ("COM1", "_COM1"),
            ("Lpt9", "_Lpt9"),
            ("COM10", "COM10"),
            ("CONSOLE", "CONSOLE"),
            ("rtl\u{202E}txt.exe", "rtl_txt.exe"),
            ("Plan (v2) & notes, [draft]!", "Plan (v2) & notes, [draft]!"),
        ];
        for (title, expected) in cases {
            assert_eq!(safe_name(title, "untitled"), expected, "{title:?}");
        }
        assert_eq!(
            safe_name(&"A".repeat(300), "untitled").len(),
            MAX_NAME_BYTES
        );
        assert_eq!(safe_name(&"写".repeat(300), "untitled").chars().count(), 50);
        assert_eq!(
            safe_name(&format!("{}.....", "b".repeat(148)), "x"),
            "b".repeat(148)
        );

        let mut names = DirNames::default();
        assert_eq!(names.claim("Note", ".md"), "Note.md");
        assert_eq!(names.claim("note", ".md"), "note (2).md");
        assert_eq!(names.claim("Note (3)", ".md"), "Note (3).md");
        assert_eq!(names.claim("NOTE", ".md"), "NOTE (4).md");
    }

    // --- Kotlin ------------------------------------------------------------

    const KOTLIN_PROMPTS: &str = r#"[
        {"id": "6634f1a2b3c4d5e6f7a8b9c0", "userId": "6634f0000000000000000001",
         "title": "Code review", "content": "Review this code: {{code}}",
         "description": null, "tags": ["dev", "review"], "category": "Engineering",
         "categoryId": "6634f0000000000000000009", "isPublic": true, "isFavorite": true,
         "usageCount": 7, "folderId": "6634f0000000000000000005", "status": "ACTIVE",
         "lastUsedAt": "2024-05-03T08:00:00", "createdAt": "2024-05-01T10:20:30",
         "updatedAt": "2024-05-02T11:22:33.123"},
        {"id": "6634f1a2b3c4d5e6f7a8b9c1", "userId": "6634f0000000000000000001",
         "title": "旧的提示", "content": "内容", "description": "描述", "tags": [],
         "category": null, "categoryId": null, "isPublic": false, "isFavorite": false,
         "usageCount": 0, "folderId": null, "status": "ARCHIVED", "lastUsedAt": null,
         "createdAt": "2024-01-01T00:00:00Z", "updatedAt": [2024, 1, 2, 3, 4, 5, 6000000]},
        {"id": "6634f1a2b3c4d5e6f7a8b9c2", "userId": "6634f0000000000000000001",
         "title": "Gone", "content": "x", "isPublic": false, "status": "DELETED"}
    ]"#;

    fn check_kotlin(parsed: &Parsed) {
        assert_eq!(parsed.source, Source::KotlinJson);
        assert!(parsed.folders.is_empty());
        let mut review = prompt("Code review", "Review this code: {{code}}", None);
        review.id = Some("6634f1a2b3c4d5e6f7a8b9c0".to_owned());
        review.tags = vec!["dev".to_owned(), "review".to_owned()];
        review.category = Some("Engineering".to_owned());
        review.visibility = "public".to_owned();
        review.favorite = true;
        review.usage_count = 7;
        review.created_at = Some(at("2024-05-01T10:20:30Z"));
        review.updated_at = Some(at("2024-05-02T11:22:33.123Z"));
        let mut old = prompt("旧的提示", "内容", None);
        old.id = Some("6634f1a2b3c4d5e6f7a8b9c1".to_owned());
        old.description = Some("描述".to_owned());
        old.status = "archived".to_owned();
        old.created_at = Some(at("2024-01-01T00:00:00Z"));
        old.updated_at = Some(at("2024-01-02T03:04:05.006Z"));
        assert_eq!(prompts_of(parsed), vec![review, old]);
        let refused = refusals(parsed);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 2);
        assert_eq!(refused[0].1.as_deref(), Some("Gone"));
        assert!(
            refused[0].2.contains("deleted in the source"),
            "{}",
            refused[0].2
        );
    }

    #[test]
    fn kotlin_bare_array() {
        check_kotlin(&parse(KOTLIN_PROMPTS.as_bytes(), "application/json").expect("import"));
        check_kotlin(&parse(KOTLIN_PROMPTS.as_bytes(), "").expect("import"));
    }

    #[test]
    fn kotlin_success_data_list() {
        let json = format!(r#"{{"success": true, "message": "OK", "data": {KOTLIN_PROMPTS}}}"#);
        check_kotlin(&parse(json.as_bytes(), "application/json").expect("import"));
    }

    #[test]
    fn kotlin_success_data_page() {
        let json = format!(
            r#"{{"success": true, "data": {{"content": {KOTLIN_PROMPTS},
                "pageable": {{"pageNumber": 0, "pageSize": 20, "sort": {{"sorted": false}}}},
                "totalElements": 3, "totalPages": 1, "last": true, "first": true,
                "size": 20, "number": 0, "numberOfElements": 3, "empty": false}}}}"#
        );
        check_kotlin(&parse(json.as_bytes(), "").expect("import"));
    }

    #[test]
    fn kotlin_prompts_wrapper() {
        let json = format!(r#"{{"prompts": {KOTLIN_PROMPTS}}}"#);
        check_kotlin(&parse(json.as_bytes(), "application/json").expect("import"));
    }

    #[test]
    fn kotlin_page_without_wrapper_and_single_prompt() {
        let json = format!(r#"{{"content": {KOTLIN_PROMPTS}, "totalElements": 3}}"#);
        check_kotlin(&parse(json.as_bytes(), "").expect("import"));
        let json = br#"{"success": true, "data": {"id": "66", "title": "One", "content": "x",
            "isPublic": true, "createdAt": "2024-05-01T10:20:30"}}"#;
        let parsed = parse(json, "").expect("import");
        assert_eq!(parsed.source, Source::KotlinJson);
        let mut one = prompt("One", "x", None);
        one.id = Some("66".to_owned());
        one.visibility = "public".to_owned();
        one.created_at = Some(at("2024-05-01T10:20:30Z"));
        assert_eq!(prompts_of(&parsed), vec![one]);
    }

    #[test]
    fn kotlin_error_response_is_not_a_library() {
        let json = br#"{"success": false, "message": "Unauthorized", "data": null}"#;
        let err = parse(json, "application/json").expect_err("refused");
        assert!(matches!(err, ImportError::Unrecognized(ref m) if m.contains("Unauthorized")));
    }

    #[test]
    fn bare_promptflow_arrays_and_single_prompts() {
        let json = br#"[{"title": "A", "content": "a", "usage_count": 3}]"#;
        let parsed = parse(json, "").expect("import");
        assert_eq!(parsed.source, Source::PromptflowJson);
        let mut a = prompt("A", "a", None);
        a.usage_count = 3;
        assert_eq!(prompts_of(&parsed), vec![a.clone()]);

        let yaml = b"- title: A\n  content: a\n  usage_count: 3\n";
        let parsed = parse(yaml, "").expect("import");
        assert_eq!(parsed.source, Source::PromptflowYaml);
        assert_eq!(prompts_of(&parsed), vec![a.clone()]);

        let single = br#"{"title": "A", "content": "a", "usage_count": 3}"#;
        assert_eq!(prompts_of(&parse(single, "").expect("import")), vec![a]);
    }

    // --- per-item validation ----------------------------------------------

    #[test]
    fn bad_items_are_refused_and_the_rest_import() {
        let many_tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        let items = serde_json::json!([
            "just a string",
            {"content": "x"},
            {"title": "   ", "content": "x"},
            {"title": "a".repeat(201), "content": "x"},
            {"title": "Empty", "content": ""},
            {"title": "No content"},
            {"title": "Long desc", "content": "x", "description": "d".repeat(2001)},
            {"title": "Many tags", "content": "x", "tags": many_tags},
            {"title": "Long tag", "content": "x", "tags": ["a".repeat(65)]},
            {"title": "Ctl tag", "content": "x", "tags": ["a\u{7}b"]},
            {"title": "Bad visibility", "content": "x", "visibility": "secret"},
            {"title": "Bad status", "content": "x", "status": "gone"},
            {"title": "Tags number", "content": "x", "tags": 5},
            {"title": "Newer", "content": "x", "some_future_field": {"a": [1, 2]}, "rating": 5},
            {"title": "Bad date", "content": "x", "created_at": "yesterday"},
            {"title": 5, "content": "x"},
            {"title": "Count", "content": "x", "usage_count": -1},
            {"title": "Blank tag", "content": "x", "tags": ["  "]},
            {"title": "Long content", "content": "c".repeat(100_001)},
            null,
            {"title": " Trimmed ", "content": "y", "tags": [" a ", "a", "b"], "description": " ",
             "visibility": "PUBLIC", "status": "Archived", "folder": " Work / / Emails/ "},
            {"title": "Two faults", "content": "", "favorite": "yes"},
            {"title": "Max", "content": "m".repeat(100_000), "description": "d".repeat(2000),
             "tags": (0..20).map(|i| format!("{i:0>64}")).collect::<Vec<_>>()},
        ]);
        let parsed = parse(items.to_string().as_bytes(), "application/json").expect("import");
        assert_eq!(parsed.items.len(), 23);
        let expect = [
            (0, None, "not an object"),
            (1, None, "title: required"),
            (2, None, "title: must not be blank"),
            (3, Some("a".repeat(200)), "title: too long (201 characters"),
            (4, Some("Empty".to_owned()), "content: must not be empty"),
            (5, Some("No content".to_owned()), "content: required"),
            (6, Some("Long desc".to_owned()), "description: too long"),
            (7, Some("Many tags".to_owned()), "tags: too many (21"),
            (
                8,
                Some("Long tag".to_owned()),
                "tags[0]: must be 1 to 64 characters",
            ),
            (
                9,
                Some("Ctl tag".to_owned()),
                "tags[0]: must not contain control",
            ),
            (10, Some("Bad visibility".to_owned()), "visibility: must be"),
            (
                11,
                Some("Bad status".to_owned()),
                "status: must be active or archived",
            ),
            (12, Some("Tags number".to_owned()), "tags: expected a list"),
            (
                14,
                Some("Bad date".to_owned()),
                "created_at: expected a date-time",
            ),
            (15, None, "title: expected text, found a number"),
            (
                16,
                Some("Count".to_owned()),
                "usage_count: expected a whole number",
            ),
            (17, Some("Blank tag".to_owned()), "tags[0]: must be 1 to 64"),
            (18, Some("Long content".to_owned()), "content: too long"),
            (19, None, "item 19 is not an object"),
            (
                21,
                Some("Two faults".to_owned()),
                "content: must not be empty; favorite:",
            ),
        ];
        let refused = refusals(&parsed);
        assert_eq!(refused.len(), expect.len(), "{refused:#?}");
        for ((index, title, error), (want_index, want_title, want_error)) in
            refused.iter().zip(expect)
        {
            assert_eq!(*index, want_index);
            assert_eq!(*title, want_title, "item {index}");
            assert!(error.contains(want_error), "item {index}: {error}");
        }
        let ok = prompts_of(&parsed);
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[0].title, "Newer");
        let trimmed = &ok[1];
        assert_eq!(trimmed.title, "Trimmed");
        assert_eq!(trimmed.tags, ["a", "b"]);
        assert_eq!(trimmed.description, None);
        assert_eq!(trimmed.visibility, "public");
        assert_eq!(trimmed.status, "archived");
        assert_eq!(trimmed.folder.as_deref(), Some("Work/Emails"));
        assert_eq!(ok[2].tags.len(), 20);
    }

    #[test]
    fn yaml_scalars_are_text_where_text_is_expected() {
        let yaml = b"- title: 2024\n  content: yes\n  tags: [1, true, x]\n  favorite: true\n";
        let parsed = parse(yaml, "application/yaml").expect("import");
        let got = prompts_of(&parsed);
        assert_eq!(got.len(), 1, "{:?}", refusals(&parsed));
        assert_eq!(got[0].title, "2024");
        assert_eq!(got[0].content, "yes");
        assert_eq!(got[0].tags, ["1", "true", "x"]);
        assert!(got[0].favorite);
    }

    #[test]
    fn dates_in_every_accepted_form() {
        let cases = [
            ("2024-05-01T10:20:30", "2024-05-01T10:20:30Z"),
            ("2024-05-01T10:20:30.123", "2024-05-01T10:20:30.123Z"),
            (
                "2024-05-01T10:20:30.123456789",
                "2024-05-01T10:20:30.123456789Z",
            ),
            ("2024-05-01T10:20:30+02:00", "2024-05-01T08:20:30Z"),
            ("2024-05-01T10:20:30.5Z", "2024-05-01T10:20:30.5Z"),
            ("2024-05-01 10:20:30", "2024-05-01T10:20:30Z"),
            ("2024-05-01T10:20", "2024-05-01T10:20:00Z"),
            ("2024-05-01", "2024-05-01T00:00:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_datetime(input), Some(at(expected)), "{input}");
        }
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00",
            "2024-05-01T25:00:00",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        let parts = |v: serde_json::Value| datetime_from_parts(v.as_array().expect("array"));
        assert_eq!(
            parts(serde_json::json!([2024, 5, 1, 10, 20])),
            Some(at("2024-05-01T10:20:00Z"))
        );
        assert_eq!(parts(serde_json::json!([2024, 5, 1])), None);
        assert_eq!(parts(serde_json::json!([2024, 2, 30, 0, 0])), None);
        assert_eq!(parts(serde_json::json!([2024, -1, 1, 0, 0])), None);
    }

    // --- whole-upload failures --------------------------------------------

    #[test]
    fn empty_and_garbage_uploads_are_errors() {
        assert_eq!(parse(b"", ""), Err(ImportError::Empty));
        assert_eq!(
            parse(b"  \n\t", "application/json"),
            Err(ImportError::Empty)
        );
        assert_eq!(parse(b"\xEF\xBB\xBF\n", ""), Err(ImportError::Empty));
        assert_eq!(
            parse(b"\x00\x01\xff\xfe binary", ""),
            Err(ImportError::NotUtf8)
        );
        assert!(matches!(
            parse(b"hello world", ""),
            Err(ImportError::Unrecognized(_))
        ));
        assert!(matches!(
            parse(b"42", ""),
            Err(ImportError::Unrecognized(_))
        ));
        assert!(matches!(
            parse(b"{not json", ""),
            Err(ImportError::Syntax { format: "JSON", .. })
        ));
        assert!(matches!(
            parse(b"a: [1, 2\nb: {", "text/yaml"),
            Err(ImportError::Syntax { format: "YAML", .. })
        ));
        assert!(matches!(
            parse(b"PK\x03\x04garbage", ""),
            Err(ImportError::Zip(_))
        ));
        assert!(matches!(
            parse(b"not a zip", "application/zip"),
            Err(ImportError::Zip(_))
        ));
        assert!(matches!(
            parse(br#"{"format": "other-app", "prompts": []}"#, ""),
            Err(ImportError::Unrecognized(_))
        ));
        assert!(matches!(
            parse(br#"{"format": "promptflow-library", "prompts": 5}"#, ""),
            Err(ImportError::Unrecognized(_))
        ));
        assert!(matches!(
            parse(br#"{"name": "x"}"#, ""),
            Err(ImportError::Unrecognized(_))
        ));
        assert!(parse(b"a: 1\n---\nb: 2\n", "application/yaml").is_err());
        // A BOM before JSON is fine.
        let parsed = parse(b"\xEF\xBB\xBF[]", "").expect("empty list");
        assert!(parsed.items.is_empty());
    }

    #[test]
    fn too_many_items_is_an_error() {
        let json = format!("[{}{{}}]", "{},".repeat(MAX_ITEMS));
        assert_eq!(
            parse(json.as_bytes(), ""),
            Err(ImportError::TooManyItems {
                what: "prompts",
                found: MAX_ITEMS + 1,
                limit: MAX_ITEMS,
            })
        );
        let json = format!("[{}{{}}]", "{},".repeat(MAX_ITEMS - 1));
        assert_eq!(
            parse(json.as_bytes(), "")
                .expect("at the limit")
                .items
                .len(),
            MAX_ITEMS
        );
    }

    #[test]
    fn oversized_documents_are_errors() {
        let yaml = "a".repeat(MAX_YAML_BYTES + 1);
        assert!(matches!(
            parse(yaml.as_bytes(), "application/yaml"),
            Err(ImportError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(yaml.as_bytes(), "text/markdown"),
            Err(ImportError::TooLarge { .. })
        ));
        let json = format!("[{}]", " ".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(
            parse(json.as_bytes(), ""),
            Err(ImportError::TooLarge { .. })
        ));
    }

    #[test]
    fn deeply_nested_json_is_an_error() {
        for depth in [40, 200, 100_000, 1_000_000] {
            let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert!(matches!(
                parse(json.as_bytes(), ""),
                Err(ImportError::TooComplex(_))
            ));
            let open = "{\"a\":".repeat(depth);
            assert!(parse(open.as_bytes(), "application/json").is_err());
        }
        // Nesting inside one item fails the document: it cannot be read at all.
        let inner = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let json = format!(r#"[{{"title": "x", "content": "y", "extra": {inner}}}]"#);
        assert!(matches!(
            parse(json.as_bytes(), ""),
            Err(ImportError::TooComplex(_))
        ));
        let inner = format!("{}{}", "[".repeat(20), "]".repeat(20));
        let json = format!(r#"[{{"title": "x", "content": "y", "extra": {inner}}}]"#);
        assert_eq!(
            prompts_of(&parse(json.as_bytes(), "").expect("ok")).len(),
            1
        );
    }

    #[test]
    fn deeply_nested_yaml_is_an_error() {
        for depth in [40, 200, 100_000] {
            let flow = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert!(parse(flow.as_bytes(), "application/yaml").is_err());
        }
        let block: String = (0..200)
            .map(|i| format!("{}a:\n", "  ".repeat(i)))
            .collect();
        assert!(parse(block.as_bytes(), "application/yaml").is_err());
    }

    #[test]
    fn yaml_alias_bomb_is_bounded() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let refs = vec![format!("*{}", pair[0]); 9].join(",");
            bomb.push_str(&format!("{}: &{} [{refs}]\n", pair[1], pair[1]));
        }
        let started = Instant::now();
        let err = parse(bomb.as_bytes(), "application/yaml").expect_err("bounded");
        assert!(
            matches!(err, ImportError::TooComplex(_) | ImportError::Syntax { .. }),
            "{err:?}"
        );
        // The same as front matter refuses that one file; as a manifest it fails the zip.
        let md = format!("---\n{bomb}title: x\n---\n\nbody");
        let parsed = parse(md.as_bytes(), "text/markdown").expect("one item");
        assert_eq!(refusals(&parsed).len(), 1);
        let zip = zip_of(&[("library.yaml", bomb.as_bytes()), ("a.md", b"hi")]);
        assert!(parse(&zip, "").is_err());
        assert!(started.elapsed() < Duration::from_secs(10));

        // Small, honest aliases still work.
        let yaml = b"format: promptflow-library\nversion: 1\nexported_at: 2024-05-01T00:00:00Z\nprompts:\n  - title: A\n    content: x\n    tags: &t [shared, tags]\n  - title: B\n    content: y\n    tags: *t\n";
        let parsed = parse(yaml, "").expect("aliases");
        let got = prompts_of(&parsed);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].tags, ["shared", "tags"]);
    }

    #[test]
    fn sniffing_and_declared_types() {
        let sniffed = |bytes: &[u8], ct: &str| detect(bytes, bytes, ct);
        assert_eq!(sniffed(b"PK\x03\x04", "application/json"), Kind::Zip);
        assert_eq!(sniffed(b"PK\x05\x06", ""), Kind::Zip);
        assert_eq!(sniffed(b"  {", ""), Kind::Json);
        assert_eq!(sniffed(b"\n[", "text/plain"), Kind::Json);
        assert_eq!(sniffed(b"---\ntitle: x\n---\nbody", ""), Kind::Markdown);
        assert_eq!(sniffed(b"---\nformat: x\n", ""), Kind::Yaml);
        assert_eq!(
            sniffed(b"format: x", "application/octet-stream"),
            Kind::Yaml
        );
        assert_eq!(sniffed(b"x", "Application/JSON; charset=utf-8"), Kind::Json);
        assert_eq!(sniffed(b"x", "application/vnd.promptflow+json"), Kind::Json);
        assert_eq!(sniffed(b"{", "application/x-yaml"), Kind::Yaml);
        assert_eq!(sniffed(b"x", "text/markdown"), Kind::Markdown);
        assert_eq!(sniffed(b"x", "application/x-zip-compressed"), Kind::Zip);
    }

    // --- Markdown ----------------------------------------------------------

    #[test]
    fn single_markdown_files() {
        let md = b"---\ntitle: Hello\ntags: [a, b]\nfolder: Work/Notes\n---\n\nBody\n";
        let parsed = parse(md, "").expect("import");
        assert_eq!(parsed.source, Source::Markdown);
        let mut hello = prompt("Hello", "Body\n", Some("Work/Notes"));
        hello.tags = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(prompts_of(&parsed), vec![hello]);

        let parsed = parse(b"# My heading\n\nText", "text/markdown").expect("import");
        assert_eq!(
            prompts_of(&parsed),
            vec![prompt("My heading", "# My heading\n\nText", None)]
        );

        let parsed = parse(b"Plain text", "text/markdown").expect("import");
        assert!(refusals(&parsed)[0].2.contains("title: required"));

        let parsed = parse(b"---\r\ntitle: Win\r\n---\r\n\r\nLine1\r\nLine2", "").expect("crlf");
        assert_eq!(
            prompts_of(&parsed),
            vec![prompt("Win", "Line1\r\nLine2", None)]
        );

        let parsed = parse(b"---\ntitle: T\n---\nBody", "").expect("no blank line");
        assert_eq!(prompts_of(&parsed), vec![prompt("T", "Body", None)]);

        let parsed = parse(b"---\ntitle: T\n---\n\n\n---\nrule", "").expect("leading newline");
        assert_eq!(prompts_of(&parsed), vec![prompt("T", "\n---\nrule", None)]);

        let parsed = parse(b"---\n- a\n---\nBody", "text/markdown").expect("one item");
        assert!(
            refusals(&parsed)[0]
                .2
                .contains("front matter: expected a mapping")
        );

        let parsed = parse(b"---\ntitle: [\n---\nBody", "text/markdown").expect("one item");
        assert!(refusals(&parsed)[0].2.starts_with("front matter:"));

        assert_eq!(
            parse(b"---\n---\n", "text/markdown")
                .expect("x")
                .items
                .len(),
            1
        );
        assert_eq!(
            split_front_matter("---\ntitle: x\n---"),
            Some(("title: x\n", ""))
        );
        assert_eq!(split_front_matter("---x\n---\n"), None);
        assert_eq!(split_front_matter("---\nno end"), None);
    }

    // --- zips ----------------------------------------------------------------

    #[test]
    fn hand_made_zip_without_manifest() {
        let zip = zip_of(&[
            ("Notes/Hello.md", b"Hi there"),
            (
                "Notes/Sub/Tagged.markdown",
                b"---\ntags: [x]\nfolder: Ignored\n---\n\nBody",
            ),
            (".DS_Store", b"\x00\x01"),
            ("__MACOSX/Notes/._Hello.md", b"\x00\x05\x16\x07"),
            ("Notes/.hidden.md", b"secret"),
            ("Notes/picture.png", b"\x89PNG"),
        ]);
        let parsed = parse(&zip, "application/zip").expect("import");
        assert!(parsed.folders.is_empty());
        let mut tagged = prompt("Tagged", "Body", Some("Notes/Sub"));
        tagged.tags = vec!["x".to_owned()];
        assert_eq!(
            prompts_of(&parsed),
            vec![prompt("Hello", "Hi there", Some("Notes")), tagged]
        );
    }

    #[test]
    fn zip_of_the_folder_itself_strips_the_top_directory() {
        let lib = sample();
        let inner = to_markdown_zip(&lib).expect("export");
        let mut archive = ZipArchive::new(Cursor::new(inner.as_slice())).expect("zip");
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).expect("entry");
            let name = format!("My Library/{}", file.name().expect("name"));
            if file.is_dir() {
                continue;
            }
            let mut data = Vec::new();
            file.read_to_end(&mut data).expect("read");
            zip.start_file(name, SimpleFileOptions::default())
                .expect("start");
            zip.write_all(&data).expect("write");
        }
        let bytes = zip.finish().expect("finish").into_inner();
        let parsed = parse(&bytes, "").expect("import");
        assert_eq!(parsed.folders, lib.folders);
        assert_eq!(sorted(prompts_of(&parsed)), sorted(lib.prompts));
    }

    #[test]
    fn zip_entries_escaping_the_archive_are_refused() {
        let mut zip = zip_of(&[
            ("zz/evil.md", b"---\ntitle: Evil\n---\n\nx"),
            ("qabs.md", b"abs"),
            ("a/zz/zz/x.md", b"x"),
            ("Cq/drive.md", b"d"),
            ("good.md", b"fine"),
            ("zz/notes.txt", b"ignored"),
        ]);
        replace_all(&mut zip, b"zz/evil.md", b"../evil.md");
        replace_all(&mut zip, b"qabs.md", b"/abs.md");
        replace_all(&mut zip, b"a/zz/zz/x.md", b"a/../../x.md");
        replace_all(&mut zip, b"Cq/drive.md", b"C:/drive.md");
        replace_all(&mut zip, b"zz/notes.txt", b"../notes.txt");
        assert!(zip_names(&zip).contains(&"../evil.md".to_owned()));

        let parsed = parse(&zip, "").expect("import");
        assert_eq!(prompts_of(&parsed), vec![prompt("good", "fine", None)]);
        let refused = refusals(&parsed);
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert_eq!(refused[0].0, 0);
        assert_eq!(refused[0].1.as_deref(), Some("evil"));
        for (_, _, error) in &refused {
            assert!(error.contains("unsafe path"), "{error}");
        }
        assert_eq!(
            safe_parts("a/./b//c.md"),
            Some(vec!["a".into(), "b".into(), "c.md".into()])
        );
        assert_eq!(safe_parts("a\\..\\..\\c.md"), None);
        assert_eq!(safe_parts("x\0.md"), None);
    }

    #[test]
    fn invalid_utf8_file_in_a_zip_is_refused_alone() {
        let zip = zip_of(&[
            ("bad.md", b"---\ntitle: Bad\n---\n\n\xff\xfe oops"),
            ("good.md", b"---\ntitle: Good\n---\n\nfine"),
            ("empty.md", b"---\ntitle: Empty\n---\n\n"),
        ]);
        let parsed = parse(&zip, "").expect("import");
        assert_eq!(prompts_of(&parsed), vec![prompt("Good", "fine", None)]);
        let refused = refusals(&parsed);
        assert_eq!(refused.len(), 2);
        assert_eq!(
            refused[0],
            (
                0,
                Some("bad".to_owned()),
                "bad.md: not UTF-8 text".to_owned()
            )
        );
        assert_eq!(refused[1].0, 2);
        assert_eq!(refused[1].1.as_deref(), Some("Empty"));
        assert!(
            refused[1]
                .2
                .starts_with("empty.md: content: must not be empty")
        );
    }

    #[test]
    fn bad_manifest_fails_the_zip() {
        let zip = zip_of(&[("library.yaml", b"format: [\n"), ("a.md", b"x")]);
        assert!(matches!(parse(&zip, ""), Err(ImportError::Manifest(_))));
        let zip = zip_of(&[("library.yaml", b"format: other\n"), ("a.md", b"x")]);
        assert!(matches!(parse(&zip, ""), Err(ImportError::Manifest(_))));
        let zip = zip_of(&[(
            "library.yaml",
            b"folders: [{path: A, color: 5}, {nopath: 1}, 7]\n",
        )]);
        let parsed = parse(&zip, "").expect("lenient folders");
        assert_eq!(parsed.folders, vec![folder("A", 0)]);
    }

    fn compressed_zip(entries: usize, bytes_each: usize) -> Vec<u8> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(1));
        let chunk = vec![b'a'; 1024 * 1024];
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("bomb0.md", options).expect("start");
        let mut left = bytes_each;
        while left > 0 {
            let n = left.min(chunk.len());
            zip.write_all(&chunk[..n]).expect("write");
            left -= n;
        }
        // Copies reuse the compressed bytes, so many big entries cost one compression.
        for i in 1..entries {
            zip.deep_copy_file("bomb0.md", &format!("bomb{i}.md"))
                .expect("copy");
        }
        zip.finish().expect("finish").into_inner()
    }

    /// A raw deflate stream of `1 + 258 * matches` bytes of 'a', built by hand (one
    /// fixed-Huffman block: a literal, then length-258/distance-1 matches), because
    /// compressing 100 MiB in a debug build takes many seconds.
    fn deflate_of_a(matches: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        let mut put = |value: u64, len: u32, out: &mut Vec<u8>| {
            acc |= value << bits;
            bits += len;
            while bits >= 8 {
                out.push(u8::try_from(acc & 0xFF).expect("byte"));
                acc >>= 8;
                bits -= 8;
            }
        };
        // Huffman codes go most significant bit first.
        let code = |value: u64, len: u32| {
            (0..len).fold(0, |r, i| r | (((value >> i) & 1) << (len - 1 - i)))
        };
        put(0b011, 3, &mut out); // BFINAL = 1, BTYPE = 01 (fixed)
        put(code(0x30 + u64::from(b'a'), 8), 8, &mut out);
        for _ in 0..matches {
            put(code(0b1100_0101, 8), 8, &mut out); // length code 285: 258 bytes
            put(0, 5, &mut out); // distance code 0: distance 1
        }
        put(0, 7, &mut out); // end of block
        put(0, 7, &mut out); // flush the last byte
        out
    }

    /// A one-entry zip around raw deflate data, headers written by hand.
    fn zip_around(name: &str, deflated: &[u8], size: u32) -> Vec<u8> {
        let csize = u32::try_from(deflated.len()).expect("small");
        let name_len = u16::try_from(name.len()).expect("short");
        let mut zip = Vec::new();
        let common = |zip: &mut Vec<u8>| {
            for half in [20u16, 0, 8, 0, 0x21] {
                zip.extend_from_slice(&half.to_le_bytes()); // version, flags, method, time, date
            }
            for word in [0u32, csize, size] {
                zip.extend_from_slice(&word.to_le_bytes()); // crc, sizes
            }
            zip.extend_from_slice(&name_len.to_le_bytes());
            zip.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        zip.extend_from_slice(b"PK\x03\x04");
        common(&mut zip);
        zip.extend_from_slice(name.as_bytes());
        zip.extend_from_slice(deflated);
        let cd_start = u32::try_from(zip.len()).expect("small");
        zip.extend_from_slice(b"PK\x01\x02");
        zip.extend_from_slice(&20u16.to_le_bytes()); // made by
        common(&mut zip);
        zip.extend_from_slice(&[0; 14]); // comment, disk, attributes, local header at 0
        zip.extend_from_slice(name.as_bytes());
        let cd_size = u32::try_from(zip.len()).expect("small") - cd_start;
        zip.extend_from_slice(b"PK\x05\x06");
        zip.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        zip.extend_from_slice(&cd_size.to_le_bytes());
        zip.extend_from_slice(&cd_start.to_le_bytes());
        zip.extend_from_slice(&[0, 0]);
        zip
    }

    #[test]
    fn zip_bomb_is_an_error() {
        let matches = 100 * 1024 * 1024 / 258;
        let size = 1 + 258 * matches;
        let bomb = zip_around(
            "bomb.md",
            &deflate_of_a(matches),
            u32::try_from(size).expect("fits"),
        );
        assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
        let mut archive = ZipArchive::new(Cursor::new(bomb.as_slice())).expect("zip");
        let mut head = vec![0; 1000];
        archive
            .by_index(0)
            .expect("entry")
            .read_exact(&mut head)
            .expect("inflates");
        assert!(head.iter().all(|b| *b == b'a'));
        assert_eq!(
            parse(&bomb, "application/zip"),
            Err(ImportError::TooLarge {
                limit: MAX_UNZIPPED_BYTES
            })
        );
    }

    #[test]
    fn unpacked_bytes_are_counted_while_reading() {
        let zip = compressed_zip(2, 1024 * 1024);
        let mut archive = ZipArchive::new(Cursor::new(zip.as_slice())).expect("zip");
        let mut budget = 1536 * 1024;
        let first = read_entry(&mut archive, 0, &mut budget).expect("within budget");
        assert_eq!(first.map(|d| d.len()), Ok(1024 * 1024));
        assert_eq!(budget, 512 * 1024);
        assert!(matches!(
            read_entry(&mut archive, 1, &mut budget),
            Err(ImportError::TooLarge { .. })
        ));

        // An entry past the per-file cap is refused alone, but all of it is counted.
        let big = usize::try_from(MAX_ENTRY_BYTES).expect("fits") + 1024 * 1024;
        let zip = compressed_zip(1, big);
        let mut archive = ZipArchive::new(Cursor::new(zip.as_slice())).expect("zip");
        let mut budget = MAX_UNZIPPED_BYTES;
        let refused = read_entry(&mut archive, 0, &mut budget).expect("not a bomb");
        assert!(refused.is_err_and(|e| e.starts_with("larger than")));
        assert_eq!(
            budget,
            MAX_UNZIPPED_BYTES - u64::try_from(big).expect("fits")
        );
        let mut budget = MAX_ENTRY_BYTES + 10;
        assert!(matches!(
            read_entry(&mut archive, 0, &mut budget),
            Err(ImportError::TooLarge { .. })
        ));
    }

    #[test]
    fn zip_bomb_with_lying_sizes_is_refused() {
        // Nine 9 MiB entries whose headers claim 100 bytes each.
        let mut bomb = compressed_zip(9, 9 * 1024 * 1024);
        let real = u32::try_from(9 * 1024 * 1024).expect("fits").to_le_bytes();
        let mut patched = 0;
        for i in 0..bomb.len().saturating_sub(30) {
            let offset = match &bomb[i..i + 4] {
                b"PK\x03\x04" => 22,
                b"PK\x01\x02" => 24,
                _ => continue,
            };
            if bomb[i + offset..i + offset + 4] == real {
                bomb[i + offset..i + offset + 4].copy_from_slice(&100u32.to_le_bytes());
                patched += 1;
            }
        }
        assert_eq!(patched, 18);
        match parse(&bomb, "") {
            Err(ImportError::TooLarge { .. }) => {}
            Ok(parsed) => {
                assert!(prompts_of(&parsed).is_empty());
                assert_eq!(refusals(&parsed).len(), 9);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_and_corrupted_zips_never_panic() {
        let bytes = to_markdown_zip(&sample()).expect("export");
        let step = (bytes.len() / 300).max(1);
        for cut in (0..bytes.len())
            .step_by(step)
            .chain(bytes.len() - 30..bytes.len())
        {
            let _ = parse(&bytes[..cut], "application/zip");
            let _ = parse(&bytes[..cut], "");
        }
        for at in (0..bytes.len()).step_by(step) {
            let mut broken = bytes.clone();
            broken[at] ^= 0x5A;
            let _ = parse(&broken, "");
        }
        assert!(matches!(
            parse(&bytes[..bytes.len() / 2], ""),
            Err(ImportError::Zip(_))
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let lib = sample();
        let samples = [
            to_json(&lib).expect("json"),
            to_yaml(&lib).expect("yaml"),
            markdown_file(&lib.prompts[0]).expect("md").into_bytes(),
        ];
        let types = [
            "",
            "application/json",
            "application/yaml",
            "text/markdown",
            "application/zip",
        ];
        for round in 0..600 {
            let mut bytes = samples[round % samples.len()].clone();
            for _ in 0..(next() % 8) {
                let len = bytes.len().max(1);
                let at = usize::try_from(next()).unwrap_or(0) % len;
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = u8::try_from(next() % 256).unwrap_or(0),
                    1 => bytes.truncate(at),
                    _ => {
                        let noise = b"{[:-*&!\"'\n#";
                        bytes.insert(at.min(bytes.len()), noise[at % noise.len()]);
                    }
                }
            }
            let _ = parse(&bytes, types[round % types.len()]);
            let noise: Vec<u8> = (0..next() % 64)
                .map(|_| u8::try_from(next() % 256).unwrap_or(0))
                .collect();
            let _ = parse(&noise, types[round % types.len()]);
        }
    }
}

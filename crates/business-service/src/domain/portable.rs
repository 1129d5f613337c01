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
//!   characters and slash look-alikes become `_` (a run becomes one `_`);
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
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
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
/// Largest YAML or Markdown document: the YAML parser holds every event in memory
/// (tens of bytes per scalar), so YAML gets a tighter bound than JSON.
pub const MAX_YAML_BYTES: usize = 16 * 1024 * 1024;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONTENT_CHARS: usize = 100_000;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 64;

/// Largest single zip entry read; any valid prompt file is far smaller.
const MAX_ENTRY_BYTES: u64 = 8 * 1024 * 1024;
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
        "application/zip" | "application/x-zip-compressed" | "application/x-zip"
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
            Some(Value::Object(mut page)) => {
                if page.contains_key("content") && !page.contains_key("title") {
                    item_list(page.remove("content"), "data.content")?
                } else {
                    vec![Value::Object(page)]
                }
            }
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
    File { zip_index: usize, name: String, parts: Vec<String> },
    Refused { name: String, error: &'static str },
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
        let Some((file, dirs)) = parts.split_last() else {
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
        let rest = io::copy(&mut file.by_ref().take(budget.saturating_add(1)), &mut io::sink())
            .unwrap_or(0);
        if rest > *budget {
            return Err(bomb);
        }
        *budget -= rest;
        return Ok(Err(format!("larger than {MAX_ENTRY_BYTES} bytes")));
    }
    Ok(Ok(data))
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
    let folder = f
        .text(&["folder"])
        .and_then(|p| normalize_folder_path(&p));

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
            let error = format!("{name}: expected a whole number ≥ 0, found {}", shown_value(value));
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
                    self.fail(format!("{name}[{i}]: expected text, found {}", kind_of(other)));
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
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
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
        format!("{:?}", format!("{}…", s.chars().take(MAX).collect::<String>()))
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

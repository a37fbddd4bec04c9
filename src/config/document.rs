//! [`ConfigDocument`]: a config as loaded and merged, before validation.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::error::{ConfigError, Location};
use super::load;
use super::merge;
use super::node::{Entry, Node, Value};
use super::paths;
use super::schema::VmConfig;
use super::validate;

/// Label of values that come from the database.
pub const STORED_LABEL: &str = "stored config";

/// A merged config tree that remembers where every value came from.
#[derive(Debug, Clone)]
pub struct ConfigDocument {
    root: Node,
    sources: Vec<PathBuf>,
}

impl Default for ConfigDocument {
    fn default() -> Self {
        ConfigDocument::empty()
    }
}

impl ConfigDocument {
    /// A document without keys (what `apply` starts from for an empty VM).
    pub fn empty() -> Self {
        ConfigDocument {
            root: Node::new(Value::Map(Vec::new()), Location::label("configuration")),
            sources: Vec::new(),
        }
    }

    /// Loads each file, resolves its relative paths against that file's
    /// canonical directory, and merges them left to right (2.6). An empty
    /// list gives an empty document.
    pub fn load_files(files: &[PathBuf]) -> Result<ConfigDocument, ConfigError> {
        let mut doc = ConfigDocument::empty();
        for f in files {
            doc.merge(ConfigDocument::load_file(f)?);
        }
        Ok(doc)
    }

    /// Loads one file (see [`ConfigDocument::load_files`]).
    pub fn load_file(file: &Path) -> Result<ConfigDocument, ConfigError> {
        let shown = match std::env::current_dir() {
            Ok(cwd) if file.is_relative() => paths::normalize(&cwd.join(file)),
            _ => file.to_path_buf(),
        };
        let canonical = std::fs::canonicalize(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ConfigError::NotFound {
                path: shown.display().to_string(),
            },
            _ => ConfigError::Io {
                path: shown.display().to_string(),
                message: format!("cannot read: {e}"),
            },
        })?;
        let source = canonical.display().to_string();
        let mut root = load::load_file(&canonical, &source)?;
        let dir = canonical.parent().unwrap_or(Path::new("/"));
        paths::resolve_relative_paths(&mut root, dir);
        Ok(ConfigDocument {
            root,
            sources: vec![canonical],
        })
    }

    /// Parses YAML text as if it were a file named `source` in `dir`
    /// (for stdin and tests).
    pub fn from_yaml_str(
        text: &str,
        source: &str,
        dir: &Path,
    ) -> Result<ConfigDocument, ConfigError> {
        let mut root = load::parse_str(text, source)?;
        paths::resolve_relative_paths(&mut root, dir);
        Ok(ConfigDocument {
            root,
            sources: Vec::new(),
        })
    }

    /// Rebuilds a document from [`ConfigDocument::to_json`] output kept in
    /// the database. `null` (a VM added with `--empty`) gives an empty one.
    pub fn from_stored(value: &Json) -> Result<ConfigDocument, ConfigError> {
        Self::from_json(value, STORED_LABEL)
    }

    /// A document from a JSON object (what `maqet launch` composes); every
    /// value's location is `label`.
    pub fn from_json(value: &Json, label: &str) -> Result<ConfigDocument, ConfigError> {
        let loc = Location::label(label);
        match value {
            Json::Null => Ok(ConfigDocument::empty()),
            Json::Object(_) => Ok(ConfigDocument {
                root: Node::from_json(value, &loc),
                sources: Vec::new(),
            }),
            _ => Err(ConfigError::invalid(
                &loc,
                "expected a JSON object; the database entry is damaged, run 'maqet apply' with the config files again",
            )),
        }
    }

    /// Merges `later` on top of this document by the rules of 2.6 (see
    /// [`super::merge`]); its sources are appended.
    pub fn merge(&mut self, later: ConfigDocument) {
        merge::merge_root(&mut self.root, later.root);
        for s in later.sources {
            if !self.sources.contains(&s) {
                self.sources.push(s);
            }
        }
    }

    /// Overrides one top-level key (e.g. `("memory", "2G", "--memory")`);
    /// the key keeps its position, or goes last when new. A relative
    /// `binary` path is made absolute against the current directory, since
    /// QEMU is started elsewhere.
    pub fn set(&mut self, key: &str, value: Json, label: &str) {
        let loc = Location::label(label);
        let mut node = Node::from_json(&value, &loc);
        if key == "binary" {
            if let Value::Str(s) = &mut node.value {
                if s.contains('/') && Path::new(s.as_str()).is_relative() {
                    if let Ok(cwd) = std::env::current_dir() {
                        *s = paths::normalize(&cwd.join(s.as_str()))
                            .to_string_lossy()
                            .into_owned();
                    }
                }
            }
        }
        let Value::Map(entries) = &mut self.root.value else {
            return;
        };
        match entries.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = node,
            None => entries.push(Entry {
                key: key.to_string(),
                key_loc: loc,
                value: node,
            }),
        }
    }

    /// `--set KEY=VALUE`: `value` is YAML (`2G`, `4`, `true`, `[a, b]`,
    /// `{k: v}`); `key` may be dotted to reach into mappings, with numeric
    /// parts indexing lists (`storage.0.size`). Missing mappings on the way
    /// are created; the value is checked later, by validation, under the
    /// label `--set KEY`.
    pub fn set_path(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set_yaml(key, value, &format!("--set {key}"))
    }

    /// Like [`ConfigDocument::set_path`], with `label` as the values'
    /// location (e.g. `--memory`).
    pub fn set_yaml(&mut self, key: &str, value: &str, label: &str) -> Result<(), ConfigError> {
        check_set_bounds(key, value)?;
        let label = Location::label(label);
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::invalid(
                &label,
                "empty key part; write KEY=VALUE with a dotted KEY such as resources.memory_max",
            ));
        }
        if parts[0] == "name" {
            return Err(ConfigError::invalid(
                &label,
                "a VM's name cannot be changed by apply; `maqet config VM > f.yaml`, then `maqet add --name NEW f.yaml`",
            ));
        }
        let mut node = load::parse_value(value, &label.source).map_err(|e| match e {
            ConfigError::Yaml { message, .. } => {
                ConfigError::invalid(&label, format!("'{value}' is not a YAML value: {message}"))
            }
            other => other,
        })?;
        relabel(&mut node, &label);
        let mut cur = &mut self.root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let shown = parts[..=i].join(".");
            let type_name = cur.type_name();
            match &mut cur.value {
                Value::Map(entries) => {
                    let pos = match entries.iter().position(|e| e.key == *part) {
                        Some(p) => p,
                        None => {
                            entries.push(Entry {
                                key: part.to_string(),
                                key_loc: label.clone(),
                                value: Node::new(Value::Map(Vec::new()), label.clone()),
                            });
                            entries.len() - 1
                        }
                    };
                    if last {
                        entries[pos].value = node;
                        return Ok(());
                    }
                    cur = &mut entries[pos].value;
                    if cur.is_null() {
                        *cur = Node::new(Value::Map(Vec::new()), label.clone());
                    }
                }
                Value::Seq(items) => {
                    let len = items.len();
                    let idx = part.parse::<usize>().ok().filter(|i| *i < len).ok_or_else(|| {
                        ConfigError::invalid(
                            &label,
                            format!("'{shown}': '{}' is a list of {len} items; use an index from 0 to {}", parts[..i].join("."), len.saturating_sub(1)),
                        )
                    })?;
                    if last {
                        items[idx] = node;
                        return Ok(());
                    }
                    cur = &mut items[idx];
                }
                _ => {
                    return Err(ConfigError::invalid(
                        &label,
                        format!(
                            "'{}' is {}, not a mapping or list, so '{shown}' cannot be set",
                            parts[..i].join("."),
                            type_name
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The disks whose `base:` is `image:REF`: (index, REF, where it is written).
    pub fn image_bases(&self) -> Vec<(usize, String, Location)> {
        let Some(items) = self.root.get("storage").and_then(Node::as_seq) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let base = item.get("base")?;
                let r = base.as_str()?.strip_prefix(super::IMAGE_PREFIX)?;
                Some((i, r.trim().to_string(), base.loc.clone()))
            })
            .collect()
    }

    /// Field `key` of disk `index`, as JSON.
    pub fn storage_field(&self, index: usize, key: &str) -> Option<Json> {
        let items = self.root.get("storage")?.as_seq()?;
        items.get(index)?.get(key).map(Node::to_json)
    }

    /// Sets field `key` of disk `index` (which must exist) to `value`.
    pub fn set_storage_field(&mut self, index: usize, key: &str, value: Json, label: &str) {
        let loc = Location::label(label);
        let Some(Entry {
            value: Node {
                value: Value::Seq(items),
                ..
            },
            ..
        }) = self.entry_mut("storage")
        else {
            return;
        };
        let Some(Node {
            value: Value::Map(fields),
            ..
        }) = items.get_mut(index)
        else {
            return;
        };
        let node = Node::from_json(&value, &loc);
        match fields.iter_mut().find(|e| e.key == key) {
            Some(e) => e.value = node,
            None => fields.push(Entry {
                key: key.to_string(),
                key_loc: loc,
                value: node,
            }),
        }
    }

    /// Whether an `arguments` item sets option `key` (`kernel`, `append`).
    pub fn has_argument(&self, key: &str) -> bool {
        self.root
            .get("arguments")
            .and_then(Node::as_seq)
            .is_some_and(|items| {
                items.iter().any(|item| match &item.value {
                    Value::Map(m) => m.first().is_some_and(|e| e.key == key),
                    Value::Str(s) => s == key,
                    _ => false,
                })
            })
    }

    /// Appends an item to `arguments` (made when missing).
    pub fn push_argument(&mut self, item: Json, label: &str) {
        let loc = Location::label(label);
        let node = Node::from_json(&item, &loc);
        let is_list = self
            .root
            .get("arguments")
            .is_some_and(|n| n.as_seq().is_some());
        if !is_list {
            self.set("arguments", Json::Array(Vec::new()), label);
        }
        if let Some(Entry {
            value: Node {
                value: Value::Seq(items),
                ..
            },
            ..
        }) = self.entry_mut("arguments")
        {
            items.push(node);
        }
    }

    fn entry_mut(&mut self, key: &str) -> Option<&mut Entry> {
        match &mut self.root.value {
            Value::Map(entries) => entries.iter_mut().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The stored config as YAML that `maqet add` reads back to the same
    /// config; `name` (when given) comes first.
    pub fn to_yaml(&self, name: Option<&str>) -> String {
        let mut j = serde_json::Map::new();
        if let Some(n) = name {
            j.insert("name".into(), Json::String(n.to_string()));
        }
        if let Json::Object(m) = self.to_json() {
            j.extend(m);
        }
        super::emit::to_yaml(&Json::Object(j))
    }

    /// The merged `name:` when it is a string.
    pub fn name(&self) -> Option<&str> {
        self.root.get("name")?.as_str()
    }

    /// Where `name:` was set, to point at it when the name is rejected.
    pub fn name_location(&self) -> Option<&Location> {
        self.root.get("name").map(|n| &n.loc)
    }

    /// Absolute canonical paths of all merged files, in merge order.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        match self.root.as_map() {
            Some(m) => m.is_empty(),
            None => true,
        }
    }

    /// One top-level value as JSON.
    pub fn get(&self, key: &str) -> Option<Json> {
        self.root.get(key).map(Node::to_json)
    }

    /// Runs every check and returns the typed config, or the first error
    /// in document order (see [`ConfigDocument::validate_all`]).
    pub fn validate(&self) -> Result<VmConfig, ConfigError> {
        self.validate_all()
            .map_err(|mut errors| errors.swap_remove(0))
    }

    /// Like [`ConfigDocument::validate`], but returns every error found
    /// (never an empty list).
    pub fn validate_all(&self) -> Result<VmConfig, Vec<ConfigError>> {
        let default_loc = Location::label(
            self.sources
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "configuration".to_string()),
        );
        // Each file is bounded as it is read; what several files and
        // `--set` values merge into is bounded here, before it is stored.
        let bytes = self.root.bytes();
        if bytes > super::load::MAX_EXPANDED_BYTES {
            return Err(vec![ConfigError::invalid(
                &default_loc,
                format!(
                    "the merged configuration holds {bytes} bytes of keys and values; at most {} MiB are stored",
                    super::load::MAX_EXPANDED_BYTES >> 20
                ),
            )]);
        }
        validate::validate(&self.root, &default_loc)
    }

    /// The merged config for storage: paths resolved, `name` removed (the
    /// VM's name lives in its own column). `from_stored` round-trips it.
    pub fn to_json(&self) -> Json {
        let mut j = self.root.to_json();
        if let Json::Object(m) = &mut j {
            m.shift_remove("name");
        }
        j
    }
}

/// Longest `--set` key, deepest key path and largest value accepted. No
/// config key is deeper than a few levels; the bounds keep a hostile
/// argument from costing gigabytes (every level copies the label).
pub(crate) const MAX_SET_KEY_LEN: usize = 256;
pub(crate) const MAX_SET_KEY_PARTS: usize = 16;
pub(crate) const MAX_SET_VALUE_LEN: usize = 64 * 1024;

fn check_set_bounds(key: &str, value: &str) -> Result<(), ConfigError> {
    let short: String = key.chars().take(40).collect();
    let label = Location::label(format!("--set {short}…"));
    if key.len() > MAX_SET_KEY_LEN {
        return Err(ConfigError::invalid(
            &label,
            format!(
                "the key is {} bytes long; at most {MAX_SET_KEY_LEN} are accepted",
                key.len()
            ),
        ));
    }
    let parts = key.split('.').count();
    if parts > MAX_SET_KEY_PARTS {
        return Err(ConfigError::invalid(
            &label,
            format!(
                "the key has {parts} dotted parts; at most {MAX_SET_KEY_PARTS} levels are accepted"
            ),
        ));
    }
    if value.len() > MAX_SET_VALUE_LEN {
        return Err(ConfigError::invalid(
            &Location::label(format!("--set {key}")),
            format!("the value is {} bytes long; at most {MAX_SET_VALUE_LEN} are accepted (put large values in a config file)", value.len()),
        ));
    }
    Ok(())
}

/// Gives every node of a `--set` value the flag's label as its location.
fn relabel(node: &mut Node, label: &Location) {
    node.loc = label.clone();
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| relabel(n, label)),
        Value::Map(entries) => {
            for e in entries {
                e.key_loc = label.clone();
                relabel(&mut e.value, label);
            }
        }
        _ => {}
    }
}

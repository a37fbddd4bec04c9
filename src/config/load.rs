//! Reading one YAML file into a marked tree.
//!
//! yaml-rust2's event parser is used instead of its `Yaml` loader because the
//! loader drops positions, silently keeps the last of duplicate keys and
//! types scalars by YAML 1.2 rules.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{ConfigError, Location};
use super::node::{self, Entry, Node, Value};

/// Largest config file accepted (the original's limit).
pub(crate) const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Nesting deeper than this is certainly a mistake and would risk the stack.
const MAX_DEPTH: usize = 64;
/// Bound on nodes after alias expansion ("billion laughs").
const MAX_NODES: usize = 200_000;
/// Bound on the text (keys and values) after alias expansion: as much as a
/// config file may hold. Counting values alone let a few aliases of one
/// large string expand to gigabytes, which `add` then stored.
pub(crate) const MAX_EXPANDED_BYTES: usize = MAX_FILE_SIZE as usize;

const YAML_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Reads `path` (at most [`MAX_FILE_SIZE`]) and parses it; `source` is the
/// name used in locations.
pub fn load_file(path: &Path, source: &str) -> Result<Node, ConfigError> {
    let io_err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: source.to_string(),
        },
        _ => ConfigError::Io {
            path: source.to_string(),
            message: format!("cannot read: {e}"),
        },
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(ConfigError::Io {
            path: source.to_string(),
            message: "is a directory, not a config file".into(),
        });
    }
    let mut bytes = Vec::new();
    // Read one byte past the limit so growth after the metadata call is caught.
    // Opened without blocking: a FIFO nobody writes to reads as empty.
    maqet_base::files::open_nonblocking(path)
        .map_err(io_err)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(ConfigError::Io {
            path: source.to_string(),
            message: "file is larger than 1 MiB; a VM config is never that big".into(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Io {
        path: source.to_string(),
        message: format!(
            "not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    parse_str(&text, source)
}

/// Parses one YAML document of any shape (e.g. a `--set` value).
pub(crate) fn parse_value(text: &str, source: &str) -> Result<Node, ConfigError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        source,
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
    };
    b.document()
}

/// Parses one YAML document whose top level must be a mapping.
pub fn parse_str(text: &str, source: &str) -> Result<Node, ConfigError> {
    let root = parse_value(text, source)?;
    if root.as_map().is_none() {
        let what = if root.is_null() {
            "the file is empty".to_string()
        } else {
            format!("found {}", root.type_name())
        };
        return Err(ConfigError::invalid(
            &root.loc,
            format!("the configuration must be a YAML mapping of keys to values ({what})"),
        ));
    }
    Ok(root)
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    source: &'a str,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    bytes: usize,
}

impl Builder<'_> {
    fn loc(&self, m: &Marker) -> Location {
        // yaml-rust2 columns are 0-based; editors count from 1.
        Location::new(self.source, m.line(), m.col() + 1)
    }

    fn next(&mut self) -> Result<(Event, Marker), ConfigError> {
        self.parser.next_token().map_err(|e| ConfigError::Yaml {
            location: Location::new(self.source, e.marker().line(), e.marker().col() + 1),
            message: e.info().to_string(),
        })
    }

    fn document(&mut self) -> Result<Node, ConfigError> {
        let mut root: Option<Node> = None;
        loop {
            let (ev, mark) = self.next()?;
            match ev {
                Event::StreamStart | Event::Nothing => {}
                Event::DocumentStart => {
                    if root.is_some() {
                        return Err(ConfigError::invalid(
                            &self.loc(&mark),
                            "a second YAML document ('---') starts here; put the whole VM config in one document",
                        ));
                    }
                    let (ev, mark) = self.next()?;
                    root = Some(self.node(ev, mark, 0)?);
                }
                Event::DocumentEnd => {}
                Event::StreamEnd => {
                    return Ok(root.unwrap_or_else(|| {
                        Node::new(Value::Null, Location::new(self.source, 1, 1))
                    }))
                }
                other => {
                    return Err(ConfigError::invalid(
                        &self.loc(&mark),
                        format!("unexpected YAML event {other:?}"),
                    ))
                }
            }
        }
    }

    /// Counts `nodes` more values and `bytes` more text, before anything
    /// is copied: an alias is counted at its full size where it is used.
    fn count(&mut self, nodes: usize, bytes: usize, loc: &Location) -> Result<(), ConfigError> {
        self.nodes += nodes;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(ConfigError::invalid(
                loc,
                format!("the document expands to more than {MAX_NODES} values (aliases nested too deeply?)"),
            ));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(ConfigError::invalid(
                loc,
                format!(
                    "the document expands to more than {} MiB of keys and values (aliases of large values?); a VM config is never that big",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event, mark: Marker, depth: usize) -> Result<Node, ConfigError> {
        let loc = self.loc(&mark);
        if depth > MAX_DEPTH {
            return Err(ConfigError::invalid(
                &loc,
                format!("values are nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.count(1, 0, &loc)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(0, text.len(), &loc)?;
                (Node::new(scalar(&text, style, tag, &loc)?, loc), anchor)
            }
            Event::Alias(id) => {
                let unknown = || ConfigError::invalid(&loc, "alias refers to an unknown anchor");
                let anchored = self.anchors.get(&id).ok_or_else(unknown)?;
                let (nodes, bytes) = (anchored.size(), anchored.bytes());
                // Counted before the copy is made.
                self.count(nodes, bytes, &loc)?;
                return self.anchors.get(&id).cloned().ok_or_else(unknown);
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, m) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(ev, m, depth + 1)?);
                }
                (Node::new(Value::Seq(items), loc), anchor)
            }
            Event::MappingStart(anchor, _) => (self.mapping(loc, depth)?, anchor),
            other => {
                return Err(ConfigError::invalid(
                    &loc,
                    format!("unexpected YAML event {other:?}"),
                ))
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn mapping(&mut self, loc: Location, depth: usize) -> Result<Node, ConfigError> {
        let mut explicit: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, Location> = HashMap::new();
        // Entries pulled in by YAML 1.1 merge keys (`<<: *base`).
        let mut merged: Vec<Entry> = Vec::new();
        loop {
            let (ev, m) = self.next()?;
            if ev == Event::MappingEnd {
                break;
            }
            let key_loc = self.loc(&m);
            let is_merge_key =
                matches!(&ev, Event::Scalar(t, TScalarStyle::Plain, _, None) if t == "<<");
            let key = match ev {
                Event::Scalar(text, ..) => {
                    self.count(0, text.len(), &key_loc)?;
                    text
                }
                Event::Alias(_) => {
                    let n = self.node(ev, m, depth + 1)?;
                    n.scalar_text().ok_or_else(|| {
                        ConfigError::invalid(&key_loc, "a mapping key must be a plain value")
                    })?
                }
                _ => {
                    return Err(ConfigError::invalid(
                        &key_loc,
                        "a mapping key must be a plain value, not a list or mapping",
                    ))
                }
            };
            let (ev, m) = self.next()?;
            let mut value = self.node(ev, m, depth + 1)?;
            if value.is_null() && value.loc.line != key_loc.line {
                // An empty value is reported at the next line; point at its key.
                value.loc = key_loc.clone();
            }
            if is_merge_key {
                self.merge_key(&value, &mut merged)?;
                continue;
            }
            if let Some(first) = seen.get(&key) {
                return Err(ConfigError::invalid(
                    &key_loc,
                    format!(
                        "duplicate key '{key}' (first given at line {}); remove one of them",
                        first.line
                    ),
                ));
            }
            seen.insert(key.clone(), key_loc.clone());
            explicit.push(Entry {
                key,
                key_loc,
                value,
            });
        }
        // A block mapping's start marker can lie after its first key; the
        // key is where the user looks for it.
        let loc = match explicit.first() {
            Some(first) if (first.key_loc.line, first.key_loc.column) < (loc.line, loc.column) => {
                first.key_loc.clone()
            }
            _ => loc,
        };
        // Merged keys come first and explicit keys override them in place,
        // as in the original's loader.
        for e in explicit {
            match merged.iter_mut().find(|x| x.key == e.key) {
                Some(slot) => *slot = e,
                None => merged.push(e),
            }
        }
        Ok(Node::new(Value::Map(merged), loc))
    }

    fn merge_key(&mut self, value: &Node, merged: &mut Vec<Entry>) -> Result<(), ConfigError> {
        let sources: Vec<&Node> = match &value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => items.iter().collect(),
            _ => vec![],
        };
        if sources.is_empty() || sources.iter().any(|n| n.as_map().is_none()) {
            return Err(ConfigError::invalid(
                &value.loc,
                "a merge key ('<<') needs a mapping or a list of mappings",
            ));
        }
        for src in sources {
            for e in src.as_map().unwrap_or_default() {
                // Earlier merge sources take precedence over later ones.
                if !merged.iter().any(|x| x.key == e.key) {
                    merged.push(e.clone());
                }
            }
        }
        Ok(())
    }
}

/// Types one scalar: quoted and block scalars are strings; tags force a type.
fn scalar(
    text: &str,
    style: TScalarStyle,
    tag: Option<Tag>,
    loc: &Location,
) -> Result<Value, ConfigError> {
    if let Some(tag) = tag {
        if tag.handle != YAML_TAG_PREFIX {
            // `!` alone is the non-specific tag: a plain string.
            if tag.handle == "!" && tag.suffix.is_empty() {
                return Ok(Value::Str(text.to_string()));
            }
            return Err(ConfigError::invalid(
                loc,
                format!(
                    "unsupported YAML tag '{}{}'; remove it",
                    tag.handle, tag.suffix
                ),
            ));
        }
        let bad = |what: &str| {
            ConfigError::invalid(loc, format!("'{text}' is not a valid {what} for its !!tag"))
        };
        return match tag.suffix.as_str() {
            "str" => Ok(Value::Str(text.to_string())),
            "bool" => node::parse_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| bad("boolean")),
            "int" => match node::parse_int(text) {
                Some(v @ Value::Int(_)) => Ok(v),
                _ => Err(bad("integer")),
            },
            "float" => node::parse_float(text)
                .or_else(|| match node::parse_int(text) {
                    Some(Value::Int(i)) => Some(i as f64),
                    _ => None,
                })
                .map(Value::Float)
                .ok_or_else(|| bad("number")),
            "null" if node::is_null(text) => Ok(Value::Null),
            "null" => Err(bad("null")),
            other => Err(ConfigError::invalid(
                loc,
                format!("unsupported YAML tag '!!{other}'; remove it"),
            )),
        };
    }
    Ok(match style {
        TScalarStyle::Plain => node::resolve_plain(text),
        _ => Value::Str(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Node, ConfigError> {
        parse_str(s, "t.yaml")
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn positions_are_one_based() {
        let n = parse("a: 1\nb:\n  - x\n  - {k: v}\n").unwrap();
        let m = n.as_map().unwrap();
        assert_eq!(m[0].key_loc, Location::new("t.yaml", 1, 1));
        assert_eq!(m[0].value.loc, Location::new("t.yaml", 1, 4));
        assert_eq!(m[1].key_loc, Location::new("t.yaml", 2, 1));
        let seq = m[1].value.as_seq().unwrap();
        assert_eq!(seq[0].loc, Location::new("t.yaml", 3, 5));
        assert_eq!(seq[1].as_map().unwrap()[0].key_loc.line, 4);
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let n = parse("a: \"on\"\nb: on\nc: '2'\nd: 2\ne: !!str yes\nf: |\n  x\n").unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Str("on".into()));
        assert_eq!(n.get("b").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("c").unwrap().value, Value::Str("2".into()));
        assert_eq!(n.get("d").unwrap().value, Value::Int(2));
        assert_eq!(n.get("e").unwrap().value, Value::Str("yes".into()));
        assert_eq!(n.get("f").unwrap().value, Value::Str("x\n".into()));
    }

    #[test]
    fn keys_stay_text() {
        let n = parse("on: 1\n2: b\n").unwrap();
        let keys: Vec<_> = n.as_map().unwrap().iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, ["on", "2"]);
    }

    #[test]
    fn empty_value_points_at_its_key() {
        let n = parse("a:\nb: 1\n").unwrap();
        assert_eq!(n.get("a").unwrap().loc, Location::new("t.yaml", 1, 1));
        assert!(n.get("a").unwrap().is_null());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        assert_eq!(
            err("memory: 1G\ncpu: 1\nmemory: 2G\n"),
            "t.yaml:3:1: duplicate key 'memory' (first given at line 1); remove one of them"
        );
        assert!(err("a:\n  x: 1\n  x: 2\n").contains("t.yaml:3:3: duplicate key 'x'"));
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        assert!(err("- a\n").contains("must be a YAML mapping"));
        assert!(err("").contains("the file is empty"));
        assert!(err("# only a comment\n").contains("the file is empty"));
        assert!(err("hello\n").contains("found a string"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err("a: [1\nb: 2\n");
        assert!(e.starts_with("t.yaml:2:"), "{e}");
        assert!(e.contains("invalid YAML: "), "{e}");
    }

    #[test]
    fn second_document_is_rejected() {
        assert!(err("a: 1\n---\nb: 2\n").contains("second YAML document"));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n  z: 4\nc: *b\n").unwrap();
        let other = n.get("other").unwrap().as_map().unwrap();
        let kv: Vec<_> = other
            .iter()
            .map(|e| (e.key.clone(), e.value.value.clone()))
            .collect();
        assert_eq!(
            kv,
            [
                ("x".to_string(), Value::Int(1)),
                ("y".to_string(), Value::Int(3)),
                ("z".to_string(), Value::Int(4))
            ]
        );
        assert_eq!(n.get("c").unwrap().get("y").unwrap().value, Value::Int(2));
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(err(&s).contains("expands to more than"));
    }

    #[test]
    fn tags() {
        let n = parse("a: !!int 12\nb: !!float 1\nc: !!null ~\n").unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Int(12));
        assert_eq!(n.get("b").unwrap().value, Value::Float(1.0));
        assert!(n.get("c").unwrap().is_null());
        assert!(err("a: !!int x\n").contains("not a valid integer"));
        assert!(err("a: !foo x\n").contains("unsupported YAML tag"));
    }

    #[test]
    fn file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load_file(&missing, "/x/nope.yaml").unwrap_err();
        assert_eq!(e.to_string(), "/x/nope.yaml: file not found");
        let e = load_file(dir.path(), "d").unwrap_err();
        assert!(e.to_string().contains("is a directory"));
        let big = dir.path().join("big.yaml");
        fs::write(&big, format!("a: \"{}\"\n", "x".repeat(1024 * 1024))).unwrap();
        assert!(load_file(&big, "big")
            .unwrap_err()
            .to_string()
            .contains("larger than 1 MiB"));
        let bin = dir.path().join("bin.yaml");
        fs::write(&bin, b"a: \xff\n").unwrap();
        assert!(load_file(&bin, "bin")
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }
}

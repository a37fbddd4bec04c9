//! A disk given on the command line (`maqet storage attach VM SPEC`):
//! `key=value` pairs separated by commas, with the keys of a `storage:`
//! disk entry (`name=data,size=1G`, `file=/srv/x.qcow2,interface=scsi`).
//! A `,,` is a literal comma, as in QEMU option strings. The result is the
//! entry as the config would hold it; values are checked by the config's
//! own validation, so a SPEC and a YAML entry fail alike.

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::paths::normalize;
use maqet_base::suggest;

/// The keys a SPEC takes: a `storage:` disk entry's.
pub const SPEC_KEYS: &[&str] = super::storage::DISK_ENTRY_FIELDS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("disk spec '{spec}': {problem}")]
pub struct SpecError {
    pub spec: String,
    /// Names the key at fault when there is one.
    pub problem: String,
}

/// Parses `spec`; relative `file=` and `base=` paths are made absolute
/// against `cwd` (like paths in a config file against its directory);
/// `backing_file=` stays as written (relative to the overlay, as in YAML).
pub fn parse_disk_spec(spec: &str, cwd: &Path) -> Result<Map<String, Json>, SpecError> {
    let err = |problem: String| SpecError {
        spec: spec.to_string(),
        problem,
    };
    if spec.trim().is_empty() {
        return Err(err(
            "empty; write KEY=VALUE pairs such as name=data,size=1G".into(),
        ));
    }
    let mut out = Map::new();
    for part in maqet_base::qemu_opts::split_unescaped(spec) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(err(format!(
                "'{part}' is not KEY=VALUE (keys: {})",
                SPEC_KEYS.join(", ")
            )));
        };
        let key = key.trim();
        if !SPEC_KEYS.contains(&key) {
            let hint = match key {
                "format" => " (the config key is 'type': type=qcow2 or type=raw)".to_string(),
                "if" => " (the config key is 'interface')".to_string(),
                "path" => " (a disk image's location is 'file')".to_string(),
                _ => suggest::hint(key, SPEC_KEYS),
            };
            return Err(err(format!("unknown key '{key}'{hint}")));
        }
        if value.is_empty() {
            return Err(err(format!("key '{key}' has no value")));
        }
        if out.contains_key(key) {
            return Err(err(format!("key '{key}' is given twice")));
        }
        let v = match key {
            "readonly" => Json::Bool(parse_bool(value).ok_or_else(|| {
                err(format!(
                    "key 'readonly': expected true or false (or on/off, yes/no), found '{value}'"
                ))
            })?),
            "type" if value == "virtfs" => {
                return Err(err(
                    "key 'type': attach adds disk images (qcow2 or raw); add a virtfs share with `maqet apply`".into(),
                ))
            }
            "file" | "base" => {
                let p = Path::new(value);
                let abs = if p.is_absolute() {
                    normalize(p)
                } else {
                    normalize(&cwd.join(p))
                };
                Json::String(abs.to_string_lossy().into_owned())
            }
            _ => Json::String(value.to_string()),
        };
        out.insert(key.to_string(), v);
    }
    Ok(out)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<Json, String> {
        parse_disk_spec(s, Path::new("/home/u"))
            .map(Json::Object)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_config_keys() {
        assert_eq!(
            parse("name=data,size=1G").unwrap(),
            json!({"name": "data", "size": "1G"})
        );
        assert_eq!(
            parse("file=img/x,,y.qcow2,interface=scsi,readonly=on,type=qcow2").unwrap(),
            json!({"file": "/home/u/img/x,y.qcow2", "interface": "scsi", "readonly": true, "type": "qcow2"})
        );
        assert_eq!(
            parse("name=o,base=../b.qcow2,sha256=AB,backing_format=raw,readonly=no").unwrap(),
            json!({"name": "o", "base": "/home/b.qcow2", "sha256": "AB", "backing_format": "raw", "readonly": false})
        );
        // backing_file is relative to the overlay, as in a config file.
        assert_eq!(
            parse("name=o,backing_file=b.qcow2").unwrap()["backing_file"],
            "b.qcow2"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("name=data,sise=1G").unwrap_err();
        assert!(
            e.contains("unknown key 'sise'") && e.contains("size"),
            "{e}"
        );
        let e = parse("format=raw").unwrap_err();
        assert!(e.contains("'format'") && e.contains("type=raw"), "{e}");
        let e = parse("name=a,name=b").unwrap_err();
        assert!(e.contains("key 'name' is given twice"), "{e}");
        let e = parse("name=").unwrap_err();
        assert!(e.contains("key 'name' has no value"), "{e}");
        let e = parse("readonly=maybe").unwrap_err();
        assert!(e.contains("key 'readonly'") && e.contains("maybe"), "{e}");
        let e = parse("type=virtfs").unwrap_err();
        assert!(e.contains("key 'type'") && e.contains("maqet apply"), "{e}");
        let e = parse("data").unwrap_err();
        assert!(e.contains("'data' is not KEY=VALUE"), "{e}");
        assert!(parse(" ").unwrap_err().contains("empty"));
        assert!(e.starts_with("disk spec 'data': "), "{e}");
    }
}

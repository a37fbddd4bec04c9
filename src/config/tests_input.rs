//! Checks that run at `add`/`apply` instead of failing at `start`: NUL
//! bytes in any string, VM names with their position, bounded `--set`.

use serde_json::json;

use super::tests::env;
use super::*;

#[test]
fn nul_bytes_are_refused_anywhere_with_key_and_position() {
    let env = env();
    let vm = env.vm_yaml();
    let share = env.dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    // (YAML body after the binary line, key path, line:column)
    let cases = [
        ("name: \"a\\0b\"\n", "name", "2:7"),
        ("display: \"none\\0\"\n", "display", "2:10"),
        ("args: [\"-S\", \"x\\0\"]\n", "args[1]", "2:14"),
        (
            "arguments:\n  - device: {virtio-rng-pci: null, id: \"r\\0\"}\n",
            "arguments[0].device.id",
            "3:40",
        ),
        (
            "arguments:\n  - append: \"console=ttyS0\\0\"\n",
            "arguments[0].append",
            "3:13",
        ),
        (
            "arguments:\n  - {\"dev\\0ice\": x}\n",
            "arguments[0].dev\\0ice",
            "3:6",
        ),
        (
            "storage:\n  - {name: d, file: \"/tmp/x\\0.qcow2\"}\n",
            "storage[0].file",
            "3:21",
        ),
        (
            "storage:\n  - {name: s, type: virtfs, path: SHARE, options: {multidevs: \"remap\\0\"}}\n",
            "storage[0].options.multidevs",
            "",
        ),
        (
            "resources: {cpu_quota: \"50%\\0\"}\n",
            "resources.cpu_quota",
            "2:24",
        ),
    ];
    for (body, key, pos) in cases {
        let body = body.replace("SHARE", &share.display().to_string());
        let errors = env.doc(&body).validate_all().unwrap_err();
        let first = errors[0].to_string();
        assert!(
            first.starts_with(&format!("{vm}:{pos}")) && first.contains(&format!("{key}: ")),
            "{body:?}: {first}"
        );
        assert!(first.contains("NUL byte"), "{first}");
    }
}

#[test]
fn nul_bytes_in_a_stored_config_or_set_value_are_refused() {
    let env = env();
    let stored = json!({"binary": env.qemu.display().to_string(), "vga": "std\u{0}"});
    let e = ConfigDocument::from_stored(&stored)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "stored config: vga: the value contains a NUL byte (\\0), which no command-line argument or path can hold; remove it"
    );
    let mut doc = env.doc("");
    doc.set_path("display", "\"gtk\\0\"").unwrap();
    let e = doc.validate().unwrap_err().to_string();
    assert!(e.starts_with("--set display: display: "), "{e}");
}

#[test]
fn vm_name_errors_carry_the_position() {
    let env = env();
    assert_eq!(
        env.error("name: \"bad name!\"\n"),
        format!("{}:2:7: name: invalid VM name 'bad name!': it contains a character that is not allowed. A name is 1 to 64 characters from letters, digits, '-', '_' and '.', and does not start with '-' or '.'", env.vm_yaml())
    );
    assert!(env.error("name: -x\n").starts_with(&format!(
        "{}:2:7: name: invalid VM name '-x'",
        env.vm_yaml()
    )));
    assert!(env.error("name: \"\"\n").contains("it is empty"));
}

#[test]
fn set_keys_and_values_are_bounded() {
    let env = env();
    let mut doc = env.doc("");
    let deep = vec!["a"; 20_000].join(".");
    let e = doc.set_path(&deep, "1").unwrap_err().to_string();
    assert!(
        e.contains("the key is 39999 bytes long; at most 256"),
        "{e}"
    );
    let e = doc
        .set_path(&vec!["a"; 17].join("."), "1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("17 dotted parts; at most 16"), "{e}");
    let e = doc
        .set_path("display", &"x".repeat(70_000))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set display: the value is 70000 bytes long"),
        "{e}"
    );
    // Within the bounds, deep keys still work.
    doc.set_path(&vec!["k"; 16].join("."), "1").unwrap();
    assert!(doc.get("k").is_some());
}

#[test]
fn each_warning_is_reported_once() {
    let env = env();
    let cfg = env
        .doc("memory: 256M\nnetwork: {x: 1}\narguments:\n  - m: 512M\n  - 5\n")
        .validate()
        .unwrap();
    let mut unique = cfg.warnings.clone();
    unique.dedup();
    assert_eq!(cfg.warnings.len(), 3, "{:?}", cfg.warnings);
    assert_eq!(unique, cfg.warnings);
}

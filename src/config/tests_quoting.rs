//! No config value can inject QEMU options: every option-bearing key is
//! rendered with hostile values, and the argv is parsed back with a QEMU
//! option-string parser written here (independent of the renderer's).

use std::fs;

use serde_json::{json, Value as Json};

use super::tests::{ctx, env, Env};
use super::*;

/// Values that would add or change options if written unescaped.
const HOSTILE: &[&str] = &[
    "a,b",
    "x,path=/etc",
    "k=v",
    ",,",
    "a,,b",
    ",",
    "end,",
    ",start",
    "=",
    "a=b,c=d",
    "line\nbreak",
    "-leading",
    "--",
    "with space",
    "\"double\"",
    "'single'",
    "",
];

/// One part of a QEMU option string: `key=value`, or a bare word.
type Part = (String, Option<String>);

/// QEMU's option syntax (`qemu_opts_parse`/`keyval_parse`): parts are
/// separated by single commas, `,,` is a literal comma, a part is split at
/// its first `=`.
fn parse_opts(s: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (p, None),
        })
        .collect()
}

fn kv(k: &str, v: &str) -> Part {
    (k.to_string(), Some(v.to_string()))
}

fn flag(k: &str) -> Part {
    (k.to_string(), None)
}

/// The value argument of the `n`-th occurrence of `opt` in `argv`.
fn option_value<'a>(argv: &'a [String], opt: &str, n: usize) -> &'a str {
    argv.windows(2)
        .filter(|w| w[0] == opt)
        .nth(n)
        .map(|w| w[1].as_str())
        .unwrap_or_else(|| panic!("no {opt} #{n} in {argv:?}"))
}

/// Loads `config` (a JSON object; JSON is YAML) as `vm.yaml` with the
/// stand-in binary.
fn load(env: &Env, config: Json) -> ConfigDocument {
    let mut config = config;
    config["binary"] = json!(env.qemu.display().to_string());
    let path = env.file("vm.yaml", &config.to_string());
    ConfigDocument::load_files(&[path]).unwrap()
}

fn render(env: &Env, config: Json) -> Vec<String> {
    let cfg = load(env, config).validate().unwrap();
    cfg.render_argv(&ctx(&env.dir.join("disks")))
}

fn refused(env: &Env, config: Json) -> String {
    load(env, config).validate().unwrap_err().to_string()
}

#[test]
fn parser_reads_qemu_escapes() {
    assert_eq!(parse_opts("a,,b,c=d,,e"), vec![flag("a,b"), kv("c", "d,e")]);
    assert_eq!(parse_opts("k=,,,x"), vec![kv("k", ","), flag("x")]);
}

#[test]
fn hostile_values_round_trip_in_every_option_bearing_key() {
    let env = env();
    for (n, h) in HOSTILE.iter().enumerate() {
        // A file name cannot hold '/', NUL or be empty; the rest of the
        // value is kept as the disk's and share's file name.
        let file_name = format!("d{n}{}", h.replace('/', "_"));
        let disk = env.dir.join(format!("{file_name}.qcow2"));
        let share = env.dir.join(format!("share-{file_name}"));
        let config = json!({
            "arguments": [
                // nested mapping, first key positional
                {"device": {"virtio-net-pci": null, "netdev": h}},
                // several keys: first value positional, the others k=v
                {"netdev": "user", "id": "n0", "hostfwd": h},
                // mapping value: dotted keys, two levels deep
                {"numa": {"node": {"memdev": {"x": h}}, "nodeid": h}},
                // a list of mappings
                {"object": [{"secret": null, "id": h}, {"data": "x", "format": h}]},
                {"chardev": {"socket": null, "id": "c0", "path": h}},
                // the kernel command line is its own argv element
                {"append": h},
            ],
            "storage": [
                {"name": "disk", "file": disk.display().to_string(), "size": "1M"},
                {"name": "share", "type": "virtfs", "path": share.display().to_string(),
                 "options": {"mount_tag": "tag", "multidevs": h, "throttling": {"bps-total": h}}},
            ],
        });
        let argv = render(&env, config);
        let what = format!("hostile value {h:?}: {argv:?}");
        assert_eq!(
            parse_opts(option_value(&argv, "-device", 0)),
            vec![flag("virtio-net-pci"), kv("netdev", h)],
            "{what}"
        );
        assert_eq!(
            parse_opts(option_value(&argv, "-netdev", 0)),
            vec![flag("user"), kv("id", "n0"), kv("hostfwd", h)],
            "{what}"
        );
        assert_eq!(
            parse_opts(option_value(&argv, "-numa", 0)),
            vec![kv("node.memdev.x", h), kv("nodeid", h)],
            "{what}"
        );
        assert_eq!(
            parse_opts(option_value(&argv, "-object", 0)),
            vec![
                flag("secret"),
                kv("id", h),
                kv("data", "x"),
                kv("format", h)
            ],
            "{what}"
        );
        assert_eq!(
            parse_opts(option_value(&argv, "-chardev", 1)),
            vec![flag("socket"), kv("id", "c0"), kv("path", h)],
            "{what}"
        );
        assert_eq!(option_value(&argv, "-append", 0), *h, "{what}");
        assert_eq!(
            parse_opts(option_value(&argv, "-drive", 0)),
            vec![
                kv("file", &disk.display().to_string()),
                kv("if", "virtio"),
                kv("format", "qcow2"),
            ],
            "{what}"
        );
        assert_eq!(
            parse_opts(option_value(&argv, "-virtfs", 0)),
            vec![
                flag("local"),
                kv("path", &share.display().to_string()),
                kv("mount_tag", "tag"),
                kv("security_model", "passthrough"),
                kv("id", "share"),
                kv("multidevs", h),
                kv("throttling.bps-total", h),
            ],
            "{what}"
        );
        // maqet's own options are untouched.
        assert_eq!(
            parse_opts(option_value(&argv, "-chardev", 0)),
            vec![flag("socket"), kv("id", "maqet-qmp"), kv("fd", "3")]
        );
    }
}

/// The seen bug: `multidevs: "remap,path=/etc"` re-pointed the share.
#[test]
fn virtfs_option_cannot_repoint_the_share() {
    let env = env();
    let share = env.dir.join("share");
    let argv = render(
        &env,
        json!({"storage": [{"name": "s", "type": "virtfs", "path": share.display().to_string(),
            "options": {"multidevs": "remap,path=/etc"}}]}),
    );
    let parts = parse_opts(option_value(&argv, "-virtfs", 0));
    let paths: Vec<_> = parts.iter().filter(|(k, _)| k == "path").collect();
    assert_eq!(paths, vec![&kv("path", &share.display().to_string())]);
    assert!(parts.contains(&kv("multidevs", "remap,path=/etc")));
}

#[test]
fn text_that_cannot_be_escaped_is_refused_with_its_place() {
    let env = env();
    let vm = env.vm_yaml();
    let share = env.dir.join("share").display().to_string();
    let cases: Vec<(Json, &str)> = vec![
        // keys end at ',' or '=' and have no escape
        (
            json!({"arguments": [{"device": {"virtio-net-pci": null, "netdev,x": "a"}}]}),
            "arguments[0].device.netdev,x: key 'netdev,x' contains ','",
        ),
        (
            json!({"arguments": [{"numa": {"node": {"a=b": 1}}}]}),
            "arguments[0].numa.node.a=b: key 'a=b'",
        ),
        (
            json!({"arguments": [{"netdev": "user", "id": "n0", "": "x"}]}),
            "arguments[0].: an empty key",
        ),
        (
            json!({"arguments": [{"foo": {"k": ["a,b"]}}]}),
            "arguments[0].foo.k: key 'a,b'",
        ),
        (
            json!({"arguments": [{"device,x": "a"}]}),
            "arguments[0]: 'device,x' is not a QEMU option name",
        ),
        (
            json!({"arguments": [{"device x": "a"}]}),
            "is not a QEMU option name",
        ),
        // a list item or a positional value is one part
        (
            json!({"arguments": [{"device": ["virtio-net-pci", "netdev=n0,id=x"]}]}),
            "arguments[0].device: 'netdev=n0,id=x' is more than one part",
        ),
        (
            json!({"arguments": [{"netdev": "user,id=n9", "id": "n0"}]}),
            "arguments[0].netdev: 'user,id=n9' is more than one part",
        ),
        // virtfs: keys, and settings maqet owns
        (
            json!({"storage": [{"type": "virtfs", "path": share, "options": {"a,path": "x"}}]}),
            "storage[0].options.a,path: key 'a,path'",
        ),
        (
            json!({"storage": [{"type": "virtfs", "path": share, "options": {"fsdriver": "proxy"}}]}),
            "storage[0].options.fsdriver: set by maqet",
        ),
        (
            json!({"storage": [{"type": "virtfs", "path": share, "options": {"mount_tag": "a,b"}}]}),
            "storage[0].options.mount_tag: must be non-empty and contain no comma",
        ),
    ];
    for (config, expected) in cases {
        let e = refused(&env, config.clone());
        assert!(
            e.starts_with(&format!("{vm}:")) && e.contains(expected),
            "{config}: got {e:?}, expected {expected:?}"
        );
    }
}

#[test]
fn escaped_commas_in_parts_are_kept() {
    let env = env();
    let argv = render(
        &env,
        json!({"arguments": [{"device": ["virtio-net-pci", "id=a,,b"]}, {"netdev": "user", "id": "n,,0"}]}),
    );
    assert_eq!(
        parse_opts(option_value(&argv, "-device", 0)),
        vec![flag("virtio-net-pci"), kv("id", "a,b")]
    );
    assert_eq!(
        parse_opts(option_value(&argv, "-netdev", 0)),
        vec![flag("user"), kv("id", "n,,0")]
    );
}

/// Paths resolved against a config directory whose name holds commas are
/// escaped where they land in option text, and left alone where the value
/// is not an option string (`-kernel`, `-incoming`).
#[test]
fn paths_in_a_directory_with_commas() {
    let env = env();
    let dir = env.dir.join("vms,path=/etc");
    fs::create_dir_all(dir.join("share")).unwrap();
    let file = dir.join("vm.yaml");
    fs::write(
        &file,
        format!(
            concat!(
                "binary: {}\n",
                "storage:\n",
                "  - {{name: d, file: d.qcow2, size: 1M}}\n",
                "  - {{name: s, type: virtfs, path: share}}\n",
                "arguments:\n",
                "  - chardev: socket,id=ser0,path=./s.sock,server=on\n",
                "  - drive: [file=./x.iso, media=cdrom]\n",
                "  - kernel: ./vmlinuz\n",
                "  - incoming: unix:./mig.sock\n",
            ),
            env.qemu.display()
        ),
    )
    .unwrap();
    let cfg = ConfigDocument::load_files(&[file])
        .unwrap()
        .validate()
        .unwrap();
    let argv = cfg.render_argv(&ctx(&env.dir.join("disks")));
    let d = dir.display().to_string();
    assert_eq!(
        parse_opts(option_value(&argv, "-chardev", 1)),
        vec![
            flag("socket"),
            kv("id", "ser0"),
            kv("path", &format!("{d}/s.sock")),
            kv("server", "on")
        ]
    );
    assert_eq!(
        parse_opts(option_value(&argv, "-drive", 1)),
        vec![kv("file", &format!("{d}/x.iso")), kv("media", "cdrom")]
    );
    assert_eq!(option_value(&argv, "-kernel", 0), format!("{d}/vmlinuz"));
    assert_eq!(
        option_value(&argv, "-incoming", 0),
        format!("unix:{d}/mig.sock")
    );
    assert_eq!(
        parse_opts(option_value(&argv, "-drive", 0))[0],
        kv("file", &format!("{d}/d.qcow2"))
    );
    assert_eq!(
        parse_opts(option_value(&argv, "-virtfs", 0))[1],
        kv("path", &format!("{d}/share"))
    );
}

/// The kernel command line is not path-resolved (it is not a path).
#[test]
fn append_is_passed_as_written() {
    let env = env();
    let argv = render(
        &env,
        json!({"arguments": [{"append": "file=./x console=ttyS0,115200"}]}),
    );
    assert_eq!(
        option_value(&argv, "-append", 0),
        "file=./x console=ttyS0,115200"
    );
}

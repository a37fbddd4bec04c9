//! QEMU argv rendering: `arguments` items (2.3) and the whole command line.

use std::path::PathBuf;

use super::error::Location;
use super::node::{Entry, Node, Value};
use super::schema::{Interface, OnReboot, Section, StorageEntry, VmConfig};

/// What the caller (the runner) supplies at start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    pub vm_name: String,
    /// maqet's end of the QMP socketpair, as QEMU will see it.
    pub qmp_fd: i32,
    /// The console socket fd, used when the config sets `console: true`.
    pub console_fd: Option<i32>,
    /// Directory of disks that have no `file:`: the VM's own directory
    /// (also its NVRAM and TPM state).
    pub disk_dir: PathBuf,
    /// The VM's runtime directory (display and TPM sockets).
    pub runtime_dir: PathBuf,
}

/// The result of rendering one `arguments` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// An option: its name (no dashes) and its argv elements.
    Option { option: String, argv: Vec<String> },
    /// `{}`: nothing, silently.
    Empty,
    /// Not a string or mapping: skipped; the text says what was found.
    Skipped(&'static str),
}

/// A value that cannot be placed in a QEMU option string without changing
/// its meaning. `path` is the key path inside the item or options map
/// (`.device.netdev`, empty for the item itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub loc: Location,
    pub path: String,
    pub message: String,
}

fn refuse(loc: &Location, path: &str, message: impl Into<String>) -> Refused {
    Refused {
        loc: loc.clone(),
        path: path.to_string(),
        message: message.into(),
    }
}

/// Renders one `arguments` item by the rules of 2.3, with QEMU's quoting:
/// values of `k: v` entries are escaped (`,` → `,,`) at every level; text
/// that becomes a key or a separate part of the option string and cannot
/// be escaped there is refused when it would split into more parts.
pub(crate) fn render_item(item: &Node) -> Result<Item, Refused> {
    match &item.value {
        Value::Str(s) => {
            let name = s.trim_start_matches('-');
            if name.is_empty() {
                return Ok(Item::Skipped("an empty option string"));
            }
            let arg = if s.starts_with('-') {
                s.clone()
            } else {
                format!("-{s}")
            };
            Ok(Item::Option {
                option: name.to_string(),
                argv: vec![arg],
            })
        }
        Value::Map(entries) if entries.is_empty() => Ok(Item::Empty),
        Value::Map(entries) => {
            let first = &entries[0];
            let name = first.key.trim_start_matches('-').to_string();
            check_option_name(&name, &first.key_loc)?;
            let path = format!(".{name}");
            let mut argv = vec![format!("-{name}")];
            let value = if entries.len() == 1 {
                whole_value(&first.value, &path)?
            } else {
                // Several keys: the first key's value is positional (left
                // out when null) and the other keys follow as k=v.
                let mut parts = Vec::new();
                if !is_empty(&first.value) {
                    parts.push(part_value(&first.value, &path)?);
                }
                parts.extend(kv_parts(&entries[1..], "", "")?);
                parts.join(",")
            };
            // An explicit `""` is an (empty) argument: left out, QEMU would
            // take the next option as this one's value.
            let explicit_empty =
                entries.len() == 1 && matches!(&first.value.value, Value::Str(s) if s.is_empty());
            if !value.is_empty() || explicit_empty {
                argv.push(value);
            }
            Ok(Item::Option { option: name, argv })
        }
        _ => Ok(Item::Skipped(item.type_name())),
    }
}

/// An option name becomes `-NAME`: QEMU's are letters, digits, `-`, `_`.
fn check_option_name(name: &str, loc: &Location) -> Result<(), Refused> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(refuse(
            loc,
            "",
            format!("'{name}' is not a QEMU option name (letters, digits, '-' and '_' only)"),
        ));
    }
    Ok(())
}

/// A key inside an option string ends at the first `,` or `=`, and QEMU
/// has no escape for either there.
fn check_key(key: &str, loc: &Location, path: &str) -> Result<(), Refused> {
    if key.is_empty() {
        return Err(refuse(loc, path, "an empty key cannot be passed to QEMU"));
    }
    if key.contains([',', '=']) || key.chars().any(char::is_control) {
        return Err(refuse(
            loc,
            path,
            format!("key '{key}' contains ',', '=' or a control character, which would change the QEMU option string; keys are plain names"),
        ));
    }
    Ok(())
}

/// A value with nothing to say: null, `{}`, or an empty string.
fn is_empty(n: &Node) -> bool {
    match &n.value {
        Value::Null => true,
        Value::Map(m) => m.is_empty(),
        Value::Str(s) => s.is_empty(),
        _ => false,
    }
}

/// The value argument of a single-key item: a scalar is the option text as
/// written (`drive: "file=x.iso,media=cdrom"`, like `args`), a list gives
/// one part per item, a mapping gives `k=v` parts.
fn whole_value(n: &Node, path: &str) -> Result<String, Refused> {
    match &n.value {
        Value::Seq(_) | Value::Map(_) => part_value(n, path),
        _ => Ok(n.scalar_text().unwrap_or_default()),
    }
}

/// One part of an option string (a list item, or the positional value of a
/// multi-key item): as written, but it must stay one part — a single comma
/// would add parts of its own. A literal comma is written `,,`. Lists give
/// one part per item; a mapping gives `k=v` parts, where a mapping whose
/// first value is empty starts with its first key as the positional part
/// (`{gtk: null, a: b}`).
fn part_value(n: &Node, path: &str) -> Result<String, Refused> {
    match &n.value {
        Value::Null => Ok(String::new()),
        Value::Seq(items) => {
            let parts = items
                .iter()
                .map(|i| part_value(i, path))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(parts.join(","))
        }
        Value::Map(entries) => match entries.first() {
            None => Ok(String::new()),
            Some(first) if is_empty(&first.value) => {
                check_key(&first.key, &first.key_loc, &format!("{path}.{}", first.key))?;
                let mut parts = vec![first.key.clone()];
                parts.extend(kv_parts(&entries[1..], "", path)?);
                Ok(parts.join(","))
            }
            Some(_) => Ok(kv_parts(entries, "", path)?.join(",")),
        },
        _ => {
            let text = n.scalar_text().unwrap_or_default();
            if maqet_base::qemu_opts::split(&text).len() > 1 {
                return Err(refuse(
                    &n.loc,
                    path,
                    format!("'{text}' is more than one part of the QEMU option string; give each part its own list item, write a literal comma as ',,', or use a mapping (key: value), whose values maqet escapes"),
                ));
            }
            Ok(text)
        }
    }
}

/// `k=v` parts: null → bare `k`, nested mapping → dotted keys (an empty one
/// → bare key), list under `k` → `k.<item>` per item. Values are escaped;
/// keys and list items (which become keys) are refused when they hold a
/// `,` or `=`. `path` is where `entries` sits, for errors.
pub(crate) fn kv_parts(
    entries: &[Entry],
    prefix: &str,
    path: &str,
) -> Result<Vec<String>, Refused> {
    let mut out = Vec::new();
    for e in entries {
        let here = format!("{path}.{}", e.key);
        check_key(&e.key, &e.key_loc, &here)?;
        let key = if prefix.is_empty() {
            e.key.clone()
        } else {
            format!("{prefix}.{}", e.key)
        };
        match &e.value.value {
            Value::Null => out.push(key),
            Value::Map(m) if m.is_empty() => out.push(key),
            Value::Map(m) => out.extend(kv_parts(m, &key, &here)?),
            Value::Seq(items) => {
                for i in items {
                    let Some(text) = i.scalar_text().filter(|_| !matches!(i.value, Value::Null))
                    else {
                        return Err(refuse(
                            &i.loc,
                            &here,
                            format!("a list under a key renders as '{key}.<item>', so its items must be plain names, found {}", i.type_name()),
                        ));
                    };
                    check_key(&text, &i.loc, &here)?;
                    out.push(format!("{key}.{text}"));
                }
            }
            _ => out.push(format!(
                "{key}={}",
                maqet_base::qemu_opts::escape(&e.value.scalar_text().unwrap_or_default())
            )),
        }
    }
    Ok(out)
}

impl VmConfig {
    /// The full QEMU command line; `argv[0]` is the binary. maqet's own
    /// options (name, QMP monitor) come first, then one group per config key
    /// in the merged key order, then the console when asked for.
    pub fn render_argv(&self, ctx: &RenderContext) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            self.binary.to_string_lossy().into_owned(),
            "-name".into(),
            maqet_base::qemu_opts::escape(&ctx.vm_name),
            "-chardev".into(),
            format!("socket,id=maqet-qmp,fd={}", ctx.qmp_fd),
            "-mon".into(),
            "chardev=maqet-qmp,mode=control".into(),
        ];
        let kvm_in_arguments = self.arguments.iter().any(|a| {
            a.option == "enable-kvm"
                || (a.option == "accel" && a.argv.get(1).is_some_and(|v| v.starts_with("kvm")))
        });
        let mut kvm_pending = self.enable_kvm && !kvm_in_arguments;
        for section in &self.order {
            match section {
                Section::Memory => push_opt(&mut argv, "-m", self.memory.as_deref()),
                Section::Cpu => push_opt(
                    &mut argv,
                    "-smp",
                    self.cpu.map(|c| c.to_string()).as_deref(),
                ),
                Section::Display => match self.desktop.display {
                    // hook: issue 10 — socket display servers
                    Some(server) => argv.extend(server.qemu_args(&server.socket(&ctx.runtime_dir))),
                    None => push_opt(&mut argv, "-display", self.display.as_deref()),
                },
                Section::Vga => push_opt(&mut argv, "-vga", self.vga.as_deref()),
                Section::Args => argv.extend(self.args.iter().cloned()),
                Section::Arguments => {
                    for a in &self.arguments {
                        // KVM goes before the first accelerator so QEMU
                        // tries it first and the others remain fallbacks.
                        if kvm_pending && a.option == "accel" {
                            argv.extend(["-accel".to_string(), "kvm".to_string()]);
                            kvm_pending = false;
                        }
                        argv.extend(a.argv.iter().cloned());
                    }
                }
                Section::Storage => render_storage(&self.storage, ctx, &mut argv),
                Section::EnableKvm => {
                    if kvm_pending {
                        argv.extend(["-accel".to_string(), "kvm".to_string()]);
                        kvm_pending = false;
                    }
                }
                Section::OnReboot => {
                    if self.on_reboot == OnReboot::Stop {
                        argv.push("-no-reboot".into());
                    }
                }
            }
        }
        // hook: issue 10 — UEFI flash and the TPM backend
        if let Some(fw) = &self.desktop.firmware {
            let vars = maqet_base::firmware::nvram::current(&ctx.disk_dir);
            argv.extend(fw.qemu_args(&vars.path, vars.format));
        }
        if let Some(tpm) = &self.desktop.tpm {
            let socket = super::tpm::socket_path(&ctx.runtime_dir);
            argv.extend(super::tpm::qemu_args(&socket, tpm.device));
        }
        // issue 19: virtiofs shares (their virtiofsd units are companions)
        argv.extend(super::shares::qemu_args(
            &self.shares.list,
            super::shares::memory_size(self),
            &ctx.runtime_dir,
        ));
        if let (true, Some(fd)) = (self.console, ctx.console_fd) {
            argv.extend([
                "-chardev".to_string(),
                format!("socket,id=maqet-console,fd={fd}"),
                "-serial".to_string(),
                "chardev:maqet-console".to_string(),
            ]);
        }
        argv
    }
}

fn push_opt(argv: &mut Vec<String>, opt: &str, value: Option<&str>) {
    if let Some(v) = value {
        argv.push(opt.to_string());
        argv.push(v.to_string());
    }
}

/// Storage groups (2.4), in list order. SATA and SCSI disks get maqet's own
/// controller (added once, before the first such disk) because the default
/// machine has no usable bus for them.
fn render_storage(entries: &[StorageEntry], ctx: &RenderContext, argv: &mut Vec<String>) {
    let mut sata_port = 0usize;
    let mut scsi_added = false;
    for e in entries {
        if let Some(v) = &e.virtfs {
            let mut opts = vec![
                "local".to_string(),
                format!(
                    "path={}",
                    maqet_base::qemu_opts::escape(&v.path.to_string_lossy())
                ),
                format!("mount_tag={}", maqet_base::qemu_opts::escape(&v.mount_tag)),
                format!("security_model={}", v.security_model.as_str()),
                format!("id={}", maqet_base::qemu_opts::escape(&v.id)),
            ];
            if v.readonly {
                opts.push("readonly=on".into());
            }
            opts.extend(v.extra.iter().cloned());
            argv.extend(["-virtfs".to_string(), opts.join(",")]);
            continue;
        }
        let Some(format) = e.format() else { continue };
        let file = maqet_base::qemu_opts::escape(&e.path(&ctx.disk_dir).to_string_lossy());
        let format = if e.readonly {
            format!("{},readonly=on", format.as_str())
        } else {
            format.as_str().to_string()
        };
        let id = format!("maqet-drive-{}", e.name);
        match e.interface {
            Interface::Virtio | Interface::Ide | Interface::None => argv.extend([
                "-drive".to_string(),
                format!("file={file},if={},format={format}", e.interface.as_str()),
            ]),
            Interface::Sata => {
                if sata_port == 0 {
                    argv.extend(["-device".to_string(), "ahci,id=maqet-ahci".to_string()]);
                }
                argv.extend([
                    "-drive".to_string(),
                    format!("file={file},if=none,id={id},format={format}"),
                    "-device".to_string(),
                    format!("ide-hd,drive={id},bus=maqet-ahci.{sata_port}"),
                ]);
                sata_port += 1;
            }
            Interface::Scsi => {
                if !scsi_added {
                    argv.extend([
                        "-device".to_string(),
                        "virtio-scsi-pci,id=maqet-scsi".to_string(),
                    ]);
                    scsi_added = true;
                }
                argv.extend([
                    "-drive".to_string(),
                    format!("file={file},if=none,id={id},format={format}"),
                    "-device".to_string(),
                    format!("scsi-hd,drive={id},bus=maqet-scsi.0"),
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::parse_str;
    use super::*;

    /// Renders every item of `arguments:` in `yaml` to one argv.
    fn render(yaml: &str) -> Vec<String> {
        let root = parse_str(yaml, "t.yaml").unwrap();
        let items = root.get("arguments").unwrap().as_seq().unwrap().to_vec();
        let mut out = Vec::new();
        for i in &items {
            if let Item::Option { argv, .. } = render_item(i).unwrap() {
                out.extend(argv);
            }
        }
        out
    }

    fn r(item: &str) -> String {
        render(&format!("arguments:\n  - {item}\n")).join(" ")
    }

    #[test]
    fn table_2_3() {
        assert_eq!(r("\"nodefaults\""), "-nodefaults");
        assert_eq!(r("\"-snapshot\""), "-snapshot");
        assert_eq!(r("{enable-kvm: null}"), "-enable-kvm");
        assert_eq!(r("{accel: tcg}"), "-accel tcg");
        assert_eq!(r("{smp: 2}"), "-smp 2");
        assert_eq!(r("{smp: {cores: 2, threads: 1}}"), "-smp cores=2,threads=1");
        assert_eq!(
            r("{display: gtk, zoom-to-fit: \"on\"}"),
            "-display gtk,zoom-to-fit=on"
        );
        assert_eq!(
            r("{display: {gtk: null, zoom-to-fit: \"on\"}}"),
            "-display gtk,zoom-to-fit=on"
        );
        assert_eq!(
            r("{netdev: {user: null, id: n0, hostfwd: \"tcp::2222-:22\"}}"),
            "-netdev user,id=n0,hostfwd=tcp::2222-:22"
        );
        assert_eq!(
            r("{device: {virtio-net-pci: null, netdev: net0}}"),
            "-device virtio-net-pci,netdev=net0"
        );
        assert_eq!(
            r("{object: {memory-backend-ram: null, id: mem0, size: 512M}}"),
            "-object memory-backend-ram,id=mem0,size=512M"
        );
        assert_eq!(
            r("{numa: {node: {nodeid: 0, memdev: mem0}}}"),
            "-numa node.nodeid=0,node.memdev=mem0"
        );
        assert_eq!(r("{device: [a, b]}"), "-device a,b");
        assert_eq!(r("{boot: {order: c}}"), "-boot order=c");
        assert_eq!(r("{display: {gtk: null}}"), "-display gtk");
        assert_eq!(r("{foo: {}}"), "-foo");
    }

    #[test]
    fn booleans_render_on_off() {
        assert_eq!(
            r("{display: gtk, zoom-to-fit: on}"),
            "-display gtk,zoom-to-fit=on"
        );
        assert_eq!(
            r("{device: {virtio-blk: null, share-rw: yes, x: off}}"),
            "-device virtio-blk,share-rw=on,x=off"
        );
        assert_eq!(r("{usb: off}"), "-usb off");
    }

    #[test]
    fn nested_rules() {
        assert_eq!(r("{foo: {k: [a, b]}}"), "-foo k.a,k.b");
        assert_eq!(r("{foo: {a: {b: {c: 1}}, d: null}}"), "-foo a.b.c=1,d");
        assert_eq!(r("{foo: {a: {}}}"), "-foo a");
        assert_eq!(r("{netdev: null, id: n0}"), "-netdev id=n0");
        assert_eq!(r("{foo: \"\", id: n0}"), "-foo id=n0");
        assert_eq!(r("{-m: 1G}"), "-m 1G");
        assert_eq!(r("{smp: {cpus: 4, sockets: 1}}"), "-smp cpus=4,sockets=1");
    }

    #[test]
    fn skipped_items() {
        let root = parse_str("arguments: [{}, 5, true, [a], \"\", \"-\"]\n", "t").unwrap();
        let items = root.get("arguments").unwrap().as_seq().unwrap();
        assert_eq!(render_item(&items[0]), Ok(Item::Empty));
        assert_eq!(render_item(&items[1]), Ok(Item::Skipped("an integer")));
        assert_eq!(render_item(&items[2]), Ok(Item::Skipped("a boolean")));
        assert_eq!(render_item(&items[3]), Ok(Item::Skipped("a list")));
        assert!(matches!(render_item(&items[4]), Ok(Item::Skipped(_))));
        assert!(matches!(render_item(&items[5]), Ok(Item::Skipped(_))));
    }

    #[test]
    fn option_names() {
        let root = parse_str("arguments: [-nodefaults, {device: x, id: y}]\n", "t").unwrap();
        let items = root.get("arguments").unwrap().as_seq().unwrap();
        assert!(
            matches!(render_item(&items[0]), Ok(Item::Option { option, .. }) if option == "nodefaults")
        );
        assert_eq!(
            render_item(&items[1]),
            Ok(Item::Option {
                option: "device".into(),
                argv: vec!["-device".into(), "x,id=y".into()]
            })
        );
    }

    #[test]
    fn escape_commas() {
        assert_eq!(maqet_base::qemu_opts::escape("/a,b/c"), "/a,,b/c");
    }
}

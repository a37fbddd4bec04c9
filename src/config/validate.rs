//! Validation of the merged tree into a [`VmConfig`]. Every check runs at
//! `add`/`apply` time and every error names the key and where it was set.
//! Checks continue after an error so all problems can be reported at once.

use std::path::{Path, PathBuf};

use super::argv::{self, Item};
use super::error::{ConfigError, Location};
use super::node::{Entry, Node, Value};
use super::paths;
use super::schema::{
    Argument, OnReboot, OnStop, Resources, RestartPolicy, Section, VmConfig, CPU_RANGE,
    DEFAULT_BINARY, DEFAULT_SHUTDOWN_TIMEOUT,
};
use super::size::{parse_memory, parse_size};
use super::storage::validate_storage;
use maqet_base::suggest;

/// Top-level keys: the original's, then maqet's additions.
pub(crate) const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "binary",
    "memory",
    "cpu",
    "display",
    "vga",
    "args",
    "arguments",
    "storage",
    "enable_kvm",
    "console",
    "shutdown_timeout",
    "on_reboot",
    "on_stop",
    "restart",
    "restart_sec",
    "autostart",
    "resources",
    "qmp_allow_host_exec",
    "firmware",
    "secure_boot",
    "tpm",
    // hook: issue 11 (guest provisioning)
    "cloud_init",
    "ports",
    "ssh",
    "guest_agent",
    // issue 19: virtiofs shares and the NIC's backend
    "shares",
    "network",
    // issue 19: VM-to-VM networks
    "networks",
];

/// Keys the original accepted and ignored; accepted with a warning.
const IGNORED_KEYS: &[&str] = &[];

/// maqet command names, refused as keys as the original did (a sign that
/// a CLI invocation was pasted into a config). Names that are also config
/// keys (`storage`, `console`, `restart`, `autostart`) are not listed.
const COMMAND_KEYS: &[&str] = &[
    "add",
    "apply",
    "start",
    "stop",
    "rm",
    "ls",
    "list",
    "status",
    "info",
    "inspect",
    "storage-info",
    "snapshot",
    "cleanup",
    "doctor",
    "qmp",
    "logs",
];

const RESOURCE_KEYS: &[&str] = &[
    "memory_max",
    "cpu_quota",
    "cpu_weight",
    "io_weight",
    "tasks_max",
];

/// Options that may appear once among the mapping items of `arguments`.
const SINGLE_INSTANCE: &[&str] = &[
    "display", "vga", "m", "smp", "machine", "cpu", "kernel", "initrd", "append",
];

/// Top-level keys that are shorthands for an `arguments` option.
const SHORTHANDS: &[(&str, &str)] = &[
    ("memory", "m"),
    ("cpu", "smp"),
    ("display", "display"),
    ("vga", "vga"),
];

/// Collects errors and warnings while walking the tree.
#[derive(Default)]
pub(crate) struct Validator {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl Validator {
    pub fn error(&mut self, loc: &Location, msg: impl Into<String>) {
        self.errors.push(ConfigError::invalid(loc, msg));
    }

    pub fn warn(&mut self, loc: &Location, msg: impl AsRef<str>) {
        self.warnings.push(format!("{loc}: {}", msg.as_ref()));
    }

    /// A string value; anything else is an error naming what was found.
    pub fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.error(
                    &node.loc,
                    format!("{key}: expected a string, {}", found(node)),
                );
                None
            }
        }
    }

    /// A string, or a number taken as its text (`name: 1` in storage).
    pub fn text(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) => node.scalar_text(),
            _ => self.string(node, key),
        }
    }

    pub fn boolean(&mut self, node: &Node, key: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(
                    &node.loc,
                    format!("{key}: expected true or false, {}", found(node)),
                );
                None
            }
        }
    }

    /// A number of seconds; `allow_zero` for delays that may be zero.
    pub fn seconds(&mut self, node: &Node, key: &str, allow_zero: bool) -> Option<f64> {
        let secs = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        let limit = 86_400.0;
        match secs {
            Some(s) if s.is_finite() && (s > 0.0 || (allow_zero && s == 0.0)) && s <= limit => {
                Some(s)
            }
            _ => {
                let what = if allow_zero {
                    "a number"
                } else {
                    "a positive number"
                };
                self.error(
                    &node.loc,
                    format!(
                        "{key}: expected {what} of seconds up to 86400, {}",
                        found(node)
                    ),
                );
                None
            }
        }
    }

    /// An integer in `range`, also accepted as a digit string.
    pub fn int_in(
        &mut self,
        node: &Node,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let n = match &node.value {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    &node.loc,
                    format!(
                        "{key}: must be an integer from {} to {}, {}",
                        range.start(),
                        range.end(),
                        found(node)
                    ),
                );
                None
            }
        }
    }
}

/// "found …" for type errors, with the YAML 1.1 boolean trap spelt out.
pub(crate) fn found(node: &Node) -> String {
    match &node.value {
        Value::Bool(b) => format!(
            "found the boolean {} (unquoted on/off/yes/no are booleans in YAML; quote the value, e.g. \"{}\")",
            if *b { "true" } else { "false" },
            if *b { "on" } else { "off" }
        ),
        Value::Str(s) => format!("found '{s}'"),
        Value::Int(i) => format!("found {i}"),
        _ => format!("found {}", node.type_name()),
    }
}

/// Validates a merged top-level mapping. `default_loc` labels values that
/// were not written anywhere (the default binary).
pub(crate) fn validate(root: &Node, default_loc: &Location) -> Result<VmConfig, Vec<ConfigError>> {
    let mut v = Validator::default();
    super::strings::check_nul(&mut v, root, "");
    let mut top = TopLevel::new();
    for e in root.as_map().unwrap_or_default() {
        if is_config_key(&mut v, e) {
            top.read(&mut v, e);
        }
    }
    let mut cfg = top.cross_check(&mut v, default_loc);
    if v.errors.is_empty() {
        cfg.warnings = v.warnings;
        Ok(cfg)
    } else {
        Err(v.errors)
    }
}

/// The configuration before any key is read.
fn defaults() -> VmConfig {
    VmConfig {
        name: None,
        binary: PathBuf::from(DEFAULT_BINARY),
        memory: None,
        cpu: None,
        display: None,
        vga: None,
        args: Vec::new(),
        arguments: Vec::new(),
        storage: Vec::new(),
        enable_kvm: false,
        console: false,
        shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        on_reboot: OnReboot::Restart,
        on_stop: OnStop::Shutdown,
        restart: RestartPolicy::No,
        restart_sec: None,
        autostart: false,
        qmp_allow_host_exec: false,
        guest: Default::default(),
        networks: Default::default(),
        resources: Resources::default(),
        memory_bytes: None,
        cpus: None,
        desktop: Default::default(),
        shares: Default::default(),
        warnings: Vec::new(),
        order: Vec::new(),
    }
}

/// Whether the top-level entry `e` is a config key to read: a command
/// name, an ignored or unknown key is reported instead, and null unsets a
/// key (a later file can write `memory: null`).
fn is_config_key(v: &mut Validator, e: &Entry) -> bool {
    let key = e.key.as_str();
    if COMMAND_KEYS.contains(&key) {
        v.error(
            &e.key_loc,
            format!("'{key}' is a maqet command, not a config key; configuration cannot contain commands"),
        );
        return false;
    }
    if IGNORED_KEYS.contains(&key) {
        v.warn(
            &e.key_loc,
            format!("'{key}' is not supported and is ignored; configure networking through arguments (netdev/device)"),
        );
        return false;
    }
    if !TOP_LEVEL_KEYS.contains(&key) {
        v.error(
            &e.key_loc,
            format!("unknown key '{key}'{}", suggest::hint(key, TOP_LEVEL_KEYS)),
        );
        return false;
    }
    !e.value.is_null()
}

/// The pass over the top-level keys: the configuration so far, and what
/// the checks across keys after it need to know of where things were set.
struct TopLevel<'a> {
    cfg: VmConfig,
    binary_node: Option<&'a Node>,
    args_node: Option<&'a Node>,
    display_loc: Option<Location>,
    ports_node: Option<&'a Node>,
    shares_loc: Option<Location>,
    desktop_keys: super::desktop::DesktopKeys,
    /// Where each shorthand key was set, for the override warnings.
    shorthand_locs: Vec<(&'a str, Location)>,
}

impl<'a> TopLevel<'a> {
    fn new() -> Self {
        TopLevel {
            cfg: defaults(),
            binary_node: None,
            args_node: None,
            display_loc: None,
            ports_node: None,
            shares_loc: None,
            desktop_keys: Default::default(),
            shorthand_locs: Vec::new(),
        }
    }

    /// Reads one top-level key (known, not null) into the configuration.
    fn read(&mut self, v: &mut Validator, e: &'a Entry) {
        let node = &e.value;
        let key = e.key.as_str();
        let cfg = &mut self.cfg;
        match key {
            "name" => {
                if let Some(s) = v.string(node, "name") {
                    // Checked here so the error points at the file's line.
                    if let Err(e) = maqet_base::vmname::VmName::new(&s) {
                        v.error(&node.loc, format!("name: {e}"));
                    }
                    cfg.name = Some(s);
                }
            }
            "binary" => self.binary_node = Some(node),
            "memory" => self.memory(v, node),
            "cpu" => {
                if let Some(n) = v.int_in(node, "cpu", CPU_RANGE) {
                    cfg.cpu = Some(n as u32);
                    cfg.cpus = Some(n as u32);
                    cfg.order.push(Section::Cpu);
                    self.shorthand_locs.push(("cpu", node.loc.clone()));
                }
            }
            "display" | "vga" => self.display_or_vga(v, key, node),
            "args" => {
                self.args_node = Some(node);
                cfg.args = validate_args(v, node);
                cfg.order.push(Section::Args);
            }
            "arguments" => {
                cfg.arguments = validate_arguments(v, node);
                cfg.order.push(Section::Arguments);
            }
            "storage" => {
                cfg.storage = validate_storage(v, node);
                cfg.order.push(Section::Storage);
            }
            "enable_kvm" => {
                if let Some(b) = v.boolean(node, key) {
                    cfg.enable_kvm = b;
                    cfg.order.push(Section::EnableKvm);
                }
            }
            "console" => cfg.console = v.boolean(node, key).unwrap_or(false),
            "autostart" => cfg.autostart = v.boolean(node, key).unwrap_or(false),
            "qmp_allow_host_exec" => {
                cfg.qmp_allow_host_exec = v.boolean(node, key).unwrap_or(false)
            }
            "shutdown_timeout" => {
                if let Some(d) = v.seconds(node, key, false) {
                    cfg.shutdown_timeout = d;
                }
            }
            "restart_sec" => cfg.restart_sec = v.seconds(node, key, true),
            "on_reboot" => {
                if let Some(r) = on_reboot(v, node) {
                    cfg.on_reboot = r;
                }
                cfg.order.push(Section::OnReboot);
            }
            "on_stop" => {
                if let Some(s) = on_stop(v, node) {
                    cfg.on_stop = s;
                }
            }
            "restart" => cfg.restart = restart_policy(v, node),
            "resources" => cfg.resources = validate_resources(v, node),
            "firmware" | "secure_boot" | "tpm" => self.desktop_keys.read(v, key, node),
            "shares" => {
                cfg.shares.list = super::shares::validate(v, node);
                self.shares_loc = Some(e.key_loc.clone());
            }
            "network" => cfg.guest.network = super::nic::validate(v, &e.key_loc, node),
            // hook: issue 11
            k if super::guest::KEYS.contains(&k) => {
                if k == "ports" {
                    self.ports_node = Some(node);
                }
                super::guest::validate_key(v, k, node, &mut cfg.guest)
            }
            // hook: issue 19
            super::networks::KEY => cfg.networks = super::networks::validate(v, node),
            _ => unreachable!("every TOP_LEVEL_KEYS entry is handled"),
        }
    }

    /// `memory`: a size, as a string or a plain number of bytes.
    fn memory(&mut self, v: &mut Validator, node: &Node) {
        let text = match &node.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) => node.scalar_text(),
            _ => v.string(node, "memory"),
        };
        let Some(t) = text else { return };
        match parse_memory(&t) {
            Ok(bytes) => {
                self.cfg.memory = Some(t);
                self.cfg.memory_bytes = Some(bytes);
                self.cfg.order.push(Section::Memory);
                self.shorthand_locs.push(("memory", node.loc.clone()));
            }
            Err(err) => v.error(&node.loc, format!("memory: {err}")),
        }
    }

    /// `display` or `vga`: a string passed to QEMU; a display must not
    /// listen on TCP.
    fn display_or_vga(&mut self, v: &mut Validator, key: &'a str, node: &Node) {
        let Some(s) = v.string(node, key) else { return };
        if key == "display" {
            self.display_loc = Some(node.loc.clone());
            if let Some(why) = super::desktop::tcp_display(&s) {
                v.error(&node.loc, format!("display: {why}"));
            }
            self.cfg.display = Some(s);
            self.cfg.order.push(Section::Display);
        } else {
            self.cfg.vga = Some(s);
            self.cfg.order.push(Section::Vga);
        }
        self.shorthand_locs.push((key, node.loc.clone()));
    }

    /// The checks that need all keys read, in the order their messages
    /// appear; returns the configuration they completed.
    fn cross_check(self, v: &mut Validator, default_loc: &Location) -> VmConfig {
        let mut cfg = self.cfg;
        cfg.binary = validate_binary(v, self.binary_node, default_loc);
        check_single_instance(v, &cfg.arguments);
        super::machine::check_interfaces(v, &cfg);
        resolve_shorthands(v, &mut cfg, &self.shorthand_locs);
        super::desktop::resolve(v, &mut cfg, &self.desktop_keys);
        super::guest::finish(v, &cfg.guest, self.ports_node);
        effective_resources(&mut cfg);
        super::shares::resolve(v, &mut cfg, self.shares_loc.as_ref());
        super::exec::check(v, &cfg, self.args_node, self.display_loc.as_ref());
        cfg
    }
}

/// `on_reboot`: restart or stop; None (reported) for anything else.
fn on_reboot(v: &mut Validator, node: &Node) -> Option<OnReboot> {
    match node.as_str() {
        Some("restart") => Some(OnReboot::Restart),
        Some("stop") => Some(OnReboot::Stop),
        _ => {
            v.error(
                &node.loc,
                format!("on_reboot: expected 'restart' or 'stop', {}", found(node)),
            );
            None
        }
    }
}

/// `on_stop`: shutdown or save; None (reported) for anything else.
fn on_stop(v: &mut Validator, node: &Node) -> Option<OnStop> {
    match node.as_str() {
        Some("shutdown") => Some(OnStop::Shutdown),
        Some("save") => Some(OnStop::Save),
        other => {
            let hint = other
                .map(|s| suggest::hint(s, &["shutdown", "save"]))
                .unwrap_or_default();
            v.error(
                &node.loc,
                format!(
                    "on_stop: expected 'shutdown' or 'save', {}{hint}",
                    found(node)
                ),
            );
            None
        }
    }
}

/// `restart`: no, on-failure or always; `no` (reported) for anything else.
fn restart_policy(v: &mut Validator, node: &Node) -> RestartPolicy {
    match (&node.value, node.as_str()) {
        // Unquoted `no` is the boolean false in YAML 1.1.
        (Value::Bool(false), _) | (_, Some("no")) => RestartPolicy::No,
        (_, Some("on-failure")) => RestartPolicy::OnFailure,
        (_, Some("always")) => RestartPolicy::Always,
        _ => {
            let hint = node
                .as_str()
                .map(|s| suggest::hint(s, &["no", "on-failure", "always"]))
                .unwrap_or_default();
            v.error(
                &node.loc,
                format!(
                    "restart: expected no, on-failure or always, {}{hint}",
                    found(node)
                ),
            );
            RestartPolicy::No
        }
    }
}

fn validate_args(v: &mut Validator, node: &Node) -> Vec<String> {
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!("args: expected a list of argv strings, {}", found(node)),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match &item.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) => out.extend(item.scalar_text()),
            _ => v.error(
                &item.loc,
                format!("args[{i}]: expected a string, {}", found(item)),
            ),
        }
    }
    out
}

fn validate_arguments(v: &mut Validator, node: &Node) -> Vec<Argument> {
    let Some(items) = node.as_seq() else {
        v.error(
            &node.loc,
            format!(
                "arguments: expected a list of QEMU options (e.g. '- accel: tcg'), {}",
                found(node)
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match argv::render_item(item) {
            Err(r) => v.error(&r.loc, format!("arguments[{index}]{}: {}", r.path, r.message)),
            Ok(Item::Option { option, argv }) => out.push(Argument {
                option,
                argv,
                index,
                location: item.loc.clone(),
                from_string: matches!(item.value, Value::Str(_)),
            }),
            Ok(Item::Empty) => {}
            Ok(Item::Skipped(what)) => v.warn(
                &item.loc,
                format!("arguments[{index}]: ignored {what}; an item is an option name or a mapping such as '- accel: tcg'"),
            ),
        }
    }
    // Plain values of `m`/`smp` are checked like `memory`/`cpu` (the
    // original let `m: lots` through to a failed start).
    for a in &out {
        let Some(value) = a.argv.get(1) else { continue };
        if value.contains('=') {
            continue;
        }
        if a.option == "m" {
            if let Err(e) = parse_memory(value) {
                v.error(&a.location, format!("arguments[{}]: -m: {e}", a.index));
            }
        } else if a.option == "smp" && !matches!(value.parse::<u32>(), Ok(n) if n > 0) {
            v.error(
                &a.location,
                format!(
                    "arguments[{}]: -smp: expected a CPU count or key=value options, found '{value}'",
                    a.index
                ),
            );
        }
    }
    out
}

/// Mapping items whose option may appear only once (2.3): a second one is
/// an error naming both. String items are not counted (as in the original).
fn check_single_instance(v: &mut Validator, arguments: &[Argument]) {
    for (i, a) in arguments.iter().enumerate() {
        if a.from_string || !SINGLE_INSTANCE.contains(&a.option.as_str()) {
            continue;
        }
        if let Some(first) = arguments[..i]
            .iter()
            .find(|b| !b.from_string && b.option == a.option)
        {
            v.errors.push(ConfigError::DuplicateOption {
                option: a.option.clone(),
                index: a.index,
                location: a.location.clone(),
                first_index: first.index,
                first_location: first.location.clone(),
            });
        }
    }
}

/// Top-level `memory`/`cpu`/`display`/`vga` versus an `arguments` item for
/// the same option: only the `arguments` one is emitted (at its position),
/// with a warning, instead of both (the original passed both to QEMU).
fn resolve_shorthands(v: &mut Validator, cfg: &mut VmConfig, locs: &[(&str, Location)]) {
    for (key, loc) in locs {
        let option = SHORTHANDS
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, o)| *o)
            .unwrap_or(key);
        let Some(arg) = cfg
            .arguments
            .iter()
            .find(|a| a.option == option && !a.from_string)
        else {
            continue;
        };
        let section = match *key {
            "memory" => Section::Memory,
            "cpu" => Section::Cpu,
            "display" => Section::Display,
            _ => Section::Vga,
        };
        cfg.order.retain(|s| *s != section);
        v.warn(
            loc,
            format!(
                "{key} is overridden by arguments[{}] '{}' ({}); only that is passed to QEMU, remove one of them",
                arg.index,
                arg.argv.join(" "),
                arg.location
            ),
        );
    }
}

/// What the VM gets from `m`/`smp` items (they win over `memory`/`cpu`).
fn effective_resources(cfg: &mut VmConfig) {
    for a in &cfg.arguments {
        let Some(value) = a.argv.get(1) else { continue };
        let field = |name: &str| {
            maqet_base::qemu_opts::split(value)
                .into_iter()
                .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        };
        match a.option.as_str() {
            "m" => {
                let size = if value.contains('=') {
                    field("size")
                } else {
                    Some(value.clone())
                };
                if let Some(b) = size.and_then(|s| parse_memory(&s).ok()) {
                    cfg.memory_bytes = Some(b);
                }
            }
            "smp" => {
                let count = if value.contains('=') {
                    field("cpus")
                } else {
                    Some(value.clone())
                };
                if let Some(n) = count.and_then(|s| s.parse::<u32>().ok()) {
                    cfg.cpus = Some(n);
                }
            }
            _ => {}
        }
    }
}

fn validate_binary(v: &mut Validator, node: Option<&Node>, default_loc: &Location) -> PathBuf {
    let (text, loc, what) = match node {
        Some(n) => match v.string(n, "binary") {
            Some(s) if !s.is_empty() => (s, n.loc.clone(), "binary".to_string()),
            Some(_) => {
                v.error(&n.loc, "binary: must not be empty");
                return PathBuf::from(DEFAULT_BINARY);
            }
            None => return PathBuf::from(DEFAULT_BINARY),
        },
        None => (
            DEFAULT_BINARY.to_string(),
            default_loc.clone(),
            "binary (default, no 'binary:' given)".to_string(),
        ),
    };
    let path = if !text.contains('/') {
        match maqet_base::programs::find_in_path(&text) {
            Some(p) => p,
            None => {
                v.error(
                    &loc,
                    format!("{what}: '{text}' was not found in PATH; give the absolute path of the QEMU binary"),
                );
                return PathBuf::from(text);
            }
        }
    } else if Path::new(&text).is_absolute() {
        PathBuf::from(&text)
    } else {
        // Only a stored or programmatic value can still be relative here.
        match std::env::current_dir() {
            Ok(cwd) => paths::normalize(&cwd.join(&text)),
            Err(_) => PathBuf::from(&text),
        }
    };
    match std::fs::metadata(&path) {
        Err(_) => v.error(
            &loc,
            format!(
                "{what}: {} does not exist; install QEMU (e.g. apt install qemu-system-x86) or set 'binary:' to its path",
                path.display()
            ),
        ),
        Ok(m) if !m.is_file() => v.error(
            &loc,
            format!("{what}: {} is not a regular file", path.display()),
        ),
        Ok(_) if !maqet_base::programs::is_executable(&path) => v.error(
            &loc,
            format!("{what}: {} is not executable by you", path.display()),
        ),
        Ok(_) => {}
    }
    path
}

fn validate_resources(v: &mut Validator, node: &Node) -> Resources {
    let mut r = Resources::default();
    let Some(entries) = node.as_map() else {
        v.error(
            &node.loc,
            format!("resources: expected a mapping (memory_max, cpu_quota, cpu_weight, io_weight, tasks_max), {}", found(node)),
        );
        return r;
    };
    for e in entries {
        let n = &e.value;
        let key = format!("resources.{}", e.key);
        if n.is_null() {
            continue;
        }
        match e.key.as_str() {
            "memory_max" => {
                let text = match &n.value {
                    Value::Int(_) | Value::Str(_) => n.scalar_text(),
                    _ => v.string(n, &key),
                };
                if let Some(t) = text {
                    match parse_size(&t) {
                        Ok(b) if b > 0 => r.memory_max = Some(b),
                        Ok(_) => v.error(&n.loc, format!("{key}: must be greater than zero")),
                        Err(err) => v.error(&n.loc, format!("{key}: {err}")),
                    }
                }
            }
            "cpu_quota" => {
                let pct = n
                    .as_str()
                    .and_then(|s| s.strip_suffix('%'))
                    .and_then(|s| s.parse::<u32>().ok())
                    .filter(|p| *p > 0);
                match pct {
                    Some(p) => r.cpu_quota_percent = Some(p),
                    None => v.error(
                        &n.loc,
                        format!("{key}: expected a percentage of one CPU such as \"50%\" or \"200%\", {}", found(n)),
                    ),
                }
            }
            "cpu_weight" => r.cpu_weight = v.int_in(n, &key, 1..=10_000),
            "io_weight" => r.io_weight = v.int_in(n, &key, 1..=10_000),
            "tasks_max" => r.tasks_max = v.int_in(n, &key, 1..=u32::MAX as u64),
            other => v.error(
                &e.key_loc,
                format!(
                    "resources: unknown key '{other}'{}",
                    suggest::hint(other, RESOURCE_KEYS)
                ),
            ),
        }
    }
    r
}

//! QEMU's command line read as QEMU 7.2 reads it: which words are options,
//! which are their values, which are image file names — and then each
//! option through the rule for what it can make QEMU run.

use super::block;
use super::netdev::{self, Form};
use super::opts::{parse, values, Pairs, Syntax, Val};
use super::{Finding, Refusal};

/// Options of QEMU 7.2 that take a value (`HAS_ARG` in its option table,
/// read from the qemu-system-x86_64 binary of Debian 12; the table is the
/// same for every target).
const WITH_VALUE: &[&str] = &[
    "machine",
    "M",
    "cpu",
    "accel",
    "smp",
    "numa",
    "add-fd",
    "set",
    "global",
    "boot",
    "m",
    "mem-path",
    "k",
    "audio",
    "audiodev",
    "device",
    "name",
    "uuid",
    "fda",
    "fdb",
    "hda",
    "hdb",
    "hdc",
    "hdd",
    "cdrom",
    "blockdev",
    "drive",
    "mtdblock",
    "sd",
    "fsdev",
    "virtfs",
    "iscsi",
    "usbdevice",
    "display",
    "spice",
    "rotate",
    "vga",
    "g",
    "vnc",
    "acpitable",
    "smbios",
    "netdev",
    "nic",
    "net",
    "chardev",
    "tpmdev",
    "bios",
    "pflash",
    "kernel",
    "append",
    "initrd",
    "dtb",
    "compat",
    "fw_cfg",
    "serial",
    "parallel",
    "monitor",
    "qmp",
    "qmp-pretty",
    "mon",
    "debugcon",
    "pidfile",
    "overcommit",
    "gdb",
    "d",
    "D",
    "dfilter",
    "seed",
    "L",
    "xen-domid",
    "action",
    "loadvm",
    "option-rom",
    "rtc",
    "icount",
    "watchdog-action",
    "echr",
    "incoming",
    "chroot",
    "runas",
    "prom-env",
    "semihosting-config",
    "sandbox",
    "readconfig",
    "trace",
    "plugin",
    "qtest",
    "qtest-log",
    "msg",
    "dump-vmstate",
    "object",
];

/// `-set GROUP.ID.KEY=VALUE` changes an option after it was parsed (and
/// after maqet checked it); allowed for groups that can run nothing.
const SET_GROUPS: &[&str] = &[
    "device",
    "machine",
    "chardev",
    "fsdev",
    "mon",
    "memory",
    "smp-opts",
    "boot-opts",
    "numa",
    "rtc",
    "name",
    "tpmdev",
    "global",
    "accel",
    "icount",
    "overcommit",
];

/// Audio drivers that run nothing by themselves (`alsa` and `jack` have
/// rules below).
const AUDIO_DRIVERS: &[&str] = &[
    "none",
    "wav",
    "spice",
    "dbus",
    "oss",
    "pa",
    "sdl",
    "sndio",
    "coreaudio",
    "dsound",
    "alsa",
    "jack",
];

/// ALSA PCMs without a file or plugin argument (`file`, `tee` and `pipe`
/// pass their argument to popen when it starts with '|'; `ladspa` loads a
/// library).
const ALSA_PCMS: &[&str] = &[
    "default",
    "sysdefault",
    "hw",
    "plughw",
    "front",
    "rear",
    "center_lfe",
    "side",
    "surround21",
    "surround40",
    "surround41",
    "surround50",
    "surround51",
    "surround71",
    "iec958",
    "spdif",
    "hdmi",
    "dmix",
    "dsnoop",
    "null",
    "pulse",
    "pipewire",
    "jack",
];

/// A monitor other than maqet's takes commands maqet's policy never sees.
const SECOND_MONITOR: &str = "a second QEMU monitor: its commands (migrate to exec: among them) \
                              bypass maqet's QMP policy";

fn syntax(implied: Option<&'static str>, json: bool) -> Syntax {
    Syntax { implied, json }
}

/// Walks `words` as QEMU does: a word starting with '-' (not "-" alone)
/// is an option (`--name` too), one that takes a value consumes the next
/// word whatever it is, and every other word is an image for the first
/// hard disk. Options unknown to QEMU 7.2 are taken to have no value (a
/// QEMU that does not know one refuses the whole command line), so the
/// word after one is read as an option or image, never skipped.
pub(super) fn check(words: &[String]) -> Result<(), Refusal> {
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let Some(name) = w.strip_prefix('-').filter(|n| !n.is_empty()) else {
            block::filename(w).map_or(Ok(()), |finding| {
                Err(Refusal::Runs {
                    word: i,
                    valued: false,
                    finding,
                })
            })?;
            i += 1;
            continue;
        };
        let name = name.strip_prefix('-').unwrap_or(name);
        if !WITH_VALUE.contains(&name) {
            if let Some(finding) = flag(name) {
                return Err(Refusal::Runs {
                    word: i,
                    valued: false,
                    finding,
                });
            }
            i += 1;
            continue;
        }
        let Some(value) = words.get(i + 1) else {
            return Err(Refusal::NoValue {
                word: i,
                option: name.to_string(),
            });
        };
        if let Some(finding) = option(name, value) {
            return Err(Refusal::Runs {
                word: i,
                valued: true,
                finding,
            });
        }
        i += 2;
    }
    Ok(())
}

fn flag(name: &str) -> Option<Finding> {
    (name == "semihosting").then(semihosting)
}

fn semihosting() -> Finding {
    Finding("semihosting: the guest can make QEMU run host commands (SYS_SYSTEM)".into())
}

/// What `-NAME VALUE` can make QEMU run, if anything.
fn option(name: &str, value: &str) -> Option<Finding> {
    let pairs = |implied, json| parse(value, syntax(implied, json));
    let checked = |p: Result<Pairs, Finding>, rule: &dyn Fn(&Pairs) -> Option<Finding>| match p {
        Ok(p) => rule(&p),
        Err(f) => Some(f),
    };
    match name {
        "netdev" => checked(pairs(Some("type"), true), &|p| {
            netdev::check(p, Form::Netdev)
        }),
        "nic" => checked(pairs(Some("type"), false), &|p| netdev::check(p, Form::Nic)),
        "net" => checked(pairs(Some("type"), false), &|p| netdev::check(p, Form::Net)),
        // -drive has no implied key; a bare first part is read as a file
        // name anyway, which can only refuse more.
        "drive" => checked(pairs(Some("file"), false), &block::check),
        "blockdev" => checked(pairs(Some("driver"), true), &block::check),
        "cdrom" | "hda" | "hdb" | "hdc" | "hdd" | "fda" | "fdb" | "mtdblock" | "sd" | "pflash" => {
            block::filename(value)
        }
        "incoming" => super::is_exec_uri(value).then(|| {
            Finding("-incoming exec:: QEMU runs the command to read the migration".into())
        }),
        "plugin" => Some(Finding(
            "a TCG plugin: QEMU loads its shared library into itself".into(),
        )),
        "readconfig" => Some(Finding(
            "-readconfig: QEMU takes options from a file maqet does not check".into(),
        )),
        "set" => {
            let group = value.split('.').next().unwrap_or_default();
            (!SET_GROUPS.contains(&group)).then(|| {
                Finding(format!(
                    "-set for '{}': it changes an option after maqet checked it; write the \
                     value in the option itself",
                    super::shown(group)
                ))
            })
        }
        "display" => checked(pairs(Some("type"), true), &display),
        "audiodev" => checked(pairs(Some("driver"), true), &audio),
        "audio" => checked(pairs(Some("driver"), false), &audio),
        "object" => checked(pairs(Some("qom-type"), true), &object),
        "monitor" | "qmp" | "qmp-pretty" => {
            (value != "none").then(|| Finding(SECOND_MONITOR.into()))
        }
        "mon" => Some(Finding(SECOND_MONITOR.into())),
        // Old-style character devices: `mon:DEV` puts a monitor on them.
        "serial" | "parallel" | "debugcon" | "gdb" => value
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("mon:"))
            .then(|| Finding(SECOND_MONITOR.into())),
        "semihosting-config" => Some(semihosting()),
        "chardev" => checked(pairs(Some("backend"), false), &super::own_descriptor),
        "add-fd" => Some(Finding(
            "-add-fd: QEMU's only descriptors are maqet's QMP and console channels".into(),
        )),
        _ => None,
    }
}

/// `-display spice-app` starts the desktop's SPICE viewer; a D-Bus
/// display connects to any address GLib accepts (`autolaunch:` runs
/// dbus-launch).
fn display(p: &Pairs) -> Option<Finding> {
    for t in values(p, "type").filter_map(Val::as_str) {
        if t == "spice-app" {
            return Some(Finding(
                "display spice-app: QEMU launches the desktop's SPICE viewer".into(),
            ));
        }
    }
    dbus_addresses(p, "a D-Bus display")
}

fn dbus_addresses(p: &Pairs, what: &str) -> Option<Finding> {
    for a in values(p, "addr") {
        let ok = a
            .as_str()
            .is_some_and(|a| a.split(';').all(|one| one.starts_with("unix:")));
        if !ok {
            return Some(Finding(format!(
                "{what} at an address other than unix: (GLib's autolaunch: runs dbus-launch)"
            )));
        }
    }
    None
}

fn object(p: &Pairs) -> Option<Finding> {
    let vmstate = values(p, "qom-type").any(|t| t.as_str() == Some("dbus-vmstate"));
    if vmstate {
        return dbus_addresses(p, "dbus-vmstate");
    }
    None
}

fn audio(p: &Pairs) -> Option<Finding> {
    for d in values(p, "driver") {
        let Some(d) = d.as_str().filter(|d| AUDIO_DRIVERS.contains(d)) else {
            let (Val::Str(t) | Val::Other(t)) = d;
            return Some(Finding(format!(
                "audio driver '{}': maqet allows {} without the opt-out",
                super::shown(t),
                AUDIO_DRIVERS.join(", ")
            )));
        };
        if d == "alsa" {
            for (k, v) in p {
                if super::opts::last_name(k) == "dev" && !v.as_str().is_some_and(alsa_pcm) {
                    return Some(Finding(
                        "an ALSA device other than a plain card (file, tee and ladspa PCMs run \
                         commands or load libraries)"
                            .into(),
                    ));
                }
            }
        }
        if d == "jack"
            && p.iter()
                .any(|(k, v)| super::opts::last_name(k) == "start-server" && v.is_true())
        {
            return Some(Finding("jack with start-server: libjack runs jackd".into()));
        }
    }
    None
}

/// `NAME` or `NAME:ARGS` with a known PCM and plain arguments (card and
/// device names, numbers).
fn alsa_pcm(dev: &str) -> bool {
    let (name, args) = dev.split_once(':').unwrap_or((dev, ""));
    ALSA_PCMS.contains(&name)
        && args
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b'=' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    fn refused(s: &[&str]) -> bool {
        check(&words(s)).is_err()
    }

    #[test]
    fn options_values_and_images_are_paired_as_qemu_pairs_them() {
        assert!(refused(&["-netdev", "vde,id=v"]));
        assert!(refused(&["--netdev", "bridge,id=b"]));
        // -name takes the next word whatever it is; the word after is an image.
        assert!(!refused(&["-name", "-netdev", "tap,id=t"]));
        assert!(refused(&["-name", "-netdev", "ssh://h/x"]));
        // A flag takes nothing: what follows is an option again.
        assert!(refused(&["-S", "-netdev", "vde,id=v"]));
        assert!(refused(&["-nodefaults", "ssh://h/x"]));
        // An option unknown to QEMU 7.2 is read as a flag, so nothing hides behind it.
        assert!(refused(&["-run-with", "-incoming", "exec:true"]));
        assert!(matches!(
            check(&words(&["-m", "1G", "-netdev"])),
            Err(Refusal::NoValue { word: 2, .. })
        ));
        assert!(!refused(&["-m", "1G", "-", "-accel", "tcg", "/x.img"]));
    }

    #[test]
    fn each_option_that_can_run_something() {
        for bad in [
            &["-incoming", "exec:touch /tmp/x"][..],
            &["-plugin", "/tmp/p.so"],
            &["-plugin", "file=/usr/lib/x.so"],
            &["-readconfig", "/tmp/q.cfg"],
            &["-set", "netdev.n.script=/tmp/x"],
            &["-set", "drive.d.file=ssh://h/x"],
            &["-display", "spice-app"],
            &["-display", "spice-app,gl=on"],
            &["-display", r#"{"type":"spice-app"}"#],
            &["-display", "dbus,addr=autolaunch:"],
            &["-audiodev", "alsa,id=a,out.dev=file:'|touch /tmp/x'"],
            &["-audiodev", "alsa,id=a,in.dev=ladspa"],
            &["-audiodev", "jack,id=j,out.start-server=on"],
            &["-audiodev", "foo,id=f"],
            &["-audio", "driver=alsa,model=hda,out.dev=tee:hw,/tmp/x"],
            &["-object", "dbus-vmstate,id=d,addr=autolaunch:"],
            &["-monitor", "tcp::4444,server=on,wait=off"],
            &["-qmp", "unix:/tmp/q,server=on,wait=off"],
            &["-mon", "chardev=c,mode=control"],
            &["-serial", "mon:stdio"],
            &["-semihosting"],
            &["-semihosting-config", "enable=on"],
            &["-cdrom", "rbd:pool/img"],
            &["-pflash", r#"json:{"driver":"ssh"}"#],
            &[
                "-blockdev",
                r#"{"driver":"ssh","server":{"host":"h"},"path":"/x"}"#,
            ],
            &["-blockdev", "driver=gluster,volume=v"],
            &["-drive", "file=ssh://h/x,if=virtio"],
            &["-nic", "tap,model=virtio"],
            &["-net", "vde"],
            &["-netdev", "{\"type\":\"vde\"}"],
            &["-netdev", "{broken"],
            &["-chardev", "socket,id=c,fd=4"],
            &["-add-fd", "fd=4,set=1"],
            &["-netdev", "socket,id=s,fd=5"],
        ] {
            assert!(refused(bad), "{bad:?}");
        }
        for ok in [
            &["-incoming", "defer"][..],
            &["-set", "device.d.addr=0x5"],
            &["-display", "none"],
            &["-display", "gtk,gl=on"],
            &["-display", "vnc=:1"],
            &["-display", "dbus,addr=unix:path=/run/user/1/bus"],
            &["-audiodev", "alsa,id=a,out.dev=hw:0,,1"],
            &["-audiodev", "pa,id=p"],
            &["-audiodev", "jack,id=j"],
            &["-object", "memory-backend-ram,id=m,size=1G"],
            &["-object", r#"{"qom-type":"secret","id":"s","data":"x"}"#],
            &["-monitor", "none"],
            &["-serial", "chardev:c"],
            &["-serial", "stdio"],
            &["-chardev", "socket,id=c,path=/tmp/s,server=on,wait=off"],
            &["-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22"],
            &[
                "-netdev",
                r#"{"type":"stream","id":"s","addr":{"type":"unix","path":"/s"}}"#,
            ],
            &["-nic", "user,model=virtio-net-pci"],
            &["-drive", "file=/x.qcow2,if=virtio,format=qcow2"],
            &["-cdrom", "/x.iso"],
            &["-virtfs", "local,path=/srv,mount_tag=s,security_model=none"],
        ] {
            assert!(!refused(ok), "{ok:?}");
        }
    }
}

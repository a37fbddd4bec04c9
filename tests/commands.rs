//! The command surface over several VMs at once, against the real user
//! manager: `start A B C`, `stop A B C`.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn start_and_stop_several_vms_at_once() {
    let w = World::new("many");
    let vms: Vec<String> = ["a", "b", "c"].iter().map(|s| w.add_vm(s, "")).collect();
    let names: Vec<&str> = vms.iter().map(String::as_str).collect();

    let mut args = vec!["start"];
    args.extend(&names);
    let out = w.ok(&args);
    for vm in &vms {
        assert!(out.contains(&format!("{vm}: started")), "{out}");
        assert_eq!(w.state(vm), "running");
    }
    assert_eq!(out.lines().count(), 3, "{out}");

    let mut args = vec!["stop"];
    args.extend(&names);
    let out = w.ok(&args);
    assert_eq!(out.lines().count(), 3, "{out}");
    for vm in &vms {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{vm}: "))),
            "{out}"
        );
        w.wait_state(vm, "defined", Duration::from_secs(30));
    }
}

#[test]
fn an_unknown_name_among_several_fails_alone_with_the_worst_code() {
    let w = World::new("mixed");
    let a = w.add_vm("a", "");
    let b = w.add_vm("b", "");
    let ghost = w.name("ghost");

    // The known VMs start; the unknown one's line says so; exit 3 (no such
    // VM) is worse than success.
    let err = w.fails(3, &["start", &a, &ghost, &b]);
    assert!(
        err.contains(&format!("{ghost}: no VM named '{ghost}'")),
        "{err}"
    );
    assert!(err.contains("1 of 3 VMs did not start"), "{err}");
    assert_eq!(w.state(&a), "running");
    assert_eq!(w.state(&b), "running");

    // Starting again: two conflicts (already running) and one unknown
    // name; no such VM (3) is more severe than a conflict (5).
    let err = w.fails(3, &["start", &a, &b, &ghost]);
    assert!(
        err.contains(&format!("{a}: VM '{a}' is already running")),
        "{err}"
    );
    assert!(err.contains("3 of 3 VMs did not start"), "{err}");

    let err = w.fails(3, &["stop", &ghost, &a, &b]);
    assert!(err.contains(&format!("{ghost}: no VM named")), "{err}");
    w.wait_state(&a, "defined", Duration::from_secs(30));
    w.wait_state(&b, "defined", Duration::from_secs(30));

    // Stopping stopped VMs: each line says so, exit 0 as for one name.
    let out = w.ok(&["stop", &a, &b]);
    assert!(out.contains(&format!("{a}: not running")), "{out}");
    assert!(out.contains(&format!("{b}: not running")), "{out}");
}

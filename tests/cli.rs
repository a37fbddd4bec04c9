//! Input validation and exit codes of `maqet add` and friends: bad input
//! gets a specific message (file, line, key) and a distinct exit code.

mod common;

use common::*;

#[test]
fn add_reports_yaml_errors_with_file_and_line() {
    let w = World::new("addyaml");
    let f = w.write("broken.yaml", "name: x\nmemory: [1,\n");
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(err.contains("broken.yaml:"), "{err}");
    assert!(err.contains("YAML"), "{err}");
}

#[test]
fn add_names_unknown_keys_with_a_suggestion() {
    let w = World::new("addkey");
    let f = w.write(
        "typo.yaml",
        &format!("name: t\nbinary: {QEMU}\nmemroy: 1G\n"),
    );
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(err.contains("typo.yaml:3"), "{err}");
    assert!(err.contains("memroy") && err.contains("memory"), "{err}");
}

#[test]
fn add_rejects_wrong_types_and_bad_values() {
    let w = World::new("addtype");
    let f = w.write("cpu.yaml", &format!("name: t\nbinary: {QEMU}\ncpu: many\n"));
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(err.contains("cpu.yaml:3") && err.contains("cpu"), "{err}");
    let f = w.write(
        "mem.yaml",
        &format!("name: t\nbinary: {QEMU}\nmemory: lots\n"),
    );
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(
        err.contains("mem.yaml:3") && err.contains("memory"),
        "{err}"
    );
}

#[test]
fn add_checks_the_binary() {
    let w = World::new("addbin");
    let f = w.write("nobin.yaml", "name: t\nbinary: /nonexistent/qemu\n");
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(
        err.contains("binary") && err.contains("/nonexistent/qemu"),
        "{err}"
    );
    let not_exec = w.write("not-qemu", "just a file");
    let f = w.write(
        "noexec.yaml",
        &format!("name: t\nbinary: {}\n", not_exec.display()),
    );
    let err = w.fails(4, &["add", f.to_str().unwrap()]);
    assert!(
        err.contains("binary") && err.contains("executable"),
        "{err}"
    );
}

#[test]
fn add_refuses_bad_names_and_duplicates() {
    let w = World::new("addname");
    let f = w.vm_yaml("ok", "");
    let err = w.fails(2, &["add", f.to_str().unwrap(), "--name", "bad name!"]);
    assert!(err.contains("letters, digits"), "{err}");
    let err = w.fails(2, &["add", f.to_str().unwrap(), "--name", ".hidden"]);
    assert!(err.contains("does not start with"), "{err}");
    let name = w.name("dup");
    w.ok(&["add", f.to_str().unwrap(), "--name", &name]);
    let err = w.fails(5, &["add", f.to_str().unwrap(), "--name", &name]);
    assert!(
        err.contains("already exists") && err.contains("maqet rm"),
        "{err}"
    );
    let err = w.fails(4, &["add", "/nonexistent/vm.yaml"]);
    assert!(err.contains("/nonexistent/vm.yaml"), "{err}");
}

#[test]
fn add_merges_files_left_to_right() {
    let w = World::new("addmerge");
    let base = w.write(
        "base.yaml",
        &format!("binary: {QEMU}\nmemory: 64M\narguments:\n  - accel: tcg\n  - display: none\n"),
    );
    let over = w.write("over.yaml", "name: merged\nmemory: 128M\n");
    let name = w.name("m");
    let out = w.ok(&[
        "add",
        base.to_str().unwrap(),
        "--vm-config",
        over.to_str().unwrap(),
        "--name",
        &name,
        "--json",
    ]);
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(added["name"], name.as_str());
    assert_eq!(added["sources"].as_array().unwrap().len(), 2);
    let v: serde_json::Value = serde_json::from_str(&w.ok(&["info", &name, "--json"])).unwrap();
    let argv: Vec<String> = serde_json::from_value(v["qemu_argv"].clone()).unwrap();
    let m = argv.iter().position(|a| a == "-m").unwrap();
    assert_eq!(argv[m + 1], "128M");
    assert_eq!(v["sources"].as_array().unwrap().len(), 2);
}

#[test]
fn unknown_vm_is_exit_3_everywhere() {
    let w = World::new("novm");
    for cmd in [
        &["start", "ghost"][..],
        &["stop", "ghost"],
        &["status", "ghost"],
        &["info", "ghost"],
        &["rm", "ghost"],
        &["qmp", "run", "ghost", "query-status"],
    ] {
        let err = w.fails(3, cmd);
        assert!(err.contains("no VM named 'ghost'"), "{cmd:?}: {err}");
    }
}

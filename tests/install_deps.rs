//! tests/session/install-deps.sh installs qemu-system-x86 and qemu-utils as
//! a pair from one QEMU release. CI's machine already has QEMU, so the
//! decision itself (tests/session/qemu-pair.sh) is run here on recorded
//! `apt-cache policy qemu-system-x86 qemu-utils` output of each situation.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/apt-policy").join(name)
}

/// (exit code, stdout lines, stderr) of the decision on one recorded policy.
fn decide(name: &str) -> (i32, Vec<String>, String) {
    let input = std::fs::File::open(fixture(name)).expect("fixture");
    let out = Command::new("bash")
        .arg(repo().join("tests/session/qemu-pair.sh"))
        .stdin(Stdio::from(input))
        .output()
        .expect("run qemu-pair.sh");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DEB12: &str = "1:7.2+dfsg-7+deb12u18+b2";
const BPO: &str = "1:10.0.2+ds-2+deb13u1~bpo12+1";

#[test]
fn an_image_with_backported_qemu_utils_only_gets_the_debian_12_pair_by_a_downgrade() {
    // The fresh image of the issue: qemu-utils 10.0 from a backports .deb, no
    // backports source, no qemu-system-x86.
    let (code, lines, err) = decide("backports-utils-only.txt");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lines,
        [
            format!("qemu-system-x86={DEB12}"),
            format!("qemu-utils={DEB12}"),
            "--allow-downgrades".to_owned()
        ]
    );
}

#[test]
fn backports_that_are_only_available_do_not_decide_the_pair() {
    // The backports source is there but not pinned: apt picks Debian 12's
    // qemu-system-x86, so qemu-utils comes down to it.
    let (code, lines, err) = decide("backports-unpinned.txt");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lines,
        [
            format!("qemu-system-x86={DEB12}"),
            format!("qemu-utils={DEB12}"),
            "--allow-downgrades".to_owned()
        ]
    );
}

#[test]
fn pinned_backports_give_both_packages_from_backports() {
    let (code, lines, err) = decide("backports-pinned.txt");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lines,
        [
            format!("qemu-system-x86={BPO}"),
            format!("qemu-utils={BPO}")
        ],
        "an upgrade needs no --allow-downgrades"
    );
}

#[test]
fn a_matching_installed_pair_needs_nothing() {
    for name in [
        "debian12-pair-installed.txt",
        "backports-pair-installed.txt",
    ] {
        let (code, lines, err) = decide(name);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(lines.is_empty(), "{name}: {lines:?}");
    }
}

#[test]
fn a_fresh_machine_installs_the_candidate_pair() {
    let (code, lines, err) = decide("fresh.txt");
    assert_eq!(code, 0, "{err}");
    let v = "1:7.2+dfsg-7+deb12u18+b3";
    assert_eq!(
        lines,
        [format!("qemu-system-x86={v}"), format!("qemu-utils={v}")]
    );
}

#[test]
fn an_installed_qemu_without_a_source_for_its_qemu_utils_is_a_clear_error() {
    let (code, lines, err) = decide("system-without-matching-utils.txt");
    assert_eq!(code, 1);
    assert!(lines.is_empty(), "{lines:?}");
    assert!(
        err.contains(&format!("no source offers qemu-utils {BPO}")),
        "{err}"
    );
}

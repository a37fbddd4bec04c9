//! `cloud_init`, `ports`, `ssh`, `guest_agent` and storage `base`/`sha256`
//! through the whole load → validate path (issue 11).

use super::tests::env;
use super::*;

#[test]
fn guest_keys_load_with_paths_resolved_against_the_file() {
    let env = env();
    env.file("img/base.qcow2", "x");
    env.file("keys/me.pub", "ssh-ed25519 AAAA me\n");
    env.file("ud.yaml", "#cloud-config\n");
    let cfg = env
        .doc(
            "storage:\n  - {name: root, base: img/base.qcow2, sha256: \"SHA256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\", size: 2G}\n\
             cloud_init:\n  user: alice\n  hostname: web-1\n  user_data_file: ud.yaml\n  \
             ssh_authorized_keys: [keys/me.pub, \"ssh-rsa AAAB inline\"]\n\
             ports: [8080:80, \"5353:53/udp\"]\nguest_agent: true\n",
        )
        .validate()
        .unwrap();
    let d = &cfg.storage()[0];
    assert_eq!(d.backing_file, Some(env.dir.join("img/base.qcow2")));
    assert_eq!(d.backing_format, Some(ImageFormat::Qcow2));
    assert_eq!(
        d.base_sha256.as_deref(),
        Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
    );
    assert_eq!(d.size, Some(2 << 30));
    let ci = cfg.guest.cloud_init.as_ref().unwrap();
    assert_eq!(ci.user.as_deref(), Some("alice"));
    assert_eq!(ci.user_data_file, Some(env.dir.join("ud.yaml")));
    assert_eq!(
        ci.ssh_authorized_keys.as_ref().unwrap(),
        &vec![
            env.dir.join("keys/me.pub").display().to_string(),
            "ssh-rsa AAAB inline".to_string()
        ]
    );
    assert_eq!(
        cfg.guest
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["8080:80/tcp", "5353:53/udp"]
    );
    assert!(cfg.guest.ssh_enabled() && cfg.guest.guest_agent);
    // The seed and NIC are the runner's additions, not the config's argv.
    let argv = env.argv("cloud_init: true\n");
    assert!(!argv
        .iter()
        .any(|a| a.contains("maqet-net") || a.contains("cidata")));
}

/// A privileged host port is refused as such at `add` (`start` said
/// "already in use (Permission denied)").
#[test]
fn privileged_host_ports_are_refused_as_such() {
    let env = env();
    let start = crate::unprivileged_port_start();
    let yaml = "ports: [\"80:80\", \"8080:8080\"]\n";
    if start > 80 {
        let e = env.error(yaml);
        assert!(
            e.contains(&format!(
                "ports[0]: host port 80 is below {start} (net.ipv4.ip_unprivileged_port_start): binding it needs privileges"
            )),
            "{e}"
        );
        assert!(!e.contains("ports[1]"), "{e}");
    } else {
        // This host lets users bind port 80.
        env.doc(yaml).validate().unwrap();
    }
}

/// `networks:` in both item forms, and `ports: auto` with the agent.
#[test]
fn networks_and_automatic_ports_load() {
    let env = env();
    let cfg = env
        .doc(
            "networks: [lab, {name: dmz, mac: \"52:54:00:AA:00:01\"}]\n\
             ports: [auto, \"127.0.0.2:8080:80\"]\nguest_agent: true\n",
        )
        .validate()
        .unwrap();
    let nets = &cfg.networks.segments;
    assert_eq!(nets.len(), 2);
    assert_eq!(
        (nets[0].name.as_str(), nets[0].mac.as_deref()),
        ("lab", None)
    );
    assert_eq!(
        (nets[1].name.as_str(), nets[1].mac.as_deref()),
        ("dmz", Some("52:54:00:aa:00:01"))
    );
    assert!(
        cfg.networks.vde_switch.is_some(),
        "vde_switch found in PATH"
    );
    assert!(cfg.guest.auto_ports && cfg.guest.wants_network());
    assert_eq!(cfg.guest.ports[0].to_string(), "127.0.0.2:8080:80/tcp");
    let cfg = env
        .doc("ports: auto\nguest_agent: true\n")
        .validate()
        .unwrap();
    assert!(cfg.guest.auto_ports && cfg.guest.ports.is_empty());
}

#[test]
fn guest_key_errors_name_the_key() {
    let env = env();
    env.file("b.qcow2", "x");
    let cases: &[(&str, &str)] = &[
        (
            "storage:\n  - {base: b.qcow2, backing_file: b.qcow2}\n",
            "storage[0].base: give base or backing_file, not both",
        ),
        (
            "storage:\n  - {size: 1G, sha256: abc}\n",
            "storage[0].sha256: given without a base",
        ),
        (
            "storage:\n  - {base: b.qcow2, sha256: abc}\n",
            "storage[0].sha256: expected 64 hexadecimal digits",
        ),
        // Errors about a base name `base`, the key the user wrote (they
        // said `backing_file`).
        (
            "storage:\n  - {name: r, base: missing.qcow2}\n",
            "storage[0].base: ",
        ),
        (
            "storage:\n  - {name: r, type: raw, base: b.qcow2}\n",
            "storage[0].base: only qcow2 images can have a backing file",
        ),
        ("ports: [\"80\"]\n", "ports[0]: '80' is not [ADDR:]HOST:GUEST"),
        (
            "ports: [\"0.0.0.0:8080:80\"]\n",
            "ports[0]: host address 0.0.0.0 is not a loopback address",
        ),
        (
            "ports: auto\n",
            "ports: auto finds the guest's listening ports through the QEMU guest agent",
        ),
        ("ports: [auto, auto]\nguest_agent: true\n", "ports[1]: auto is already listed"),
        ("ports: manual\n", "ports: expected a list like ['8080:80'] or auto"),
        (
            "ports: [\"8080:80\", \"8080:81\"]\n",
            "ports[1]: host port 8080 is already forwarded (8080:80/tcp)",
        ),
        ("ports: 8080\n", "ports: expected a list"),
        ("ssh: \"yes\"\n", "ssh: expected true or false"),
        (
            "cloud_init: {hostnme: x}\n",
            "unknown key 'cloud_init.hostnme' (did you mean 'hostname'?)",
        ),
        (
            "cloud_init: {default_user: maybe}\n",
            "cloud_init.default_user: expected true or false",
        ),
        (
            "cloud_init: {user_data: x, user_data_file: y}\n",
            "give user_data or user_data_file, not both",
        ),
        (
            "cloud_init: {hostname: \"a_b\"}\n",
            "cloud_init.hostname: 'a_b' is not a valid host name",
        ),
        ("cloud_init: {user: \"-x\"}\n", "is not a valid user name"),
        ("cloud_init: 3\n", "cloud_init: expected a mapping or true"),
        // issue 19: networks
        ("networks: lab\n", "networks: expected a list of network names"),
        ("networks: [\"lab/x\"]\n", "networks[0]: invalid network name 'lab/x'"),
        ("networks: [\"-lab\"]\n", "invalid network name '-lab'"),
        ("networks: [\"lab.pid\"]\n", "invalid network name 'lab.pid'"),
        ("networks: [lab, lab]\n", "networks[1]: network 'lab' is already listed"),
        ("networks: [{nme: lab}]\n", "unknown key 'networks[0].nme' (did you mean 'name'?)"),
        ("networks: [{mac: \"52:54:00:00:00:01\"}]\n", "networks[0]: a network needs a name"),
        (
            "networks: [{name: lab, mac: \"01:00:5e:00:00:01\"}]\n",
            "networks[0].mac: '01:00:5e:00:00:01' is a multicast address",
        ),
        (
            "networks: [{name: a, mac: \"52:54:00:00:00:01\"}, {name: b, mac: \"52:54:00:00:00:01\"}]\n",
            "networks[1]: mac 52:54:00:00:00:01 is already the mac of network 'a'",
        ),
        (
            "networks: [a, b, c, d, e, f, g, h, i]\n",
            "networks: 9 networks listed; a VM joins at most 8",
        ),
    ];
    for (body, want) in cases {
        let e = env.error(body);
        assert!(e.contains(want), "{body}: {e}");
        assert!(e.contains(&env.vm_yaml()), "{body}: no location in {e}");
    }
}

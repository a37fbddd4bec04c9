//! QEMU's option strings (`file=a.qcow2,if=virtio`): one reading of their
//! commas for every module that splits or writes them — the config
//! renderer and checks, disk specs on the command line, and the search for
//! files a running QEMU has open. A comma inside a value is written `,,`.
//!
//! The QMP/host-command policy (`crate::host_exec`) reads options key by
//! key as QemuOpts does (implied keys, `noNAME`), which needs its own
//! parser; its values unescape `,,` the same way.

/// Escapes a value for an option string: each comma doubled.
pub fn escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// Splits an option string into its parts as QEMU does: at single commas,
/// `,,` being a literal comma (kept escaped in the parts).
pub fn split(s: &str) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            if bytes.get(i + 1) == Some(&b',') {
                i += 2;
                continue;
            }
            parts.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// The parts of an option string as QEMU reads them: split at single
/// commas, each `,,` read as one comma.
pub fn split_unescaped(s: &str) -> Vec<String> {
    split(s).into_iter().map(|p| p.replace(",,", ",")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_as_qemu_reads_them() {
        assert_eq!(escape("/a,b/c"), "/a,,b/c");
        assert_eq!(split("file=/a,,b,if=virtio"), ["file=/a,,b", "if=virtio"]);
        assert_eq!(
            split_unescaped("file=/a,,b,if=virtio"),
            ["file=/a,b", "if=virtio"]
        );
        assert_eq!(split(""), [""]);
        assert_eq!(split("a,"), ["a", ""]);
        assert_eq!(split_unescaped(",,,"), [",", ""]);
        assert_eq!(split_unescaped("a,,,,b"), ["a,,b"]);
    }
}

//! Distributions' published checksum files: `SHA256SUMS`/`SHA512SUMS`
//! (GNU style: `HEX  NAME`, `HEX *NAME`), Fedora's `CHECKSUM` (BSD style:
//! `SHA256 (NAME) = HEX`, inside a PGP clear-signed wrapper), and the
//! one-line `FILE.sha512`/`FILE.SHA256` files of Alpine and Arch. Lines
//! that are neither (comments, signatures, blank) are skipped.

use super::digest::{Algorithm, Digest};

/// The digest a checksum file gives for `file_name`.
///
/// `sole_entry_ok`: the checksum file belongs to this one file (its URL is
/// the file's plus a suffix, like `…qcow2.SHA256`), so a single entry
/// counts even when it names the file differently (Arch's `latest/` lists
/// the dated name of the file it links to). When several algorithms are
/// listed, the strongest wins; two different digests of one algorithm for
/// the file are an error.
pub fn find(text: &str, file_name: &str, sole_entry_ok: bool) -> Result<Option<Digest>, String> {
    let entries: Vec<(String, Digest)> = text.lines().filter_map(parse_line).collect();
    let mut found: Vec<&Digest> = entries
        .iter()
        .filter(|(name, _)| names_file(name, file_name))
        .map(|(_, d)| d)
        .collect();
    if found.is_empty() && sole_entry_ok && entries.len() == 1 {
        found.push(&entries[0].1);
    }
    let Some(best) = found.iter().map(|d| d.alg).max() else {
        return Ok(None);
    };
    let mut of_best = found.into_iter().filter(|d| d.alg == best);
    let first = of_best.next().expect("the best algorithm was found");
    if of_best.any(|d| d != first) {
        return Err(format!(
            "it lists different {} digests for {file_name}",
            best.name()
        ));
    }
    Ok(Some(first.clone()))
}

/// One entry: the file name as written and its digest.
fn parse_line(line: &str) -> Option<(String, Digest)> {
    let line = line.trim_end_matches('\r').trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // BSD: `SHA256 (NAME) = HEX`
    if let Some((tag, rest)) = line.split_once(" (") {
        let alg = match tag {
            "SHA256" => Algorithm::Sha256,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        };
        let (name, hex) = rest.rsplit_once(") = ")?;
        return Some((name.to_string(), Digest::new(alg, hex.trim())?));
    }
    // GNU: `HEX  NAME` or `HEX *NAME` (binary mode).
    let (hex, name) = line.split_once(char::is_whitespace)?;
    let alg = Algorithm::of_hex_len(hex.len())?;
    let name = name.trim_start().trim_start_matches('*');
    if name.is_empty() {
        return None;
    }
    Some((name.to_string(), Digest::new(alg, hex)?))
}

/// Whether an entry's name is the file (`./NAME` and `dir/NAME` count).
fn names_file(entry: &str, file_name: &str) -> bool {
    entry == file_name || entry.rsplit('/').next() == Some(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const B256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sha512(c: char) -> String {
        std::iter::repeat_n(c, 128).collect()
    }

    #[test]
    fn gnu_style_with_text_and_binary_markers() {
        let text = format!("{B256}  other.qcow2\n{A256} *ubuntu-24.04-server-cloudimg-amd64.img\n");
        let d = find(&text, "ubuntu-24.04-server-cloudimg-amd64.img", false)
            .unwrap()
            .unwrap();
        assert_eq!(d.to_string(), format!("sha256:{A256}"));
        assert_eq!(find(&text, "absent.img", false).unwrap(), None);
    }

    #[test]
    fn debian_sha512sums() {
        let text = format!(
            "{}  debian-12-genericcloud-amd64.json\n{}  debian-12-genericcloud-amd64.qcow2\n",
            sha512('a'),
            sha512('b')
        );
        let d = find(&text, "debian-12-genericcloud-amd64.qcow2", false)
            .unwrap()
            .unwrap();
        assert_eq!(d.alg, Algorithm::Sha512);
        assert_eq!(d.hex, sha512('b'));
    }

    #[test]
    fn fedora_bsd_style_inside_a_signature() {
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n\
             # Fedora-Cloud-Base-Generic-44-1.7.x86_64.qcow2: 123 bytes\n\
             SHA256 (Fedora-Cloud-Base-Generic-44-1.7.x86_64.qcow2) = {A256}\n\
             -----BEGIN PGP SIGNATURE-----\n\nwsFzBAEBCAAdFiEE\n-----END PGP SIGNATURE-----\n"
        );
        let d = find(
            &text,
            "Fedora-Cloud-Base-Generic-44-1.7.x86_64.qcow2",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.hex, A256);
    }

    #[test]
    fn a_one_file_checksum_file_may_name_it_differently() {
        let text = format!("{A256}  Arch-Linux-x86_64-cloudimg-20260715.556894.qcow2\n");
        assert_eq!(
            find(&text, "Arch-Linux-x86_64-cloudimg.qcow2", false).unwrap(),
            None
        );
        let d = find(&text, "Arch-Linux-x86_64-cloudimg.qcow2", true)
            .unwrap()
            .unwrap();
        assert_eq!(d.hex, A256);
    }

    #[test]
    fn strongest_algorithm_wins_and_conflicts_are_errors() {
        let text = format!("{A256}  f.img\n{}  f.img\n", sha512('c'));
        assert_eq!(
            find(&text, "f.img", false).unwrap().unwrap().alg,
            Algorithm::Sha512
        );
        let text = format!("{A256}  f.img\n{B256}  ./f.img\n");
        assert!(find(&text, "f.img", false)
            .unwrap_err()
            .contains("different"));
    }
}

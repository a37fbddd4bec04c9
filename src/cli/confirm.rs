//! Asking before something that cannot be undone (`rm --all`): on a
//! terminal the user answers y/N; without one nobody can, so `--yes` must
//! say it beforehand.

use std::io::{BufRead, Write};

use super::exit::{code, CliError};

/// Whether to go on. `--yes` goes on without asking; otherwise `prompt`
/// is written to `out` and one line read from `input` (only `y`/`yes`,
/// any case, goes on; anything else or end of input is "no"). Without a
/// terminal on stdin (`tty` false) nothing is asked and `refusal` is the
/// usage error.
pub fn confirm(
    prompt: &str,
    yes: bool,
    tty: bool,
    refusal: &str,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<bool, CliError> {
    if yes {
        return Ok(true);
    }
    if !tty {
        return Err(CliError::usage(refusal));
    }
    write!(out, "{prompt} [y/N] ")?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Asks (on stdin's terminal) whether to discard the saved running state
/// of each of `saved` — the guests' unsaved work is lost with it; `flag`
/// is the option that says yes beforehand (`--yes`). True when there is
/// nothing to ask about.
pub fn discard_states(
    saved: &[(crate::vmname::VmName, crate::vm::SavedView)],
    yes: bool,
    what: &str,
) -> Result<bool, CliError> {
    use std::io::IsTerminal;
    if saved.is_empty() {
        return Ok(true);
    }
    let list: Vec<String> = saved
        .iter()
        .map(|(vm, v)| format!("{vm}: {}", super::output::saved_line(v)))
        .collect();
    let prompt = format!(
        "{what} discards the saved running state of:\n  {}\nWhat ran in the guest since its last boot is lost. Discard?",
        list.join("\n  ")
    );
    let refusal = format!(
        "{what} would discard the saved running state of {}, and stdin is not a terminal to ask on; add --yes to discard without asking",
        saved
            .iter()
            .map(|(vm, _)| format!("'{vm}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let stdin = std::io::stdin();
    confirm(
        &prompt,
        yes,
        stdin.is_terminal(),
        &refusal,
        &mut stdin.lock(),
        &mut std::io::stderr(),
    )
}

/// The error of a question answered "no": nothing was done.
pub fn cancelled(what: &str) -> CliError {
    CliError::new(code::FAILURE, format!("cancelled: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(yes: bool, tty: bool, typed: &str) -> (Result<bool, CliError>, String) {
        let mut out = Vec::new();
        let r = confirm(
            "Remove 2 VMs?",
            yes,
            tty,
            "pass --yes",
            &mut typed.as_bytes(),
            &mut out,
        );
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn only_a_typed_yes_goes_on() {
        for typed in ["y\n", "Y\n", "yes\n", " YES \n"] {
            let (r, out) = ask(false, true, typed);
            assert!(r.unwrap(), "{typed:?}");
            assert_eq!(out, "Remove 2 VMs? [y/N] ");
        }
        for typed in ["n\n", "\n", "", "yep\n", "no\n"] {
            assert!(!ask(false, true, typed).0.unwrap(), "{typed:?}");
        }
    }

    #[test]
    fn without_a_terminal_only_yes_goes_on_and_nothing_is_asked() {
        let (r, out) = ask(false, false, "y\n");
        let e = r.unwrap_err();
        assert_eq!(e.code, code::USAGE);
        assert_eq!(e.message, "pass --yes");
        assert!(out.is_empty());
        for tty in [true, false] {
            let (r, out) = ask(true, tty, "");
            assert!(r.unwrap());
            assert!(out.is_empty(), "--yes asks nothing");
        }
    }
}

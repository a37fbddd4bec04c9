//! `maqet wait VM --for ssh|agent|cloud-init`: readiness for scripts, and
//! what `maqet launch` waits for.
//!
//! - `ssh`: an ssh login runs `true` (BatchMode, the seed's keys) — the
//!   banner alone is not enough: sshd answers before cloud-init has put
//!   the keys in place.
//! - `agent`: the guest agent answers `guest-ping`.
//! - `cloud-init`: `/run/cloud-init/result.json` exists in the guest, the
//!   file cloud-init writes when its last stage is done (on a tmpfs, so
//!   it is this boot's); its `errors` decide done or error. It is read
//!   through the guest agent when one answers, else over ssh.
//!
//! Every step is bounded by the one deadline; a VM that stops meanwhile
//! ends the wait at once.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

use maqet_base::vmname::VmName;
use maqet_host::guest_agent::Agent;

use super::access::{AccessError, SshRequest};
use super::{stored_config, Notice, Notify, Runners, UnitManager, VmError, Vms};

/// The file cloud-init writes when it has finished (all stages).
pub const CLOUD_INIT_RESULT: &str = "/run/cloud-init/result.json";
/// Pause between two tries.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    Ssh,
    Agent,
    CloudInit,
}

impl Readiness {
    pub fn name(self) -> &'static str {
        match self {
            Readiness::Ssh => "ssh",
            Readiness::Agent => "the guest agent",
            Readiness::CloudInit => "cloud-init",
        }
    }
}

/// What cloud-init reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudInitResult {
    /// `done` or `error`.
    pub status: &'static str,
    pub datasource: Option<String>,
    pub errors: Vec<String>,
    /// Problems cloud-init recovered from (`recoverable_errors`).
    pub warnings: Vec<String>,
    /// `guest agent` or `ssh`.
    pub via: &'static str,
}

impl CloudInitResult {
    /// Parses `result.json` (`{"v1": {"datasource": …, "errors": […]}}`).
    pub fn parse(bytes: &[u8], via: &'static str) -> Result<CloudInitResult, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("{CLOUD_INIT_RESULT}: {e}"))?;
        let v1 = v
            .get("v1")
            .ok_or_else(|| format!("{CLOUD_INIT_RESULT} has no \"v1\" object"))?;
        let text = |e: &serde_json::Value| e.as_str().map_or_else(|| e.to_string(), String::from);
        let errors: Vec<String> = v1["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let warnings = v1["recoverable_errors"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(level, list)| {
                list.as_array()
                    .into_iter()
                    .flatten()
                    .map(move |m| format!("{level}: {}", text(m)))
            })
            .collect();
        Ok(CloudInitResult {
            status: if errors.is_empty() { "done" } else { "error" },
            datasource: v1["datasource"].as_str().map(String::from),
            errors,
            warnings,
            via,
        })
    }
}

/// What was waited for, and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    pub vm: String,
    pub what: Readiness,
    /// `debian@127.0.0.1:40022`, …
    pub detail: String,
    pub cloud_init: Option<CloudInitResult>,
    pub waited_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("VM '{vm}' is not running (start it with `maqet start {vm}`)")]
    NotRunning { vm: VmName },
    #[error("VM '{vm}': {what} was not ready within {}s{}", waited.as_secs(), if last.is_empty() { String::new() } else { format!(" (last: {last})") })]
    Timeout {
        vm: VmName,
        what: &'static str,
        waited: Duration,
        last: String,
    },
    #[error("VM '{vm}' has {}; set `guest_agent: true`{} in its config", match what { Readiness::Agent => "no guest agent channel", _ => "neither a guest agent nor ssh to ask" }, if *what == Readiness::Agent { "" } else { " or `ssh: true`" })]
    NoChannel { vm: VmName, what: Readiness },
    #[error("VM '{vm}': cloud-init finished with errors (read through the {}): {}", result.via, result.errors.join("; "))]
    CloudInitFailed {
        vm: VmName,
        result: Box<CloudInitResult>,
    },
}

/// One try at a readiness: ready (with a detail), or why not yet.
enum Try<T> {
    Ready(T),
    NotYet(String),
}

impl<U: UnitManager, R: Runners> Vms<U, R> {
    /// Starts `vm` (QEMU gets `start_timeout` to answer) and waits up to
    /// `timeout` until it is ready as `what` says (`maqet launch`); a
    /// [`Notice::Waiting`] tells when the start is done and the wait begins.
    pub async fn start_and_wait(
        &self,
        vm: &VmName,
        start_timeout: Duration,
        what: Readiness,
        timeout: Duration,
        ssh: &OsStr,
        notify: Notify<'_>,
    ) -> Result<Ready, VmError> {
        self.start(vm, start_timeout, notify).await?;
        notify(Notice::Waiting {
            vm: vm.clone(),
            what,
            timeout,
        });
        self.wait_ready(vm, what, timeout, ssh).await
    }

    /// Waits until running `vm` is ready as `what` says, at most
    /// `timeout`. `ssh` is the ssh program to run.
    pub async fn wait_ready(
        &self,
        vm: &VmName,
        what: Readiness,
        timeout: Duration,
        ssh: &OsStr,
    ) -> Result<Ready, VmError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let rec = self.record(vm)?;
        let cfg = stored_config(&rec)?;
        let has_agent = cfg.guest.guest_agent;
        let has_ssh = cfg.guest.ssh_enabled();
        match what {
            Readiness::Agent if !has_agent => {
                return Err(WaitError::NoChannel {
                    vm: vm.clone(),
                    what,
                }
                .into())
            }
            Readiness::Ssh if !has_ssh => {
                return Err(AccessError::NoSshPort { vm: vm.clone() }.into())
            }
            Readiness::CloudInit if !has_agent && !has_ssh => {
                return Err(WaitError::NoChannel {
                    vm: vm.clone(),
                    what,
                }
                .into())
            }
            _ => {}
        }
        let mut last = String::new();
        loop {
            if !self.is_running(vm).await? {
                return Err(WaitError::NotRunning { vm: vm.clone() }.into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout {
                    vm: vm.clone(),
                    what: what.name(),
                    waited: timeout,
                    last,
                }
                .into());
            }
            let attempt = match what {
                Readiness::Ssh => self
                    .try_ssh(vm, left, ssh, "true")
                    .await?
                    .map(|(d, _)| (d, None)),
                Readiness::Agent => try_agent(vm, left)
                    .await
                    .map(|()| ("guest-ping answered".to_string(), None)),
                Readiness::CloudInit => self
                    .try_cloud_init(vm, left, ssh, has_agent, has_ssh)
                    .await?
                    .map(|r| (format!("cloud-init {} (via {})", r.status, r.via), Some(r))),
            };
            match attempt {
                Try::Ready((detail, cloud_init)) => {
                    if let Some(r) = cloud_init.as_ref().filter(|r| r.status != "done") {
                        return Err(WaitError::CloudInitFailed {
                            vm: vm.clone(),
                            result: Box::new(r.clone()),
                        }
                        .into());
                    }
                    return Ok(Ready {
                        vm: vm.to_string(),
                        what,
                        detail,
                        cloud_init,
                        waited_ms: started.elapsed().as_millis() as u64,
                    });
                }
                Try::NotYet(why) => last = why,
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Runs `command` over ssh (BatchMode): its output when it exits 0.
    async fn try_ssh(
        &self,
        vm: &VmName,
        left: Duration,
        ssh: &OsStr,
        command: &str,
    ) -> Result<Try<(String, Vec<u8>)>, VmError> {
        let cmd = [command.to_string()];
        let req = SshRequest {
            user: None,
            command: &cmd,
            wait: left.min(Duration::from_secs(10)),
        };
        let plan = match self.ssh_plan(vm, &req).await {
            Ok(p) => p,
            Err(VmError::Access(AccessError::NoSshServer { port, .. })) => {
                return Ok(Try::NotYet(format!(
                    "no ssh server answers on 127.0.0.1:{port} yet"
                )))
            }
            Err(e) => return Err(e),
        };
        let run = tokio::process::Command::new(ssh)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(&plan.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(left, run).await {
            Err(_) => return Ok(Try::NotYet("ssh did not finish in time".into())),
            Ok(Err(e)) => {
                return Err(VmError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", ssh.to_string_lossy()),
                )))
            }
            Ok(Ok(o)) => o,
        };
        let user = plan
            .args
            .iter()
            .rev()
            .find_map(|a| a.to_str().filter(|s| s.contains('@')).map(String::from))
            .unwrap_or_default();
        if out.status.success() {
            return Ok(Try::Ready((
                format!("ssh {user}:{}", plan.port),
                out.stdout,
            )));
        }
        let said = String::from_utf8_lossy(&out.stderr);
        Ok(Try::NotYet(format!(
            "ssh exited with {}{}",
            out.status.code().unwrap_or(-1),
            said.lines()
                .last()
                .map(|l| format!(": {}", l.trim()))
                .unwrap_or_default()
        )))
    }

    async fn try_cloud_init(
        &self,
        vm: &VmName,
        left: Duration,
        ssh: &OsStr,
        has_agent: bool,
        has_ssh: bool,
    ) -> Result<Try<CloudInitResult>, VmError> {
        let mut why = Vec::new();
        if has_agent {
            let path = maqet_host::guest_agent::socket_path(vm)?;
            let read = tokio::task::spawn_blocking(move || {
                Agent::connect(&path, Duration::from_secs(2))?.read_file(CLOUD_INIT_RESULT, 1 << 20)
            })
            .await
            .map_err(|e| VmError::Io(std::io::Error::other(e.to_string())))?;
            match read {
                Ok(Some(bytes)) => return parsed(&bytes, "guest agent"),
                // The agent answers: it is the way to ask; cloud-init is not done.
                Ok(None) => {
                    return Ok(Try::NotYet(format!(
                        "{CLOUD_INIT_RESULT} does not exist yet"
                    )))
                }
                Err(e) => why.push(format!("guest agent: {e}")),
            }
        }
        if has_ssh {
            let cmd = format!("cat {CLOUD_INIT_RESULT}");
            match self.try_ssh(vm, left, ssh, &cmd).await? {
                Try::Ready((_, out)) => return parsed(&out, "ssh"),
                Try::NotYet(w) => why.push(w),
            }
        }
        Ok(Try::NotYet(why.join("; ")))
    }
}

fn parsed(bytes: &[u8], via: &'static str) -> Result<Try<CloudInitResult>, VmError> {
    CloudInitResult::parse(bytes, via)
        .map(Try::Ready)
        .or_else(|e| Ok(Try::NotYet(e)))
}

impl<T> Try<T> {
    fn map<V>(self, f: impl FnOnce(T) -> V) -> Try<V> {
        match self {
            Try::Ready(t) => Try::Ready(f(t)),
            Try::NotYet(w) => Try::NotYet(w),
        }
    }
}

/// One `guest-ping`, off the runtime's thread.
async fn try_agent(vm: &VmName, left: Duration) -> Try<()> {
    let path = match maqet_host::guest_agent::socket_path(vm) {
        Ok(p) => p,
        Err(e) => return Try::NotYet(e.to_string()),
    };
    let wait = left.min(Duration::from_secs(2));
    let r = tokio::task::spawn_blocking(move || {
        Agent::connect(&path, wait)?
            .call("guest-ping", None)
            .map(drop)
    })
    .await;
    match r {
        Ok(Ok(())) => Try::Ready(()),
        Ok(Err(e)) => Try::NotYet(e.to_string()),
        Err(e) => Try::NotYet(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_init_results_are_read_as_cloud_init_writes_them() {
        let ok = br#"{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/vdb]", "errors": []}}"#;
        let r = CloudInitResult::parse(ok, "ssh").unwrap();
        assert_eq!(r.status, "done");
        assert_eq!(
            r.datasource.as_deref(),
            Some("DataSourceNoCloud [seed=/dev/vdb]")
        );
        let bad = br#"{"v1": {"datasource": null, "errors": ["('users_groups', KeyError('x'))"],
            "recoverable_errors": {"WARNING": ["no network config"]}}}"#;
        let r = CloudInitResult::parse(bad, "guest agent").unwrap();
        assert_eq!(r.status, "error");
        assert_eq!(r.errors, ["('users_groups', KeyError('x'))"]);
        assert_eq!(r.warnings, ["WARNING: no network config"]);
        assert!(CloudInitResult::parse(b"{}", "ssh")
            .unwrap_err()
            .contains("v1"));
        assert!(CloudInitResult::parse(b"not json", "ssh").is_err());
    }
}

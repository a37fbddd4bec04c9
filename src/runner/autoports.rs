//! `ports: auto` (issue 19, Lima's automatic forwards): every
//! [`INTERVAL`] the runner reads the guest's `/proc/net/tcp` and
//! `/proc/net/tcp6` through the guest agent (`guest-file-open`/`-read`,
//! nothing to install beyond qemu-guest-agent), and makes the automatic
//! forwards those of the TCP ports the guest listens on where the user
//! network reaches them (all addresses, or its address 10.0.2.15);
//! loopback-only listeners are the guest's own business and are left out.
//! [`super::forwards::Forwards::sync_auto`] adds and removes them.
//!
//! The agent's channel takes one client at a time: a poll holds it for a
//! moment, and never while the runner's own agent work (a freeze around a
//! live save, the agent's shutdown) holds the [`AgentGate`]; a busy or
//! silent agent skips a round.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::forwards::Forwards;
use maqet_host::guest_agent::{Agent, AgentError};

/// How often the guest's listeners are read: a new listener is forwarded
/// within about this long (and a couple of seconds under load).
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long one poll waits for the agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest table read (a guest with thousands of sockets still fits).
const TABLE_LIMIT: usize = 4 << 20;

/// Serialises the runner's own sessions with the guest agent.
pub type AgentGate = Arc<tokio::sync::Mutex<()>>;

/// The user network's address of the guest (QEMU's DHCP hands it out).
const USER_NET_GUEST: [u8; 4] = [10, 0, 2, 15];

/// Polls until the runner ends.
pub async fn watch(forwards: Arc<Forwards>, agent: PathBuf, gate: AgentGate) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answering: Option<bool> = None;
    loop {
        tick.tick().await;
        let Ok(_held) = gate.try_lock() else {
            continue;
        };
        let socket = agent.clone();
        let read = tokio::task::spawn_blocking(move || read_tables(&socket)).await;
        let tables = match read {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                if answering != Some(false) {
                    tracing::info!("ports: auto waits for the guest agent ({e})");
                }
                answering = Some(false);
                continue;
            }
            Err(e) => {
                tracing::warn!("ports: auto: reading the guest's ports failed: {e}");
                continue;
            }
        };
        if answering != Some(true) {
            tracing::info!("ports: auto follows the guest's listening TCP ports");
        }
        answering = Some(true);
        let mut listening = listeners(&tables.0, false);
        listening.extend(listeners(&tables.1, true));
        forwards.sync_auto(&listening).await;
    }
}

/// `/proc/net/tcp` and `/proc/net/tcp6` of the guest (tcp6 is empty
/// without IPv6).
fn read_tables(socket: &std::path::Path) -> Result<(String, String), AgentError> {
    let mut a = Agent::connect(socket, AGENT_TIMEOUT)?;
    let mut read = |path: &str| -> Result<String, AgentError> {
        let bytes = a.read_file(path, TABLE_LIMIT)?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok((read("/proc/net/tcp")?, read("/proc/net/tcp6")?))
}

/// The ports of the LISTEN sockets in a `/proc/net/tcp` (or, with `v6`,
/// `tcp6`) table that the user network reaches. The kernel prints each
/// address word as a host-order integer: little-endian guests (x86,
/// arm64, riscv64) are read here.
pub fn listeners(table: &str, v6: bool) -> BTreeSet<u16> {
    const LISTEN: &str = "0A";
    let mut out = BTreeSet::new();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != LISTEN {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let Some(bytes) = address_bytes(addr) else {
            continue;
        };
        let reachable = match (v6, bytes.len()) {
            (false, 4) => bytes.iter().all(|b| *b == 0) || bytes == USER_NET_GUEST,
            (true, 16) => {
                let mapped = bytes[..10].iter().all(|b| *b == 0) && bytes[10..12] == [0xff, 0xff];
                bytes.iter().all(|b| *b == 0) || (mapped && bytes[12..] == USER_NET_GUEST)
            }
            _ => false,
        };
        if reachable && port != 0 {
            out.insert(port);
        }
    }
    out
}

/// An address as the kernel prints it — 32-bit words, each `%08X` of its
/// host-order value — back to network-order bytes.
fn address_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 8 != 0 || hex.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    for word in hex.as_bytes().chunks(8) {
        let w = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        out.extend(w.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0F02000A:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 014DA8C0:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   4: 0F02000A:0016 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F98 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1F99 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0
   2: 0000000000000000FFFF00000F02000A:1F9A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0 100 0 0 10 0
   3: 0000000000000000FFFF00000100007F:1F9B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9 1 0 100 0 0 10 0
";

    #[test]
    fn only_listeners_the_user_network_reaches_count() {
        // 22 on all addresses, 9090 on 10.0.2.15; not 8080 on 127.0.0.1,
        // not 8081 on another address (192.168.77.1), not an established
        // connection.
        assert_eq!(
            listeners(TCP, false).into_iter().collect::<Vec<_>>(),
            vec![22, 9090]
        );
        // :: and ::ffff:10.0.2.15; not ::1 or ::ffff:127.0.0.1.
        assert_eq!(
            listeners(TCP6, true).into_iter().collect::<Vec<_>>(),
            vec![8088, 8090]
        );
        assert!(listeners("", false).is_empty());
        assert!(listeners("header\n garbage line\n 0: zz:zz 0 0A", false).is_empty());
    }

    #[test]
    fn privileged_guest_ports_start_8000_higher() {
        assert_eq!(super::super::forwards::auto_host_start(80), 8080);
        assert_eq!(super::super::forwards::auto_host_start(8080), 8080);
        assert_eq!(super::super::forwards::auto_host_start(1023), 9023);
        assert!(super::super::forwards::auto_host_start(65535) >= 1024);
    }
}

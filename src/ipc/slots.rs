//! The runner's connection slots: at most [`MAX_CONNECTIONS`] clients at
//! once, so a flood of connections cannot exhaust the runner's file
//! descriptors. When every slot is taken, a new connection takes the slot of
//! the connection that has been idle (waiting for a request line) the
//! longest; only when none is idle is the newcomer refused. A flood of idle
//! connections therefore never locks maqet's own CLI out, which connects,
//! asks and hangs up at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Connections served at once. Far above what maqet's CLI needs (one per
/// command, plus `console`/`events` viewers), far below the 1024 descriptors
/// a systemd service gets by default.
pub const MAX_CONNECTIONS: usize = 64;

#[derive(Default)]
pub struct Slots {
    inner: Mutex<Inner>,
    /// Signalled whenever a slot is given back (the accept loop waits on it
    /// when the process is out of descriptors).
    pub freed: Notify,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Conn>,
}

struct Conn {
    /// `Some` while the connection waits for a request line.
    idle_since: Option<Instant>,
    evict: Arc<Notify>,
}

/// One connection's slot; given back on drop.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    evict: Arc<Notify>,
}

impl Slots {
    /// A slot for a new connection, which starts idle. When all
    /// `cap` are taken, the longest-idle connection is told to close and
    /// its slot is reused; `None` when every connection is busy.
    pub fn acquire(self: &Arc<Self>, cap: usize) -> Option<Slot> {
        let mut inner = self.inner.lock().unwrap();
        if inner.conns.len() >= cap {
            let oldest = inner
                .conns
                .iter()
                .filter_map(|(id, c)| c.idle_since.map(|t| (t, *id)))
                .min()?;
            if let Some(victim) = inner.conns.remove(&oldest.1) {
                // notify_one keeps a permit if the victim is not waiting yet.
                victim.evict.notify_one();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let evict = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Conn {
                idle_since: Some(Instant::now()),
                evict: evict.clone(),
            },
        );
        Some(Slot {
            id,
            slots: self.clone(),
            evict,
        })
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(c) = self.inner.lock().unwrap().conns.get_mut(&id) {
            c.idle_since = idle.then(Instant::now);
        }
    }
}

impl Slot {
    /// Waiting for the next request line: may be evicted from now on.
    pub fn idle(&self) {
        self.slots.set_idle(self.id, true);
    }

    /// Serving a request or streaming: never evicted.
    pub fn busy(&self) {
        self.slots.set_idle(self.id, false);
    }

    /// Resolves once a newer connection has taken this slot.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.inner.lock().unwrap().conns.remove(&self.id);
        // Evicted or not, the connection's descriptor is closed now.
        self.slots.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn full_slots_evict_the_longest_idle_and_spare_busy_ones() {
        let slots = Arc::new(Slots::default());
        let a = slots.acquire(2).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = slots.acquire(2).unwrap();
        // a is the longest idle: it goes.
        let c = slots.acquire(2).unwrap();
        tokio::time::timeout(Duration::from_secs(1), a.evicted())
            .await
            .expect("a was evicted");
        assert_eq!(slots.len(), 2);
        // Busy connections are never evicted; with none idle, refuse.
        b.busy();
        c.busy();
        assert!(slots.acquire(2).is_none());
        c.idle();
        let d = slots.acquire(2).unwrap();
        tokio::time::timeout(Duration::from_secs(1), c.evicted())
            .await
            .expect("c was evicted");
        drop(a);
        drop(c);
        assert_eq!(slots.len(), 2);
        drop(b);
        drop(d);
        assert!(slots.is_empty());
    }
}

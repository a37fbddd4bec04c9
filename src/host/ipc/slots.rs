//! The runner's connection slots. A socket serves at most
//! [`MAX_CONNECTIONS`] clients at once, so a flood of connections cannot
//! exhaust the runner's file descriptors, and streams (`events`,
//! `console`, a negotiated QMP session) have caps of their own below that
//! ([`MAX_EVENT_STREAMS`], [`MAX_CONSOLES`]), so the rest of the slots are
//! always there for control: `status`, `stop`, `qmp`, and a console when
//! event streams are at their cap. When every slot is taken, a new
//! connection takes the slot of the connection that has been idle (waiting
//! for a request line) the longest; only when none is idle is the newcomer
//! refused. A stream asked for beyond its cap is refused with "too many
//! clients", and the connection stays usable for other requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Connections served at once. Far above what maqet's CLI needs (one per
/// command, plus `console`/`events` viewers), far below the 1024 descriptors
/// a systemd service gets by default (the runner serves two sockets).
pub const MAX_CONNECTIONS: usize = 96;
/// Event streams (maqet's `events`, a negotiated QMP session) at once.
pub const MAX_EVENT_STREAMS: usize = 32;
/// Console viewers at once.
pub const MAX_CONSOLES: usize = 16;

/// What a streaming connection streams; each kind has its own cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Events,
    Console,
}

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
    /// `Some` once the connection became a stream (for good).
    stream: Option<Stream>,
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
                stream: None,
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

    /// Connections streaming `kind` now.
    pub fn streams(&self, kind: Stream) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .conns
            .values()
            .filter(|c| c.stream == Some(kind))
            .count()
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

    /// Makes this connection a stream of `kind` (busy for good) when fewer
    /// than `cap` connections stream that kind; false, and nothing
    /// changed, when they are at the cap.
    pub fn stream(&self, kind: Stream, cap: usize) -> bool {
        let mut inner = self.slots.inner.lock().unwrap();
        let streaming = inner
            .conns
            .values()
            .filter(|c| c.stream == Some(kind))
            .count();
        let Some(me) = inner.conns.get_mut(&self.id) else {
            return false;
        };
        if me.stream == Some(kind) {
            return true;
        }
        if streaming >= cap {
            return false;
        }
        me.stream = Some(kind);
        me.idle_since = None;
        true
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

    #[test]
    fn each_stream_kind_has_its_own_cap_below_the_total() {
        let slots = Arc::new(Slots::default());
        let events: Vec<Slot> = (0..3).map(|_| slots.acquire(10).unwrap()).collect();
        assert!(events[0].stream(Stream::Events, 2));
        assert!(events[1].stream(Stream::Events, 2));
        assert!(events[1].stream(Stream::Events, 2), "asking twice is fine");
        // At the cap: refused, and the connection is still an idle one.
        assert!(!events[2].stream(Stream::Events, 2));
        assert_eq!(slots.streams(Stream::Events), 2);
        // Another kind is not affected, and control connections still fit.
        assert!(events[2].stream(Stream::Console, 1));
        let control = slots.acquire(10).unwrap();
        control.busy();
        drop(events);
        assert_eq!(slots.streams(Stream::Events), 0);
        assert_eq!(slots.len(), 1);
    }
}

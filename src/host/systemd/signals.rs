//! Signal streams drained in their own task.
//!
//! zbus gives every match-rule stream a bounded queue (64 messages). While
//! a stream is held but not polled — e.g. while the waiter awaits a method
//! reply to re-read a unit's state — a full queue stops the connection
//! from reading *anything*, the awaited reply included: the process then
//! waits in `epoll_wait` forever. Many VMs stopping at once produce enough
//! signals to fill it (seen: `maqet stop` of 40 VMs at once). So every
//! stream maqet waits on is polled continuously by a pump task that
//! forwards what matters into an unbounded channel; the waiter reads that
//! channel and the state, and always has a deadline.

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// Events forwarded from one or more signal streams; the pumps stop when
/// this is dropped. Add every stream before the first [`Pumped::next`].
pub struct Pumped<T> {
    rx: UnboundedReceiver<T>,
    tx: Option<UnboundedSender<T>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Pumped<T> {
    pub fn new() -> Self {
        let (tx, rx) = unbounded_channel();
        Pumped {
            rx,
            tx: Some(tx),
            tasks: Vec::new(),
        }
    }

    /// Drains `stream` from now on, forwarding what `map` keeps.
    pub fn add<S, F>(&mut self, mut stream: S, mut map: F)
    where
        S: Stream + Unpin + Send + 'static,
        F: FnMut(S::Item) -> Option<T> + Send + 'static,
    {
        let Some(tx) = self.tx.clone() else {
            debug_assert!(false, "Pumped::add after next");
            return;
        };
        self.tasks.push(tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                if let Some(t) = map(item) {
                    if tx.send(t).is_err() {
                        return;
                    }
                }
            }
        }));
    }

    /// The next forwarded event; `None` once every stream has ended.
    pub async fn next(&mut self) -> Option<T> {
        // From now on only the pumps hold senders: the channel closes
        // when the last stream ends.
        self.tx = None;
        self.rx.recv().await
    }
}

impl<T: Send + 'static> Default for Pumped<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for Pumped<T> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_what_map_keeps_and_ends_with_its_streams() {
        let mut p = Pumped::new();
        p.add(futures_util::stream::iter(1..=5), |x: i32| {
            (x % 2 == 1).then_some(x)
        });
        let mut got = vec![];
        while let Some(x) = p.next().await {
            got.push(x);
        }
        assert_eq!(got, [1, 3, 5]);
    }

    #[tokio::test]
    async fn a_slow_reader_never_blocks_the_stream() {
        // 1000 items pass although nobody reads until the stream ended.
        let mut p = Pumped::new();
        p.add(futures_util::stream::iter(0..1000), Some);
        tokio::task::yield_now().await;
        let mut n = 0;
        while p.next().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 1000);
    }
}

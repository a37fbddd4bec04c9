//! The VM's serial console: QEMU's end of a socketpair at [`CONSOLE_FD`]
//! (`-chardev socket,id=maqet-console,fd=5 -serial chardev:maqet-console`),
//! a ring buffer of recent output, fan-out to any number of viewers and
//! input from all of them.
//!
//! The runner always drains QEMU's output, viewers or not, so a guest
//! writing to its serial port never stalls; a viewer that falls behind
//! loses chunks instead of slowing the others down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};

use maqet_host::ipc::server::ConsoleStream;

pub use maqet_base::units::CONSOLE_FD;
/// Recent output kept for `maqet console --dump` and `--replay`.
pub const RING_BYTES: usize = 64 * 1024;
/// Output chunks queued per viewer before it starts losing them.
const VIEWER_BACKLOG: usize = 1024;
/// Input chunks queued towards QEMU (the UART takes them slowly).
const INPUT_BACKLOG: usize = 256;

pub struct ConsoleHub {
    state: Mutex<State>,
    input: mpsc::Sender<Vec<u8>>,
}

struct State {
    ring: VecDeque<u8>,
    /// `None` once QEMU closed its end: viewers then see the stream end.
    live: Option<broadcast::Sender<Arc<[u8]>>>,
}

impl ConsoleHub {
    /// Starts the reader and writer tasks on the runner's end of the pair.
    pub fn start(stream: UnixStream) -> Arc<ConsoleHub> {
        let (tx, _) = broadcast::channel(VIEWER_BACKLOG);
        let (input, input_rx) = mpsc::channel(INPUT_BACKLOG);
        let hub = Arc::new(ConsoleHub {
            state: Mutex::new(State {
                ring: VecDeque::with_capacity(RING_BYTES),
                live: Some(tx),
            }),
            input,
        });
        let (r, w) = stream.into_split();
        tokio::spawn(read_output(hub.clone(), r));
        tokio::spawn(write_input(w, input_rx));
        hub
    }

    /// A new viewer: the buffered output (when `replay`) and, when `follow`,
    /// everything after it — taken under one lock, so nothing is missed or
    /// seen twice.
    pub fn attach(&self, replay: bool, follow: bool) -> ConsoleStream {
        let st = self.state.lock().unwrap();
        ConsoleStream {
            replay: if replay {
                st.ring.iter().copied().collect()
            } else {
                Vec::new()
            },
            output: if follow {
                st.live.as_ref().map(|tx| tx.subscribe())
            } else {
                None
            },
            input: self.input.clone(),
        }
    }

    fn push(&self, chunk: &[u8]) {
        let mut st = self.state.lock().unwrap();
        push_ring(&mut st.ring, chunk);
        if let Some(tx) = &st.live {
            // No viewers is fine: the ring keeps the output.
            let _ = tx.send(Arc::from(chunk));
        }
    }

    fn close(&self) {
        self.state.lock().unwrap().live = None;
    }
}

fn push_ring(ring: &mut VecDeque<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(RING_BYTES)..];
    let overflow = (ring.len() + chunk.len()).saturating_sub(RING_BYTES);
    ring.drain(..overflow);
    ring.extend(chunk);
}

async fn read_output(hub: Arc<ConsoleHub>, mut r: tokio::net::unix::OwnedReadHalf) {
    let mut buf = vec![0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => hub.push(&buf[..n]),
            Err(e) => {
                tracing::warn!(error = %e, "reading the serial console failed");
                break;
            }
        }
    }
    hub.close();
}

async fn write_input(mut w: tokio::net::unix::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = w.write_all(&chunk).await {
            tracing::debug!(error = %e, "console input not delivered: QEMU closed the console");
            // Keep draining so viewers' sends never block on a dead console.
            while rx.recv().await.is_some() {}
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let mut ring = VecDeque::new();
        push_ring(&mut ring, b"abc");
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), b"abc");
        let big = vec![b'x'; RING_BYTES - 1];
        push_ring(&mut ring, &big);
        assert_eq!(ring.len(), RING_BYTES);
        assert_eq!(ring.front(), Some(&b'c'));
        let huge: Vec<u8> = (0..RING_BYTES + 10).map(|i| (i % 251) as u8).collect();
        push_ring(&mut ring, &huge);
        assert_eq!(ring.len(), RING_BYTES);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), huge[10..]);
    }

    #[tokio::test]
    async fn fan_out_replay_and_input() {
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let hub = ConsoleHub::start(ours);
        let mut early = hub.attach(false, true);
        qemu.write_all(b"boot\n").await.unwrap();
        let chunk = early.output.as_mut().unwrap().recv().await.unwrap();
        assert_eq!(&chunk[..], b"boot\n");

        // A late viewer gets the history, then live output, with no gap.
        let mut late = hub.attach(true, true);
        assert_eq!(late.replay, b"boot\n");
        qemu.write_all(b"more").await.unwrap();
        assert_eq!(
            &late.output.as_mut().unwrap().recv().await.unwrap()[..],
            b"more"
        );
        assert_eq!(
            &early.output.as_mut().unwrap().recv().await.unwrap()[..],
            b"more"
        );

        // Input from any viewer reaches QEMU.
        late.input.send(b"ls\n".to_vec()).await.unwrap();
        let mut got = [0u8; 3];
        qemu.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ls\n");

        // A dump-only attachment has no live output; QEMU closing ends streams.
        assert!(hub.attach(true, false).output.is_none());
        drop(qemu);
        assert!(matches!(
            early.output.as_mut().unwrap().recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        let after = hub.attach(true, true);
        assert!(after.output.is_none());
        assert_eq!(after.replay, b"boot\nmore");
    }
}

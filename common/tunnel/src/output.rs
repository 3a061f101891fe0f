use std::collections::VecDeque;
use std::net::SocketAddr;

/// A datagram to send, borrowing the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Queued datagrams, with their buffers recycled through the caller's `poll_transmit`
/// buffer so that a steady state allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct TransmitQueue {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    free: Vec<Vec<u8>>,
}

/// The most datagrams kept for a caller that does not drain them.
const MAX_QUEUED: usize = 4096;
/// The most spare buffers kept.
const MAX_FREE: usize = 64;

impl TransmitQueue {
    /// Queues a copy of `payload` for `dst`; false if the queue is full.
    pub(crate) fn push(&mut self, dst: SocketAddr, payload: &[u8]) -> bool {
        if self.queue.len() >= MAX_QUEUED {
            return false;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.queue.push_back((dst, buf));
        true
    }

    /// Moves the next datagram into `buf` (whose old allocation is kept for reuse).
    pub(crate) fn pop(&mut self, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (dst, mut payload) = self.queue.pop_front()?;
        std::mem::swap(buf, &mut payload);
        if self.free.len() < MAX_FREE && payload.capacity() > 0 {
            self.free.push(payload);
        }
        Some(dst)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

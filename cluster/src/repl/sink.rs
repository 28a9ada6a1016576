//! The sending halves of the replication streams, written by the replication driver itself.
//!
//! A gRPC sink used to be fed through a futures channel and drained by a future spawned on
//! the completion-queue thread: every message cost a wake-up of that thread (a "kick" event
//! on the queue) before it was even handed to gRPC, and messages queued behind an unfinished
//! write still went out one gRPC write each. Under load those wake-ups and writes were the
//! largest CPU cost of a replicated write.
//!
//! [`DirectSink`] starts each write from its owner, the replication driver (which now runs on
//! the completion-queue thread itself). Only one write may be outstanding per call: what is
//! sent while one is in flight is merged into one message (up to [`MERGE_BYTES`]), and goes
//! out when the completion queue reports the write done, through a waker that posts
//! [`Event::SinkReady`](super::Event) to the driver. No waker is involved when the previous
//! write is already done, which under load is the common case.
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::Sink;
use grpcio::WriteFlags;
use simplekv_proto::replication::{FetchRequest, FetchResponse};

/// Messages queued behind an unfinished write are merged up to about this many bytes of
/// records; a larger backlog goes out as several messages.
pub const MERGE_BYTES: usize = 1 << 20;

/// A message that can absorb the one sent after it.
pub trait Merge: Sized {
    /// Bytes of records it carries (what the merge limit counts).
    fn weight(&self) -> usize;
    /// Whether `merge` may absorb `later` (processing the result must be equivalent to
    /// processing `self` and then `later`).
    fn can_merge(&self, _later: &Self) -> bool {
        true
    }
    /// Appends `later`'s content.
    fn merge(&mut self, later: Self);
}

impl Merge for FetchResponse {
    fn weight(&self) -> usize {
        self.partitions.iter().map(|d| d.records.len() + 64).sum()
    }

    fn merge(&mut self, later: Self) {
        // Partition entries are handled in order, so a partition's entries from two messages
        // keep their order; the clock is the newer one, which the later message carried.
        self.partitions.extend(later.partitions);
        self.leader_clock_us = self.leader_clock_us.max(later.leader_clock_us);
    }
}

impl Merge for FetchRequest {
    fn weight(&self) -> usize {
        self.partitions.len() * 32
    }

    /// Only requests that echo the same leader clock merge: the leader takes a request's echo
    /// as the time the follower last heard it, for every entry (the lease), so an entry queued
    /// before a newer ping must not be credited with it.
    fn can_merge(&self, later: &Self) -> bool {
        self.echo_clock_us == later.echo_clock_us
            && self.follower_id == later.follower_id
            && self.storage_id == later.storage_id
    }

    fn merge(&mut self, later: Self) {
        self.partitions.extend(later.partitions);
    }
}

/// The sending half of a gRPC stream, written directly by its owner (see the module docs).
pub struct DirectSink<S, M> {
    sink: S,
    queue: VecDeque<M>,
    /// `weight()` of the last queued message, kept as it grows (summing it at every send
    /// would be quadratic in a backlog).
    last_weight: usize,
    waker: Waker,
    /// Messages handed to gRPC, and messages merged into another one (logged at debug
    /// level when a stream ends).
    pub writes: u64,
    pub merged: u64,
}

impl<S, M> DirectSink<S, M>
where
    S: Sink<(M, WriteFlags), Error = grpcio::Error> + Unpin,
    M: Merge,
{
    /// `waker` is woken (on gRPC's completion-queue thread) when a write that held others
    /// back is done; it must make the owner call [`DirectSink::drive`].
    pub fn new(sink: S, waker: Waker) -> DirectSink<S, M> {
        DirectSink {
            sink,
            queue: VecDeque::new(),
            last_weight: 0,
            waker,
            writes: 0,
            merged: 0,
        }
    }

    /// Sends `m` now if no write is outstanding, else queues it (merged with what waits).
    /// An error means the stream is broken.
    pub fn send(&mut self, m: M) -> Result<(), grpcio::Error> {
        let w = m.weight();
        match self.queue.back_mut() {
            Some(last) if self.last_weight + w <= MERGE_BYTES && last.can_merge(&m) => {
                last.merge(m);
                self.last_weight += w;
                self.merged += 1;
            }
            _ => {
                self.queue.push_back(m);
                self.last_weight = w;
            }
        }
        self.drive()
    }

    /// Hands the next queued message to gRPC if its previous write is done.
    pub fn drive(&mut self) -> Result<(), grpcio::Error> {
        while !self.queue.is_empty() {
            let mut cx = Context::from_waker(&self.waker);
            match Pin::new(&mut self.sink).poll_ready(&mut cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(r) => r?,
            }
            let Some(m) = self.queue.pop_front() else {
                break;
            };
            Pin::new(&mut self.sink).start_send((m, WriteFlags::default()))?;
            self.writes += 1;
        }
        Ok(())
    }

    /// Messages waiting for the outstanding write.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;
    use simplekv_proto::replication::{PartitionData, PartitionFetch};

    /// A sink with one write slot that completes only when the test says so.
    struct SlotSink<M> {
        busy: bool,
        sent: Vec<M>,
        fail: bool,
    }

    impl<M> Default for SlotSink<M> {
        fn default() -> Self {
            SlotSink {
                busy: false,
                sent: Vec::new(),
                fail: false,
            }
        }
    }

    impl<M: Unpin> Sink<(M, WriteFlags)> for SlotSink<M> {
        type Error = grpcio::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), grpcio::Error>> {
            if self.fail {
                return Poll::Ready(Err(grpcio::Error::RemoteStopped));
            }
            if self.busy {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn start_send(
            mut self: Pin<&mut Self>,
            (m, _): (M, WriteFlags),
        ) -> Result<(), grpcio::Error> {
            self.sent.push(m);
            self.busy = true;
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), grpcio::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context) -> Poll<Result<(), grpcio::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    fn data(p: u32, from: u64, len: usize) -> FetchResponse {
        let mut d = PartitionData::new();
        d.partition = p;
        d.from = from;
        d.next_offset = from + len as u64;
        d.records = vec![7; len];
        let mut r = FetchResponse::new();
        r.partitions.push(d);
        r.leader_clock_us = from;
        r
    }

    fn entries(r: &FetchResponse) -> Vec<(u32, u64)> {
        r.partitions.iter().map(|d| (d.partition, d.from)).collect()
    }

    #[test]
    fn writes_at_once_when_idle_and_merges_in_order_behind_a_busy_write() {
        let mut s = DirectSink::new(SlotSink::default(), noop_waker());
        s.send(data(1, 0, 10)).unwrap();
        assert_eq!(s.sink.sent.len(), 1, "an idle sink writes at once");
        s.send(data(1, 10, 10)).unwrap();
        s.send(data(2, 0, 5)).unwrap();
        s.send(data(1, 20, 10)).unwrap();
        assert_eq!((s.sink.sent.len(), s.queued(), s.merged), (1, 1, 2));
        // Still busy: driving changes nothing.
        s.drive().unwrap();
        assert_eq!(s.sink.sent.len(), 1);
        s.sink.busy = false;
        s.drive().unwrap();
        assert_eq!(s.sink.sent.len(), 2);
        assert_eq!(entries(&s.sink.sent[1]), vec![(1, 10), (2, 0), (1, 20)]);
        assert_eq!(s.sink.sent[1].leader_clock_us, 20, "the newest clock wins");
        assert_eq!((s.queued(), s.writes), (0, 2));
    }

    #[test]
    fn a_backlog_past_the_merge_limit_goes_out_as_several_messages() {
        let mut s = DirectSink::new(SlotSink::default(), noop_waker());
        s.send(data(1, 0, 10)).unwrap();
        let big = MERGE_BYTES / 2;
        for i in 0..5u64 {
            s.send(data(1, 10 + i * big as u64, big)).unwrap();
        }
        // Two halves (plus entry overhead) never fit under the limit together.
        assert_eq!(s.queued(), 5);
        let mut seen = vec![];
        for _ in 0..10 {
            s.sink.busy = false;
            s.drive().unwrap();
        }
        for m in &s.sink.sent {
            assert!(m.weight() <= MERGE_BYTES || m.partitions.len() == 1);
            seen.extend(entries(m));
        }
        let want: Vec<(u32, u64)> = std::iter::once((1, 0))
            .chain((0..5u64).map(|i| (1, 10 + i * big as u64)))
            .collect();
        assert_eq!(seen, want, "every entry once, in order");
    }

    #[test]
    fn a_broken_stream_is_an_error_not_a_panic() {
        let mut s = DirectSink::new(SlotSink::default(), noop_waker());
        s.sink.fail = true;
        assert!(s.send(data(1, 0, 1)).is_err());
    }

    #[test]
    fn requests_merge_their_positions_in_order() {
        let mut a = FetchRequest::new();
        a.follower_id = 2;
        a.echo_clock_us = 5;
        let mut f = PartitionFetch::new();
        f.partition = 3;
        f.fetch_offset = 10;
        a.partitions.push(f.clone());
        let mut b = a.clone();
        b.partitions[0].fetch_offset = 20;
        assert!(a.can_merge(&b));
        a.merge(b);
        let offs: Vec<u64> = a.partitions.iter().map(|p| p.fetch_offset).collect();
        assert_eq!((offs, a.echo_clock_us), (vec![10, 20], 5));
        // A request echoing a newer leader clock stays a message of its own.
        let mut c = a.clone();
        c.echo_clock_us = 9;
        assert!(!a.can_merge(&c));
    }

    #[test]
    fn queued_positions_are_never_credited_with_a_newer_echo() {
        let mut s = DirectSink::new(SlotSink::default(), noop_waker());
        let req = |p: u32, echo: u64| {
            let mut r = FetchRequest::new();
            r.follower_id = 2;
            r.echo_clock_us = echo;
            let mut f = PartitionFetch::new();
            f.partition = p;
            r.partitions.push(f);
            r
        };
        s.send(req(0, 1)).unwrap();
        s.send(req(1, 1)).unwrap();
        s.send(req(2, 1)).unwrap();
        s.send(req(3, 7)).unwrap();
        for _ in 0..4 {
            s.sink.busy = false;
            s.drive().unwrap();
        }
        let got: Vec<(Vec<u32>, u64)> = s
            .sink
            .sent
            .iter()
            .map(|r| {
                (
                    r.partitions.iter().map(|f| f.partition).collect(),
                    r.echo_clock_us,
                )
            })
            .collect();
        assert_eq!(got, vec![(vec![0], 1), (vec![1, 2], 1), (vec![3], 7)]);
    }
}

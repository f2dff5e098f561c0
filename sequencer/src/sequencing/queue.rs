//! The per-stream queues of this process: requests for one stream wait here while the stream's single
//! worker sequences the group before them, and are then taken together as the next group.
//!
//! Memory: a stream has an entry only while it has a request queued or being sequenced (the worker
//! removes it when it finds the queue empty), so the entries are bounded by the requests in flight,
//! which `INGEST_MAX_QUEUED_EVENTS` bounds. The map gives its capacity back once most streams went
//! quiet, so a burst over many streams does not keep its high-water mark.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::store::events::StreamKey;

struct Queue<J> {
    jobs: VecDeque<J>,
}

/// Queues of jobs `J`, one per stream with work.
pub struct StreamQueues<J> {
    queues: Mutex<HashMap<StreamKey, Queue<J>>>,
}

/// Below this capacity the map is never shrunk (shrinking costs a rehash).
const SHRINK_ABOVE: usize = 1024;

impl<J> Default for StreamQueues<J> {
    fn default() -> Self {
        StreamQueues { queues: Mutex::new(HashMap::new()) }
    }
}

impl<J> StreamQueues<J> {
    /// Queues `job` for `stream`. Returns `true` when the stream had no work, so the caller must start
    /// its worker (which then takes groups until the queue is empty).
    pub fn push(&self, stream: StreamKey, job: J) -> bool {
        let mut queues = self.queues.lock().expect("sequencer queue lock");
        match queues.get_mut(&stream) {
            Some(q) => {
                q.jobs.push_back(job);
                false
            }
            None => {
                queues.insert(stream, Queue { jobs: VecDeque::from([job]) });
                true
            }
        }
    }

    /// Takes the stream's next group: queued jobs in order, at most `max_events` events (by `size`)
    /// unless the first job alone is larger. An empty group means the stream went idle: its entry is
    /// gone and the worker must stop (a later `push` starts a new one).
    pub fn next_group(&self, stream: StreamKey, max_events: usize, size: impl Fn(&J) -> usize) -> Vec<J> {
        let mut queues = self.queues.lock().expect("sequencer queue lock");
        let Some(queue) = queues.get_mut(&stream) else {
            return Vec::new();
        };
        let mut group = Vec::new();
        let mut events = 0;
        while let Some(job) = queue.jobs.front() {
            let n = size(job);
            if !group.is_empty() && events + n > max_events {
                break;
            }
            events += n;
            group.push(queue.jobs.pop_front().expect("front exists"));
        }
        if group.is_empty() {
            queues.remove(&stream);
            if queues.capacity() > SHRINK_ABOVE && queues.len() < queues.capacity() / 8 {
                let keep = queues.len() * 2;
                queues.shrink_to(keep);
            }
        }
        group
    }

    /// Streams with work now.
    pub fn streams(&self) -> usize {
        self.queues.lock().expect("sequencer queue lock").len()
    }

    /// Slots the map holds (its memory), whatever is in use.
    pub fn capacity(&self) -> usize {
        self.queues.lock().expect("sequencer queue lock").capacity()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn stream(n: u128) -> StreamKey {
        StreamKey { tenant_id: Uuid::from_u128(n), store_id: Uuid::nil() }
    }

    #[test]
    fn the_first_push_starts_a_worker_and_the_worker_stops_when_the_queue_is_empty() {
        let q = StreamQueues::default();
        assert!(q.push(stream(1), 1usize));
        assert!(!q.push(stream(1), 2), "a worker is already running");
        assert_eq!(q.next_group(stream(1), 100, |n| *n), vec![1, 2]);
        assert_eq!(q.streams(), 1, "the entry stays until the worker finds it empty");
        assert!(q.next_group(stream(1), 100, |n| *n).is_empty());
        assert_eq!(q.streams(), 0);
        assert!(q.push(stream(1), 3), "after going idle a push starts a new worker");
    }

    #[test]
    fn a_group_stops_before_the_job_that_would_exceed_the_limit_but_always_takes_one() {
        let q = StreamQueues::default();
        for n in [5usize, 3, 4, 10] {
            q.push(stream(1), n);
        }
        assert_eq!(q.next_group(stream(1), 8, |n| *n), vec![5, 3]);
        assert_eq!(q.next_group(stream(1), 8, |n| *n), vec![4]);
        assert_eq!(q.next_group(stream(1), 8, |n| *n), vec![10], "one job larger than the limit goes alone");
    }

    #[test]
    fn quiet_streams_give_their_memory_back() {
        let q = StreamQueues::default();
        for s in 0..100_000 {
            q.push(stream(s), 1usize);
        }
        let high_water = q.capacity();
        for s in 0..100_000 {
            assert_eq!(q.next_group(stream(s), 10, |n| *n), vec![1]);
            assert!(q.next_group(stream(s), 10, |n| *n).is_empty());
        }
        assert_eq!(q.streams(), 0);
        assert!(q.capacity() <= SHRINK_ABOVE * 2, "capacity {} (was {high_water})", q.capacity());
    }
}

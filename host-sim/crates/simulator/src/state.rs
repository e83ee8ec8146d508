//! State one simulated proxy process shares across its VMs: the virtual
//! clock, metrics, shared data, shared queues, pending asynchronous events and
//! the log.

use super::metrics::MetricStore;
use crate::abi::{HostResult, Status};
use crate::result::LogLine;
use std::collections::{HashMap, VecDeque};

/// 2026-01-01T00:00:00Z: the virtual clock's start, so results are repeatable.
pub const EPOCH_NS: u64 = 1_767_225_600_000_000_000;

#[derive(Default)]
pub struct ProxyState {
    /// Virtual time elapsed since EPOCH_NS.
    pub elapsed_ns: u64,
    pub metrics: MetricStore,
    shared_data: HashMap<(String, String), (Vec<u8>, u32)>,
    next_cas: u32,
    pub queues: Vec<SharedQueue>,
    queue_ids: HashMap<(String, String), u32>,
    /// Asynchronous deliveries waiting to run, due at a virtual time.
    pub events: Vec<Event>,
    next_event_seq: u64,
    pub logs: Vec<LogLine>,
    /// Every `proxy_http_call` made, in order.
    pub http_calls: Vec<crate::result::HttpCallRecord>,
    /// Canned answers for `proxy_http_call`, taken in call order.
    pub canned_http_calls: VecDeque<crate::scenario::ResponseSpec>,
    pub next_request_id: u64,
}

pub struct SharedQueue {
    /// (VM index, root context id) that registered the queue last.
    pub owner: (usize, u32),
    pub items: VecDeque<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub due_ns: u64,
    /// Orders events due at the same time by when they were scheduled.
    pub seq: u64,
    pub vm: usize,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    QueueReady { root_context: u32, queue_id: u32 },
    HttpCallResponse { context: u32, token: u32, response: Option<CalloutResponse> },
}

/// An answer to `proxy_http_call`; `None` in the event means the call failed
/// (reset, timeout, no answer), which Envoy reports with zero headers.
#[derive(Debug, Clone)]
pub struct CalloutResponse {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl ProxyState {
    pub fn now_ns(&self) -> u64 {
        EPOCH_NS + self.elapsed_ns
    }

    pub fn get_shared_data(&self, vm_id: &str, key: &str) -> HostResult<(Vec<u8>, u32)> {
        self.shared_data.get(&(vm_id.to_string(), key.to_string())).cloned().ok_or(Status::NotFound)
    }

    /// Envoy's CAS rules: `cas == 0` always writes; otherwise it must equal
    /// the entry's current cas. A key that does not exist yet is written
    /// whatever the cas (CH `SharedData::set` only checks existing entries).
    pub fn set_shared_data(&mut self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> HostResult<()> {
        let k = (vm_id.to_string(), key.to_string());
        if cas != 0 {
            if let Some((_, current)) = self.shared_data.get(&k) {
                if *current != cas {
                    return Err(Status::CasMismatch);
                }
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.shared_data.insert(k, (value, self.next_cas));
        Ok(())
    }

    pub fn register_queue(&mut self, vm_id: &str, name: &str, owner: (usize, u32)) -> u32 {
        let key = (vm_id.to_string(), name.to_string());
        if let Some(&id) = self.queue_ids.get(&key) {
            self.queues[id as usize - 1].owner = owner;
            return id;
        }
        self.queues.push(SharedQueue { owner, items: VecDeque::new() });
        let id = self.queues.len() as u32;
        self.queue_ids.insert(key, id);
        id
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> HostResult<u32> {
        self.queue_ids.get(&(vm_id.to_string(), name.to_string())).copied().ok_or(Status::NotFound)
    }

    pub fn enqueue(&mut self, id: u32, data: Vec<u8>) -> HostResult<()> {
        let q = self.queue_mut(id)?;
        q.items.push_back(data);
        let (vm, root_context) = q.owner;
        // Envoy posts the notification to the owner's thread: it runs after
        // the current callback, never inside it.
        self.schedule(0, vm, EventKind::QueueReady { root_context, queue_id: id });
        Ok(())
    }

    pub fn dequeue(&mut self, id: u32) -> HostResult<Vec<u8>> {
        self.queue_mut(id)?.items.pop_front().ok_or(Status::Empty)
    }

    fn queue_mut(&mut self, id: u32) -> HostResult<&mut SharedQueue> {
        id.checked_sub(1).and_then(|i| self.queues.get_mut(i as usize)).ok_or(Status::NotFound)
    }

    pub fn schedule(&mut self, delay_ns: u64, vm: usize, kind: EventKind) {
        self.next_event_seq += 1;
        let due_ns = self.elapsed_ns + delay_ns;
        self.events.push(Event { due_ns, seq: self.next_event_seq, vm, kind });
    }

    /// Removes and returns the earliest event due at or before `until_ns`.
    pub fn pop_due_event(&mut self, until_ns: u64) -> Option<Event> {
        let (i, _) = self
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.due_ns <= until_ns)
            .min_by_key(|(_, e)| (e.due_ns, e.seq))?;
        Some(self.events.remove(i))
    }

    pub fn next_event_due(&self) -> Option<u64> {
        self.events.iter().map(|e| e.due_ns).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let mut s = ProxyState::default();
        assert_eq!(s.get_shared_data("vm", "k"), Err(Status::NotFound));
        s.set_shared_data("vm", "absent", b"x".to_vec(), 7).unwrap();
        assert_eq!(s.get_shared_data("vm", "absent").unwrap().0, b"x", "a cas on a missing key is not checked");
        s.set_shared_data("vm", "k", b"a".to_vec(), 0).unwrap();
        let (_, cas) = s.get_shared_data("vm", "k").unwrap();
        s.set_shared_data("vm", "k", b"b".to_vec(), cas).unwrap();
        assert_eq!(s.set_shared_data("vm", "k", b"c".to_vec(), cas), Err(Status::CasMismatch), "stale cas");
        assert_eq!(s.get_shared_data("vm", "k").unwrap().0, b"b");
        assert_eq!(s.get_shared_data("other_vm", "k"), Err(Status::NotFound), "keyed by vm_id");
    }

    #[test]
    fn queues() {
        let mut s = ProxyState::default();
        assert_eq!(s.resolve_queue("vm", "q"), Err(Status::NotFound));
        let id = s.register_queue("vm", "q", (0, 1));
        assert_eq!(s.resolve_queue("vm", "q"), Ok(id));
        assert_eq!(s.dequeue(id), Err(Status::Empty));
        assert_eq!(s.enqueue(id + 1, vec![]), Err(Status::NotFound));
        s.enqueue(id, b"x".to_vec()).unwrap();
        assert!(matches!(s.pop_due_event(0).unwrap().kind, EventKind::QueueReady { root_context: 1, .. }));
        assert_eq!(s.dequeue(id).unwrap(), b"x");
    }
}

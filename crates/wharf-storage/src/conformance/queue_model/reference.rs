//! The reference model: the [`QueueStore`](crate::QueueStore) contract for
//! one queue and its dead-letter queue, in memory, with no I/O and no clock
//! of its own.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use uuid::Uuid;
use wharf_core::queue::{
    DEDUP_WINDOW, DELIVERY_ATTEMPTS, LAST_ERROR, NACKED_WITHOUT_REASON, ORIGINAL_STREAM_NAME,
    VISIBILITY_TIMEOUT_EXPIRED,
};
use wharf_core::{QueueSettings, QueueStats, Timestamp};

/// Which of the case's two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The queue the case created.
    Main,
    /// Its dead-letter queue, created by the first dead letter.
    Dead,
}

/// When a message can next be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Visible from this time on (delayed until then).
    Ready(Timestamp),
    /// Delivered; invisible until this time.
    InFlight(Timestamp),
}

/// Why and when a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadInfo {
    pub attempts: u32,
    pub last_error: String,
    /// `DeadLetteredAt` lies in this range: a timeout is dead-lettered at its
    /// deadline, but a store may stamp the time it noticed.
    pub at: (Timestamp, Timestamp),
}

#[derive(Debug, Clone)]
pub struct Message {
    /// Which enqueue of the case made it; its data is the key's text.
    pub key: usize,
    pub state: State,
    pub attempts: u32,
    /// `enqueued_at` lies in this range: exact for an enqueue; a moved message
    /// (dead letter, redriven) may keep the old time or take the time of the move.
    pub enqueued: (Timestamp, Timestamp),
    /// The id the store gave it, once seen; a moved message may get a new one.
    pub id: Option<Uuid>,
    pub dead: Option<DeadInfo>,
}

impl Message {
    /// The metadata a delivery of this message carries, but `DeadLetteredAt`.
    pub fn metadata(&self, main_name: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([("key".to_owned(), self.key.to_string())]);
        if let Some(dead) = &self.dead {
            m.insert(ORIGINAL_STREAM_NAME.to_owned(), main_name.to_owned());
            m.insert(DELIVERY_ATTEMPTS.to_owned(), dead.attempts.to_string());
            m.insert(LAST_ERROR.to_owned(), dead.last_error.clone());
        }
        m
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub deliveries: u64,
    pub acks: u64,
    pub nacks: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub exists: bool,
    /// `None`: no dead-letter target, so no limit.
    pub max_attempts: Option<u32>,
    pub default_vt: Duration,
    /// By place in the queue; a message moved back gets a new place.
    pub messages: BTreeMap<u64, Message>,
    next_seq: u64,
    pub counters: Counters,
}

impl Queue {
    fn new(exists: bool, max_attempts: Option<u32>, default_vt: Duration) -> Self {
        Self {
            exists,
            max_attempts,
            default_vt,
            messages: BTreeMap::new(),
            next_seq: 0,
            counters: Counters::default(),
        }
    }

    fn push(&mut self, message: Message) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.messages.insert(seq, message);
        seq
    }
}

/// One receipt the store handed out, and what the model knows it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub queue: Which,
    pub seq: u64,
    pub attempt: u32,
    pub message_id: Uuid,
}

/// What an acknowledge, nack or extend should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound(Which),
    LeaseLost(Which, Uuid),
    InvalidArgument,
}

/// What an enqueue should answer for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueue {
    /// A new message at this place of the main queue.
    New(u64),
    /// A duplicate of the message first enqueued with this dedup id.
    Duplicate(String),
}

pub struct Reference {
    pub now: Timestamp,
    pub main: Queue,
    pub dead: Queue,
    /// Whether the main queue dead-letters into `dead`.
    dead_letters_to_dead: bool,
    /// Dedup id → the first message's id (once known) and when it was enqueued.
    pub dedup: HashMap<String, (Option<Uuid>, Timestamp)>,
}

impl Reference {
    /// `max_attempts` is `None` when the main queue has no dead-letter
    /// target; `defaults` are the store's, which a created dead-letter queue gets.
    pub fn new(
        now: Timestamp,
        max_attempts: Option<u32>,
        vt: Duration,
        defaults: &QueueSettings,
    ) -> Self {
        Self {
            now,
            main: Queue::new(true, max_attempts, vt),
            dead: Queue::new(false, None, defaults.visibility_timeout),
            dead_letters_to_dead: max_attempts.is_some(),
            dedup: HashMap::new(),
        }
    }

    pub fn queue(&self, which: Which) -> &Queue {
        match which {
            Which::Main => &self.main,
            Which::Dead => &self.dead,
        }
    }

    pub fn queue_mut(&mut self, which: Which) -> &mut Queue {
        match which {
            Which::Main => &mut self.main,
            Which::Dead => &mut self.dead,
        }
    }

    /// Enqueues to the main queue: `(key, delay, dedup id)` per message.
    pub fn enqueue(&mut self, messages: &[(usize, Duration, Option<String>)]) -> Vec<Enqueue> {
        let now = self.now;
        messages
            .iter()
            .map(|(key, delay, dedup)| {
                if let Some(dedup) = dedup {
                    match self.dedup.get(dedup) {
                        Some((_, first)) if now < first.saturating_add(DEDUP_WINDOW) => {
                            return Enqueue::Duplicate(dedup.clone());
                        }
                        _ => {
                            self.dedup.insert(dedup.clone(), (None, now));
                        }
                    }
                }
                Enqueue::New(self.main.push(Message {
                    key: *key,
                    state: State::Ready(now.saturating_add(*delay)),
                    attempts: 0,
                    enqueued: (now, now),
                    id: None,
                    dead: None,
                }))
            })
            .collect()
    }

    /// Delivers; `None` when the queue does not exist, else the places delivered.
    pub fn dequeue(&mut self, which: Which, max: u32, vt: Option<Duration>) -> Option<Vec<u64>> {
        let now = self.now;
        let queue = self.queue_mut(which);
        if !queue.exists {
            return None;
        }
        let vt = vt.unwrap_or(queue.default_vt);
        let visible: Vec<u64> = queue
            .messages
            .iter()
            .filter(|(_, m)| matches!(m.state, State::Ready(at) if at <= now))
            .map(|(seq, _)| *seq)
            .take(max as usize)
            .collect();
        for seq in &visible {
            let m = queue.messages.get_mut(seq).expect("listed above");
            m.attempts += 1;
            m.state = State::InFlight(now.saturating_add(vt));
            queue.counters.deliveries += 1;
        }
        Some(visible)
    }

    /// Checks a receipt used on `on`: `Err` is the outcome of an invalid one.
    fn check(&self, on: Which, lease: Option<&Lease>) -> Result<(), Outcome> {
        if !self.queue(on).exists {
            return Err(Outcome::NotFound(on));
        }
        let Some(lease) = lease.filter(|l| l.queue == on) else {
            return Err(Outcome::InvalidArgument);
        };
        match self.queue(on).messages.get(&lease.seq) {
            Some(m) if m.attempts == lease.attempt => Ok(()),
            _ => Err(Outcome::LeaseLost(on, lease.message_id)),
        }
    }

    /// `None` for a junk receipt.
    pub fn ack(&mut self, on: Which, lease: Option<&Lease>) -> Outcome {
        if let Err(outcome) = self.check(on, lease) {
            return outcome;
        }
        let lease = lease.expect("checked");
        let queue = self.queue_mut(on);
        queue.messages.remove(&lease.seq);
        queue.counters.acks += 1;
        Outcome::Ok
    }

    pub fn nack(
        &mut self,
        on: Which,
        lease: Option<&Lease>,
        after: Duration,
        reason: Option<&str>,
    ) -> Outcome {
        if let Err(outcome) = self.check(on, lease) {
            return outcome;
        }
        let lease = lease.expect("checked");
        let now = self.now;
        let queue = self.queue_mut(on);
        queue.counters.nacks += 1;
        let last = queue.max_attempts.is_some_and(|max| lease.attempt >= max);
        if last {
            let error = reason.unwrap_or(NACKED_WITHOUT_REASON);
            self.dead_letter(lease.seq, error, now);
        } else {
            let m = queue.messages.get_mut(&lease.seq).expect("checked");
            m.state = State::Ready(now.saturating_add(after));
        }
        Outcome::Ok
    }

    pub fn extend(&mut self, on: Which, lease: Option<&Lease>, timeout: Duration) -> Outcome {
        if let Err(outcome) = self.check(on, lease) {
            return outcome;
        }
        let lease = lease.expect("checked");
        let now = self.now;
        let m = self
            .queue_mut(on)
            .messages
            .get_mut(&lease.seq)
            .expect("checked");
        m.state = State::InFlight(now.saturating_add(timeout));
        Outcome::Ok
    }

    /// Moves the clock; every delivery whose timeout ended by then is
    /// visible again or dead-lettered, in order of deadline.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now.saturating_add(by);
        let now = self.now;
        for which in [Which::Main, Which::Dead] {
            let queue = self.queue_mut(which);
            let mut expired: Vec<(Timestamp, u64)> = queue
                .messages
                .iter()
                .filter_map(|(seq, m)| match m.state {
                    State::InFlight(deadline) if deadline <= now => Some((deadline, *seq)),
                    _ => None,
                })
                .collect();
            expired.sort();
            let max = queue.max_attempts;
            for (deadline, seq) in expired {
                let m = self
                    .queue_mut(which)
                    .messages
                    .get_mut(&seq)
                    .expect("listed above");
                if max.is_some_and(|max| m.attempts >= max) {
                    self.dead_letter(seq, VISIBILITY_TIMEOUT_EXPIRED, deadline);
                } else {
                    m.state = State::Ready(deadline);
                }
            }
        }
    }

    /// Moves a main-queue message to the end of the dead-letter queue.
    fn dead_letter(&mut self, seq: u64, error: &str, at: Timestamp) {
        let now = self.now;
        let mut m = self
            .main
            .messages
            .remove(&seq)
            .expect("a message of the main queue");
        self.main.counters.dead_lettered += 1;
        if !self.dead.exists {
            self.dead.exists = true;
        }
        m.dead = Some(DeadInfo {
            attempts: m.attempts,
            last_error: error.to_owned(),
            at: (at, now),
        });
        m.attempts = 0;
        m.state = State::Ready(now);
        m.enqueued.1 = now;
        m.id = None;
        self.dead.push(m);
    }

    /// Redrives `from` back to the main queue; `Err` is the outcome.
    pub fn redrive(&mut self, from: Which) -> Result<u64, Outcome> {
        if !self.queue(from).exists {
            return Err(Outcome::NotFound(from));
        }
        if from == Which::Main || !self.dead_letters_to_dead {
            return Err(Outcome::InvalidArgument);
        }
        let now = self.now;
        let moving: Vec<u64> = self
            .dead
            .messages
            .iter()
            .filter(|(_, m)| matches!(m.state, State::Ready(_)))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &moving {
            let mut m = self.dead.messages.remove(seq).expect("listed above");
            m.dead = None;
            m.attempts = 0;
            m.state = State::Ready(now);
            m.enqueued.1 = now;
            m.id = None;
            self.main.push(m);
        }
        Ok(moving.len() as u64)
    }

    /// The stats `which` must report, and the range its oldest age must lie in.
    pub fn stats(&self, which: Which) -> Option<(QueueStats, Option<(u64, u64)>)> {
        let queue = self.queue(which);
        if !queue.exists {
            return None;
        }
        let now = self.now;
        let mut s = QueueStats::default();
        for m in queue.messages.values() {
            match m.state {
                State::Ready(at) if at <= now => s.visible += 1,
                State::Ready(_) => s.delayed += 1,
                State::InFlight(_) => s.in_flight += 1,
            }
        }
        let micros = |t: Timestamp| now.duration_since(t).as_micros() as u64;
        let age = queue
            .messages
            .values()
            .fold(None, |acc: Option<(u64, u64)>, m| {
                let (young, old) = (micros(m.enqueued.1), micros(m.enqueued.0));
                Some(acc.map_or((young, old), |(lo, hi)| (lo.max(young), hi.max(old))))
            });
        if which == Which::Main && self.dead_letters_to_dead {
            s.dead_letters = self.dead.messages.len() as u64;
        }
        s.deliveries = queue.counters.deliveries;
        s.acks = queue.counters.acks;
        s.nacks = queue.counters.nacks;
        s.dead_lettered = queue.counters.dead_lettered;
        Some((s, age))
    }
}

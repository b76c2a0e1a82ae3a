//! What the real services enforce, enforced here (DESIGN §4, PROVIDER-APIS.md A.6, B.4):
//! a per-tenant capacity of S concurrent service slots each held for the configured latency,
//! Graph's 4 concurrent requests and 10,000 requests per 10 minutes per mailbox, and Gmail's
//! per-user quota units (token bucket, 250 units/s with a burst of one second) and per-user
//! concurrency.
//!
//! Every refusal says when to come back, derived from the limit that was hit: the moment a
//! place frees (one service time), the request window's oldest entry leaving it, the quota
//! bucket refilling. The real services say it in whole seconds (Graph's throttling doc shows
//! `Retry-After: 10`; PROVIDER-APIS.md §F.3), so the lab does too by default
//! ([`RetryAdvice::WholeSeconds`]); [`RetryAdvice::SubSecond`] keeps the lab's own pace for
//! experiments and for tests that throttle on purpose and must stay fast.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Graph: concurrent requests per app and mailbox.
pub const GRAPH_MAILBOX_CONCURRENCY: usize = 4;
/// Graph: requests per app and mailbox in [`GRAPH_WINDOW`].
pub const GRAPH_MAILBOX_WINDOW_LIMIT: usize = 10_000;
pub const GRAPH_WINDOW: Duration = Duration::from_secs(600);
/// Gmail: concurrent requests per user before 429 (undocumented; about 10 in practice).
pub const GMAIL_USER_CONCURRENCY: usize = 10;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleKind {
    /// The tenant's service capacity S is in use.
    Capacity,
    /// Graph: more than 4 concurrent requests on one mailbox.
    MailboxConcurrency,
    /// Graph: more than 10,000 requests in 10 minutes on one mailbox.
    MailboxWindow,
    /// Gmail: per-user quota units exhausted.
    GmailUserQuota,
    /// Gmail: too many concurrent requests for one user.
    GmailConcurrency,
}

/// How the lab words the delay of a refusal (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RetryAdvice {
    /// Whole seconds, at least 1, rounded up from the limit's own window: what Graph sends.
    #[default]
    #[value(name = "whole-seconds")]
    WholeSeconds,
    /// The lab's own pace: a couple of service times (at least 50 ms), quota refills to the
    /// millisecond. For experiments and fast tests; no real service answers like this (an
    /// official Graph SDK cannot parse `0.050` and falls back to its own 3 s).
    #[value(name = "sub-second")]
    SubSecond,
}

/// A refusal with the delay the client should wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    pub kind: ThrottleKind,
    pub retry_after_secs: f64,
}

/// Tunables for the limits.
#[derive(Debug, Clone)]
pub struct LimitOptions {
    pub latency: Duration,
    pub jitter: Duration,
    /// Concurrent service slots per tenant (S).
    pub capacity: usize,
    /// Gmail quota units per user per second.
    pub gmail_units_per_sec: f64,
    pub seed: u64,
    /// How `Retry-After` is worded.
    pub retry_advice: RetryAdvice,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            capacity: 256,
            gmail_units_per_sec: 250.0,
            seed: 0,
            retry_advice: RetryAdvice::WholeSeconds,
        }
    }
}

#[derive(Default)]
struct MailboxCounters {
    in_flight: usize,
    window: VecDeque<Instant>,
}

struct GmailBucket {
    units: f64,
    last: Instant,
    in_flight: usize,
}

/// The limit keeper shared by all faces of one lab.
pub struct Limits {
    pub options: LimitOptions,
    slots: Vec<AtomicUsize>,
    /// Service times served per tenant: every request and every batched sub-request that held
    /// a slot. The benchmarks' ideal bound is `served × latency ÷ capacity`.
    served: Vec<AtomicUsize>,
    mailboxes: Mutex<HashMap<(usize, String), MailboxCounters>>,
    gmail: Mutex<HashMap<(usize, String), GmailBucket>>,
    rng: Mutex<ChaCha8Rng>,
}

/// Holds one of a tenant's service slots; released on drop.
pub struct SlotGuard<'a> {
    counter: &'a AtomicUsize,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds a mailbox concurrency place; released on drop.
pub struct MailboxGuard<'a> {
    limits: &'a Limits,
    key: (usize, String),
    gmail: bool,
}

impl Drop for MailboxGuard<'_> {
    fn drop(&mut self) {
        if self.gmail {
            if let Ok(mut map) = self.limits.gmail.lock()
                && let Some(b) = map.get_mut(&self.key)
            {
                b.in_flight = b.in_flight.saturating_sub(1);
            }
        } else if let Ok(mut map) = self.limits.mailboxes.lock()
            && let Some(c) = map.get_mut(&self.key)
        {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

impl Limits {
    pub fn new(options: LimitOptions, tenants: usize) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x6c61_625f_6c69_6d69);
        Limits {
            slots: (0..tenants).map(|_| AtomicUsize::new(0)).collect(),
            served: (0..tenants).map(|_| AtomicUsize::new(0)).collect(),
            options,
            mailboxes: Mutex::new(HashMap::new()),
            gmail: Mutex::new(HashMap::new()),
            rng: Mutex::new(rng),
        }
    }

    /// The service time of one (sub-)request: latency plus seeded jitter.
    pub fn service_time(&self) -> Duration {
        let jitter = self.options.jitter.as_micros() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rng
                .lock()
                .map(|mut r| r.gen_range(0..=jitter))
                .unwrap_or(0)
        };
        self.options.latency + Duration::from_micros(extra)
    }

    /// The advice for a refusal whose limit frees up in `wait`: whole seconds (at least 1),
    /// or with [`RetryAdvice::SubSecond`] the exact wait to the millisecond (at least 50 ms).
    pub fn advise(&self, wait: Duration) -> f64 {
        match self.options.retry_advice {
            RetryAdvice::WholeSeconds => wait.as_secs_f64().ceil().max(1.0),
            RetryAdvice::SubSecond => ((wait.as_secs_f64() * 1000.0).ceil() / 1000.0).max(0.05),
        }
    }

    /// The advice when a concurrent place is refused: places free when requests in service
    /// finish, within one service time (the lab's pace: two, so a retry finds one free).
    pub fn retry_after(&self) -> f64 {
        let longest = self.options.latency + self.options.jitter;
        match self.options.retry_advice {
            RetryAdvice::WholeSeconds => self.advise(longest),
            RetryAdvice::SubSecond => self.advise(self.options.latency * 2),
        }
    }

    fn refused(&self, kind: ThrottleKind) -> Throttle {
        Throttle {
            kind,
            retry_after_secs: self.retry_after(),
        }
    }

    /// Takes one of the tenant's S service slots, or refuses when all are in use.
    pub fn take_slot(&self, tenant: usize) -> Result<SlotGuard<'_>, Throttle> {
        let counter = self
            .slots
            .get(tenant)
            .ok_or(self.refused(ThrottleKind::Capacity))?;
        let capacity = self.options.capacity.max(1);
        let mut current = counter.load(Ordering::Acquire);
        loop {
            if current >= capacity {
                return Err(self.refused(ThrottleKind::Capacity));
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(SlotGuard { counter }),
                Err(seen) => current = seen,
            }
        }
    }

    /// Holds a slot for one service time: the cost of serving one (sub-)request.
    pub async fn serve(&self, tenant: usize) -> Result<(), Throttle> {
        let _slot = self.take_slot(tenant)?;
        if let Some(n) = self.served.get(tenant) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let t = self.service_time();
        if !t.is_zero() {
            tokio::time::sleep(t).await;
        }
        Ok(())
    }

    /// Service times served so far, per tenant (requests and batched sub-requests).
    pub fn served(&self) -> Vec<usize> {
        self.served
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }

    /// Slots in use now, per tenant.
    pub fn slots_in_use(&self) -> Vec<usize> {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .collect()
    }

    /// Graph: enters a mailbox (4 concurrent, 10,000 per 10 minutes).
    pub fn enter_graph_mailbox(
        &self,
        tenant: usize,
        mailbox: &str,
    ) -> Result<MailboxGuard<'_>, Throttle> {
        let key = (tenant, mailbox.to_ascii_lowercase());
        let now = Instant::now();
        let mut map = self
            .mailboxes
            .lock()
            .map_err(|_| self.refused(ThrottleKind::MailboxConcurrency))?;
        let c = map.entry(key.clone()).or_default();
        while c
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= GRAPH_WINDOW)
        {
            c.window.pop_front();
        }
        if c.window.len() >= GRAPH_MAILBOX_WINDOW_LIMIT {
            // Until the oldest request of the window leaves it: whole seconds in either
            // wording (a ten-minute window is no place for milliseconds).
            let wait = c
                .window
                .front()
                .map(|t| GRAPH_WINDOW.saturating_sub(now.duration_since(*t)))
                .unwrap_or(Duration::from_secs(1));
            return Err(Throttle {
                kind: ThrottleKind::MailboxWindow,
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0),
            });
        }
        if c.in_flight >= GRAPH_MAILBOX_CONCURRENCY {
            return Err(self.refused(ThrottleKind::MailboxConcurrency));
        }
        c.in_flight += 1;
        c.window.push_back(now);
        Ok(MailboxGuard {
            limits: self,
            key,
            gmail: false,
        })
    }

    /// Gmail: spends quota units for a user and enters their concurrency limit.
    pub fn enter_gmail_user(
        &self,
        tenant: usize,
        user: &str,
        units: u32,
    ) -> Result<MailboxGuard<'_>, Throttle> {
        let key = (tenant, user.to_ascii_lowercase());
        let now = Instant::now();
        let rate = self.options.gmail_units_per_sec.max(1.0);
        let mut map = self
            .gmail
            .lock()
            .map_err(|_| self.refused(ThrottleKind::GmailConcurrency))?;
        let b = map.entry(key.clone()).or_insert(GmailBucket {
            units: rate,
            last: now,
            in_flight: 0,
        });
        b.units = (b.units + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.in_flight >= GMAIL_USER_CONCURRENCY {
            return Err(self.refused(ThrottleKind::GmailConcurrency));
        }
        let cost = f64::from(units);
        if b.units < cost {
            // Until the bucket holds the cost again.
            let wait = Duration::from_secs_f64((cost - b.units) / rate);
            return Err(Throttle {
                kind: ThrottleKind::GmailUserQuota,
                retry_after_secs: self.advise(wait),
            });
        }
        b.units -= cost;
        b.in_flight += 1;
        Ok(MailboxGuard {
            limits: self,
            key,
            gmail: true,
        })
    }

    /// Spends Gmail quota units without holding a concurrency place (batched sub-requests
    /// already counted as one place each by their own call).
    pub fn gmail_units_left(&self, tenant: usize, user: &str) -> f64 {
        let key = (tenant, user.to_ascii_lowercase());
        self.gmail
            .lock()
            .ok()
            .and_then(|m| m.get(&key).map(|b| b.units))
            .unwrap_or(self.options.gmail_units_per_sec)
    }

    /// Draws from the seeded generator (fault injection).
    pub fn chance(&self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        self.rng
            .lock()
            .map(|mut r| r.gen_bool(probability.min(1.0)))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifth_concurrent_graph_request_is_refused() {
        let limits = Limits::new(LimitOptions::default(), 1);
        let guards: Vec<_> = (0..4)
            .map(|_| limits.enter_graph_mailbox(0, "a@x").expect("within limit"))
            .collect();
        let err = limits
            .enter_graph_mailbox(0, "A@x")
            .err()
            .expect("fifth refused");
        assert_eq!(err.kind, ThrottleKind::MailboxConcurrency);
        assert!(
            limits.enter_graph_mailbox(0, "b@x").is_ok(),
            "other mailboxes unaffected"
        );
        drop(guards);
        assert!(limits.enter_graph_mailbox(0, "a@x").is_ok());
    }

    #[test]
    fn gmail_quota_runs_out_and_says_when_to_retry() {
        let limits = Limits::new(
            LimitOptions {
                gmail_units_per_sec: 50.0,
                ..Default::default()
            },
            1,
        );
        for _ in 0..5 {
            drop(limits.enter_gmail_user(0, "u@x", 10).expect("within quota"));
        }
        let err = limits
            .enter_gmail_user(0, "u@x", 10)
            .err()
            .expect("quota spent");
        assert_eq!(err.kind, ThrottleKind::GmailUserQuota);
        // 0.2 s of refill, said in whole seconds.
        assert_eq!(err.retry_after_secs, 1.0, "{err:?}");

        let lab_pace = Limits::new(
            LimitOptions {
                gmail_units_per_sec: 50.0,
                retry_advice: RetryAdvice::SubSecond,
                ..Default::default()
            },
            1,
        );
        for _ in 0..5 {
            drop(
                lab_pace
                    .enter_gmail_user(0, "u@x", 10)
                    .expect("within quota"),
            );
        }
        let err = lab_pace
            .enter_gmail_user(0, "u@x", 10)
            .err()
            .expect("quota spent");
        assert!(
            err.retry_after_secs > 0.0 && err.retry_after_secs <= 0.2,
            "{err:?}"
        );
    }

    #[test]
    fn retry_advice_is_whole_seconds_from_the_limit_hit_unless_sub_second_asked() {
        let whole = Limits::new(
            LimitOptions {
                latency: Duration::from_millis(20),
                capacity: 1,
                ..Default::default()
            },
            1,
        );
        let _slot = whole.take_slot(0).expect("first");
        assert_eq!(
            whole.take_slot(0).err().map(|t| t.retry_after_secs),
            Some(1.0)
        );
        assert_eq!(whole.advise(Duration::from_millis(1)), 1.0);
        assert_eq!(whole.advise(Duration::from_millis(2_001)), 3.0);
        let slow = Limits::new(
            LimitOptions {
                latency: Duration::from_millis(1_500),
                jitter: Duration::from_millis(600),
                ..Default::default()
            },
            1,
        );
        assert_eq!(slow.retry_after(), 3.0, "a service time of up to 2.1 s");
        let fast = Limits::new(
            LimitOptions {
                latency: Duration::from_millis(20),
                retry_advice: RetryAdvice::SubSecond,
                ..Default::default()
            },
            1,
        );
        assert_eq!(fast.retry_after(), 0.05);
        assert_eq!(fast.advise(Duration::from_millis(120)), 0.12);
    }

    #[test]
    fn capacity_is_per_tenant() {
        let limits = Limits::new(
            LimitOptions {
                capacity: 2,
                ..Default::default()
            },
            2,
        );
        let _a = limits.take_slot(0).expect("1");
        let _b = limits.take_slot(0).expect("2");
        assert_eq!(
            limits.take_slot(0).err().map(|t| t.kind),
            Some(ThrottleKind::Capacity)
        );
        assert!(limits.take_slot(1).is_ok());
    }
}

//! The circuit breaker in front of the primary model: it decides when the fallback
//! ([`super::fallback`]) serves instead.
//!
//! The breaker judges whole batches (one ONNX Runtime call each): a batch fails when inference
//! returns an error or takes longer than the budget. It opens when the failure rate over the last
//! `window` batches reaches `error_rate` (once at least `min_batches` were seen), stays open for
//! `open_for`, then lets batches through as half-open probes: `close_after` good probes in a row
//! close it, one bad probe opens it again. Measuring over a window of batches rather than
//! reacting to one failure is the hysteresis: a single bad batch is served by the fallback but
//! does not flip the whole worker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::alert::{Alert, AlertSink, AlertState, Details, FallbackDetails, Gate};
use crate::config::FallbackConfig;
use crate::event::{ModelRef, Variant};
use crate::telemetry::events::{BreakerTransitioned, InternalEvent};
use crate::telemetry::Metrics;

/// The breaker's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen { successes: usize },
}

/// A change worth telling operators about (it is the telemetry event's payload as it is).
pub use crate::telemetry::events::BreakerChange as Transition;

#[derive(Debug, Clone, Copy)]
pub struct BreakerOptions {
    pub error_rate: f64,
    pub window: usize,
    pub min_batches: usize,
    pub batch_budget: Option<Duration>,
    pub open_for: Duration,
    pub close_after: usize,
}

impl From<&FallbackConfig> for BreakerOptions {
    fn from(c: &FallbackConfig) -> BreakerOptions {
        BreakerOptions {
            error_rate: c.error_rate,
            window: c.window,
            min_batches: c.min_batches,
            batch_budget: (!c.batch_budget.is_zero()).then_some(c.batch_budget),
            open_for: c.open_for,
            close_after: c.close_after,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    options: BreakerOptions,
    state: BreakerState,
    /// Outcomes (true = failed) of the last `window` batches while closed.
    recent: VecDeque<bool>,
}

impl Breaker {
    pub fn new(options: BreakerOptions) -> Breaker {
        Breaker { options, state: BreakerState::Closed, recent: VecDeque::with_capacity(options.window) }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, BreakerState::Open { .. })
    }

    /// Back to closed with an empty window (a new primary was loaded).
    pub fn reset(&mut self) {
        self.state = BreakerState::Closed;
        self.recent.clear();
    }

    /// Whether the next batch goes to the primary; an expired open state becomes half-open here.
    pub fn allow_primary(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { successes: 0 };
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// Whether the primary's call for a batch, taking `took`, stayed within the budget.
    pub fn within_budget(&self, took: Duration) -> bool {
        self.options.batch_budget.is_none_or(|b| took <= b)
    }

    /// Records a batch the primary scored.
    pub fn record(&mut self, good: bool, now: Instant) -> Option<Transition> {
        match self.state {
            BreakerState::Closed => {
                if self.recent.len() == self.options.window {
                    self.recent.pop_front();
                }
                self.recent.push_back(!good);
                let failures = self.recent.iter().filter(|f| **f).count();
                let batches = self.recent.len();
                if batches >= self.options.min_batches && failures as f64 >= self.options.error_rate * batches as f64 {
                    self.state = BreakerState::Open { until: now + self.options.open_for };
                    self.recent.clear();
                    return Some(Transition::Opened { failures, batches });
                }
                None
            }
            BreakerState::HalfOpen { successes } if good => {
                if successes + 1 >= self.options.close_after {
                    self.state = BreakerState::Closed;
                    Some(Transition::Closed)
                } else {
                    self.state = BreakerState::HalfOpen { successes: successes + 1 };
                    None
                }
            }
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open { until: now + self.options.open_for };
                Some(Transition::Reopened)
            }
            // Batches are not sent to the primary while open.
            BreakerState::Open { .. } => None,
        }
    }
}

/// Tells operators about breaker transitions: a log line, the `fallback_active` gauge, the
/// transition counter, and a damped `fallback_active` alert.
pub struct BreakerReporter {
    alerts: Arc<AlertSink>,
    metrics: Arc<Metrics>,
    /// The primary's name, which keys the alerts, and the configured fallback.
    model_name: String,
    fallback: Option<ModelRef>,
    /// One firing and one resolve per episode; a breaker that keeps flapping re-fires at most
    /// once per cooldown (`monitor.alert_cooldown`).
    gate: Gate,
}

impl BreakerReporter {
    /// `firing`: a `fallback_active` alert was already published (a primary that failed to load).
    pub fn new(
        alerts: Arc<AlertSink>,
        metrics: Arc<Metrics>,
        model_name: &str,
        fallback: Option<ModelRef>,
        cooldown: Duration,
        firing: bool,
    ) -> BreakerReporter {
        let gate = if firing { Gate::fired(cooldown, Instant::now()) } else { Gate::new(cooldown) };
        BreakerReporter { alerts, metrics, model_name: model_name.to_string(), fallback, gate }
    }

    /// Reports `transition` of the breaker in front of `primary`; `error` is its last failure.
    pub fn report(&mut self, transition: Transition, error: Option<&str>, primary: &ModelRef) {
        BreakerTransitioned { change: transition, error }.emit(&self.metrics);
        let (open, counts) = match transition {
            Transition::Opened { failures, batches } => (true, Some((failures, batches))),
            Transition::Reopened => return,
            Transition::Closed => (false, None),
        };
        // The gauge shows every flap; the alert is damped by the gate.
        let Some(state) = AlertState::of(self.gate.update(open, !open, Instant::now())) else { return };
        let details = FallbackDetails {
            state,
            primary: primary.clone(),
            fallback: self.fallback.clone(),
            reason: None,
            failed_batches: counts.map(|c| c.0),
            batches: counts.map(|c| c.1),
            last_error: error.map(str::to_string),
        };
        let model = ModelRef { name: self.model_name.clone(), version: primary.version.clone() };
        self.alerts.send(&Alert::new(model, Some(Variant::Primary), Details::FallbackActive(details)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BreakerOptions {
        BreakerOptions {
            error_rate: 0.5,
            window: 4,
            min_batches: 2,
            batch_budget: Some(Duration::from_millis(50)),
            open_for: Duration::from_secs(10),
            close_after: 2,
        }
    }

    #[test]
    fn opens_on_the_failure_rate_half_opens_after_the_wait_and_closes_after_good_probes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(options());
        assert!(b.allow_primary(t0));
        // A failure as the very first batch is judged only once min_batches (2) were seen.
        let mut fresh = Breaker::new(options());
        assert_eq!(fresh.record(false, t0), None);
        assert_eq!(b.record(true, t0), None);
        assert_eq!(b.record(true, t0), None);
        // 1 failure of 3 is below 0.5; 2 of 4 reaches it.
        assert_eq!(b.record(false, t0), None);
        assert_eq!(b.record(false, t0), Some(Transition::Opened { failures: 2, batches: 4 }));
        assert!(!b.allow_primary(t0 + Duration::from_secs(9)));
        // Half-open after open_for; a failed probe reopens for another open_for.
        assert!(b.allow_primary(t0 + Duration::from_secs(10)));
        assert_eq!(b.state(), BreakerState::HalfOpen { successes: 0 });
        assert_eq!(b.record(false, t0 + Duration::from_secs(10)), Some(Transition::Reopened));
        assert!(!b.allow_primary(t0 + Duration::from_secs(19)));
        assert!(b.allow_primary(t0 + Duration::from_secs(20)));
        assert_eq!(b.record(true, t0 + Duration::from_secs(20)), None);
        assert_eq!(b.record(true, t0 + Duration::from_secs(20)), Some(Transition::Closed));
        // Closed with a fresh window: one failure in three does not reopen it.
        assert_eq!(b.record(true, t0 + Duration::from_secs(21)), None);
        assert_eq!(b.record(true, t0 + Duration::from_secs(21)), None);
        assert_eq!(b.record(false, t0 + Duration::from_secs(21)), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_batch_over_budget_counts_as_a_failure() {
        let b = Breaker::new(options());
        assert!(b.within_budget(Duration::from_millis(50)));
        assert!(!b.within_budget(Duration::from_millis(51)));
        let no_budget = Breaker::new(BreakerOptions { batch_budget: None, ..options() });
        assert!(no_budget.within_budget(Duration::from_secs(100)));
    }
}

//! Alert damping: one ongoing condition gives one alert and one all-clear, not a flood.
//!
//! A gate fires when its condition turns true (and the cooldown since its last firing has passed),
//! and resolves only once the condition is clearly false: callers pass a separate, stricter
//! "clear" test (hysteresis), so a value hovering at the threshold does not flap.

use std::time::{Duration, Instant};

/// What a gate decided on one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fire,
    Resolve,
    None,
}

/// One alert condition's state.
#[derive(Debug, Clone)]
pub struct Gate {
    active: bool,
    last_fired: Option<Instant>,
    cooldown: Duration,
}

impl Gate {
    pub fn new(cooldown: Duration) -> Gate {
        Gate { active: false, last_fired: None, cooldown }
    }

    /// A gate whose condition already fired at `at` (for example an alert published at start-up).
    pub fn fired(cooldown: Duration, at: Instant) -> Gate {
        Gate { active: true, last_fired: Some(at), cooldown }
    }

    /// A gate as a published history left it: `active` when its last alert said firing, and
    /// `last_fired` when it last fired (for the cooldown).
    pub fn resumed(cooldown: Duration, active: bool, last_fired: Option<Instant>) -> Gate {
        Gate { active, last_fired, cooldown }
    }

    /// `firing`: the condition holds; `clear`: it is clearly gone (stricter than `!firing`).
    pub fn update(&mut self, firing: bool, clear: bool, now: Instant) -> Transition {
        if !self.active {
            let cooled = self.last_fired.is_none_or(|t| now.saturating_duration_since(t) >= self.cooldown);
            if firing && cooled {
                self.active = true;
                self.last_fired = Some(now);
                return Transition::Fire;
            }
        } else if clear {
            self.active = false;
            return Transition::Resolve;
        }
        Transition::None
    }

    pub fn is_active(&self) -> bool {
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_resolves_once_and_respects_cooldown() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut g = Gate::new(s(60));
        assert_eq!(g.update(true, false, t), Transition::Fire);
        for i in 1..10 {
            assert_eq!(g.update(true, false, t + s(i)), Transition::None);
        }
        // Below the threshold but not clearly: still active (hysteresis).
        assert_eq!(g.update(false, false, t + s(11)), Transition::None);
        assert_eq!(g.update(false, true, t + s(12)), Transition::Resolve);
        // Flaps back within the cooldown: stays quiet.
        assert_eq!(g.update(true, false, t + s(20)), Transition::None);
        assert_eq!(g.update(true, false, t + s(61)), Transition::Fire);
    }
}

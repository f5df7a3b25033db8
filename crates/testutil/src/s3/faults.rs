//! Fault injection: what an object store does on a bad day, on demand.
//!
//! A [`FaultPlan`] set on a running server ([`S3Server::set_faults`](super::S3Server::set_faults))
//! gives one request in `one_in` a fault, the requests chosen by a seeded generator so that a
//! failing run can be repeated, the kinds taken from `kinds` in turn. [`S3Server::faults_injected`](super::S3Server::faults_injected)
//! counts what was injected, for tests to report.

use std::sync::Mutex;
use std::time::Duration;

/// One way a request can go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `503 SlowDown` instead of handling the request: S3's throttling answer.
    Unavailable,
    /// The request is handled, then answered `500 InternalError`: the client cannot know that
    /// its write happened.
    ErrorAfter,
    /// No answer for [`FaultPlan::hang`], then the connection closes: the client's own timeout
    /// has to end the attempt.
    Hang,
    /// The connection is cut in the middle of a body: a response body (GET) after half of it,
    /// a request body (PUT, part upload) after half of it was read, or before any answer when
    /// there is no body.
    Reset,
    /// The answer comes [`FaultPlan::slow`] late.
    Slow,
}

impl Fault {
    /// Every kind of fault.
    pub const ALL: [Fault; 5] = [
        Fault::Unavailable,
        Fault::ErrorAfter,
        Fault::Hang,
        Fault::Reset,
        Fault::Slow,
    ];

    fn index(self) -> usize {
        match self {
            Fault::Unavailable => 0,
            Fault::ErrorAfter => 1,
            Fault::Hang => 2,
            Fault::Reset => 3,
            Fault::Slow => 4,
        }
    }
}

/// Which requests get which faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// One request in `one_in`, on average, gets a fault; 1 is every request. 0 is none.
    pub one_in: u32,
    /// The kinds of fault, taken in turn: with at least as many faults as kinds, every kind
    /// strikes.
    pub kinds: Vec<Fault>,
    /// How long [`Fault::Hang`] holds a request.
    pub hang: Duration,
    /// How late [`Fault::Slow`] answers.
    pub slow: Duration,
    /// Seed of the choices.
    pub seed: u64,
}

impl FaultPlan {
    /// One request in `one_in` gets one of every kind of fault; a hang lasts 30 s (longer than
    /// a client should wait), a slow answer 1 s.
    #[must_use]
    pub fn every_kind(one_in: u32, seed: u64) -> FaultPlan {
        FaultPlan {
            one_in,
            kinds: Fault::ALL.to_vec(),
            hang: Duration::from_secs(30),
            slow: Duration::from_secs(1),
            seed,
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// [`Fault::Unavailable`].
    pub unavailable: u64,
    /// [`Fault::ErrorAfter`].
    pub error_after: u64,
    /// [`Fault::Hang`].
    pub hang: u64,
    /// [`Fault::Reset`].
    pub reset: u64,
    /// [`Fault::Slow`].
    pub slow: u64,
}

impl FaultCounts {
    /// All of them.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.unavailable + self.error_after + self.hang + self.reset + self.slow
    }
}

/// The plan in force and what it did; shared by every connection, and kept across restarts.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    plan: Option<FaultPlan>,
    rng: Option<fastrand::Rng>,
    counts: [u64; 5],
    next_kind: usize,
}

impl Faults {
    pub(crate) fn set(&self, plan: Option<FaultPlan>) {
        let mut state = self.lock();
        state.rng = plan.as_ref().map(|p| fastrand::Rng::with_seed(p.seed));
        state.next_kind = 0;
        state.plan = plan.filter(|p| p.one_in > 0 && !p.kinds.is_empty());
    }

    /// The fault for the next request, if it gets one, with its duration (hang or delay).
    pub(crate) fn pick(&self) -> Option<(Fault, Duration)> {
        let mut state = self.lock();
        let State {
            plan,
            rng,
            counts,
            next_kind,
        } = &mut *state;
        let (plan, rng) = (plan.as_ref()?, rng.as_mut()?);
        if rng.u32(0..plan.one_in) != 0 {
            return None;
        }
        let fault = plan.kinds[*next_kind % plan.kinds.len()];
        *next_kind += 1;
        counts[fault.index()] += 1;
        let duration = match fault {
            Fault::Hang => plan.hang,
            Fault::Slow => plan.slow,
            _ => Duration::ZERO,
        };
        Some((fault, duration))
    }

    pub(crate) fn counts(&self) -> FaultCounts {
        let c = self.lock().counts;
        FaultCounts {
            unavailable: c[0],
            error_after: c[1],
            hang: c[2],
            reset: c[3],
            slow: c[4],
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_injects_about_one_in_n_and_counts_them() {
        let faults = Faults::default();
        assert_eq!(faults.pick(), None, "no plan, no fault");
        faults.set(Some(FaultPlan::every_kind(4, 7)));
        let picked: Vec<_> = (0..4000).filter_map(|_| faults.pick()).collect();
        assert!((800..1200).contains(&picked.len()), "{}", picked.len());
        let counts = faults.counts();
        assert_eq!(counts.total(), picked.len() as u64);
        assert!(counts.unavailable > 0 && counts.error_after > 0 && counts.hang > 0);
        assert!(counts.reset > 0 && counts.slow > 0);
        assert!(picked.iter().all(
            |(f, d)| (*f == Fault::Hang) == (*d == Duration::from_secs(30)) || *f == Fault::Slow
        ));

        // The same seed, the same choices.
        let again = Faults::default();
        again.set(Some(FaultPlan::every_kind(4, 7)));
        let repeat: Vec<_> = (0..4000).filter_map(|_| again.pick()).collect();
        assert_eq!(repeat, picked);

        faults.set(None);
        assert_eq!(faults.pick(), None);
        assert_eq!(faults.counts().total(), picked.len() as u64, "counts stay");
    }
}

//! The controller's timers: a small fixed table, one slot per kind, each with
//! the reason it was armed (so "why did it wake at T?" has an answer).

use std::time::Instant;

/// The kinds of deadline the controller keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The next failback ramp step of some region.
    Ramp = 0,
    /// The end of a hold-down or flap-damping period of some region.
    Release = 1,
    /// Re-send the desired weight plan after a failed application.
    RetryWeights = 2,
    /// Re-evaluate the database after a failed promotion step.
    RetryDatabase = 3,
    /// The deadline of the promotion step in progress.
    DatabaseStep = 4,
    /// Re-send the old writer's fence while waiting for proof it stopped.
    RetryFence = 5,
}

impl Timer {
    const COUNT: usize = 6;
    pub(crate) const ALL: [Timer; Self::COUNT] = [
        Timer::Ramp,
        Timer::Release,
        Timer::RetryWeights,
        Timer::RetryDatabase,
        Timer::DatabaseStep,
        Timer::RetryFence,
    ];
}

/// Why a timer was armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerReason {
    /// A region is ramping back.
    FailbackRamp,
    /// A region is held down or damped.
    HoldDown,
    /// A weight plan failed to apply.
    WeightsFailed,
    /// A fence or promotion failed.
    DatabaseFailed,
    /// Waiting for proof that the old writer stopped.
    AwaitingProof,
    /// A switchover's target is catching up.
    CatchUp,
    /// The writer record is being claimed.
    Claim,
    /// A promotion was sent.
    Promote,
    /// The old writer's fence failed and is re-sent.
    RetryFence,
    /// A switchover marks the old writer draining in the writer record.
    DrainMark,
    /// A switchover waits `policy.writer_drain` before fencing the old writer.
    Drain,
}

/// One armed deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// When it expires.
    pub at: Instant,
    /// Why it was armed.
    pub reason: TimerReason,
}

/// Fixed table of deadlines; never allocates.
#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    slots: [Option<Deadline>; Timer::COUNT],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant, reason: TimerReason) {
        self.slots[timer as usize] = Some(Deadline { at, reason });
    }

    pub fn stop(&mut self, timer: Timer) {
        self.slots[timer as usize] = None;
    }

    pub fn get(&self, timer: Timer) -> Option<Deadline> {
        self.slots[timer as usize]
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|d| d.at).min()
    }

    /// Disarms and returns the first timer expired at `now`, if any.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        for timer in Timer::ALL {
            if let Some(d) = self.slots[timer as usize] {
                if d.at <= now {
                    self.slots[timer as usize] = None;
                    return Some(timer);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_deadline_wins_and_expiry_disarms() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(
            Timer::Release,
            t0 + Duration::from_secs(5),
            TimerReason::HoldDown,
        );
        table.set(
            Timer::Ramp,
            t0 + Duration::from_secs(3),
            TimerReason::FailbackRamp,
        );
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(table.take_expired(t0), None);
        assert_eq!(
            table.take_expired(t0 + Duration::from_secs(4)),
            Some(Timer::Ramp)
        );
        assert_eq!(table.take_expired(t0 + Duration::from_secs(4)), None);
        assert_eq!(
            table.get(Timer::Release).map(|d| d.reason),
            Some(TimerReason::HoldDown)
        );
    }
}

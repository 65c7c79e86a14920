//! Acknowledgements of one channel, batched: a delivery that succeeded is
//! acked together with every earlier one, by a single `basic.ack` with
//! `multiple`, once no earlier delivery of the channel is still in hand.
//!
//! Why: a quorum queue turns every ack into a command of its Raft log, and
//! lapin every ack into a hand-over to its I/O thread; one ack for a run of
//! deliveries costs about what one ack for one does (README, Performance).
//!
//! The rules that keep it exact:
//! - `multiple` settles every unsettled delivery of the channel up to its
//!   tag, so a run ack goes out only for a prefix of deliveries that all
//!   succeeded or were settled on their own before (a delivery returned with
//!   `nack` leaves the window only once its nack is sent).
//! - Acking a tag that is already settled is a channel error, so each tag
//!   leaves the window once, under its lock, and whoever takes it off sends
//!   its ack; run acks go out in order from one task, which also sends the
//!   acks of deliveries acked alone before any run ack taken after them.
//! - A delivery that succeeded waits at most [`HOLD`] for those before it,
//!   then is acked alone: a slow one (a long invocation, a publish waiting
//!   out a broker alarm) must not keep the others' prefetch slots.
//! - A delivery whose handling never ends (its task panicked) is returned on
//!   its own when its [`InHand`] drops, so it can neither hold back the
//!   others nor be acked by them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest a delivery that succeeded waits to be acked with the ones
/// before it; then it is acked alone.
pub const HOLD: Duration = Duration::from_millis(50);

/// The deliveries of one channel not yet acked.
pub struct AckWindow {
    state: Mutex<State>,
}

struct State {
    unacked: Unacked<Acker>,
    /// Run acks, to the task that sends them; sent to under the lock, so in order.
    runs: mpsc::UnboundedSender<Acker>,
}

impl AckWindow {
    /// A window, and the task that sends its acks: it ends, having sent
    /// every ack, once the window and every [`InHand`] of it are dropped.
    pub fn start() -> (Arc<Self>, JoinHandle<()>) {
        let (runs, pending) = mpsc::unbounded_channel();
        let window = Arc::new(Self { state: Mutex::new(State { unacked: Unacked::default(), runs }) });
        (Arc::clone(&window), tokio::spawn(send_acks(Arc::downgrade(&window), pending)))
    }

    /// A delivery taken from the channel: call in delivery order.
    pub fn receive(self: &Arc<Self>, delivery: &lapin::message::Delivery) -> InHand {
        let tag = delivery.delivery_tag;
        self.lock().unacked.receive(tag);
        InHand { window: Arc::clone(self), tag, acker: Some(delivery.acker.clone()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each change is one call that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records how `tag` ended and hands the run ack it allows, if any, to
    /// the ack task.
    fn settle(&self, tag: u64, succeeded: Option<Acker>) {
        let mut state = self.lock();
        if let Some(acker) = state.unacked.settle(tag, succeeded, Instant::now()) {
            // Fails only once the ack task ended, i.e. at shutdown: the
            // broker then returns the deliveries, and steps are idempotent.
            let _ = state.runs.send(acker);
        }
    }
}

/// Sends the run acks, in order (when several wait, only the last: it covers
/// the others), and every [`HOLD`] the acks of deliveries held too long.
async fn send_acks(window: Weak<AckWindow>, mut runs: mpsc::UnboundedReceiver<Acker>) {
    let mut tick = tokio::time::interval(HOLD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            run = runs.recv() => {
                let Some(mut last) = run else { return };
                while let Ok(next) = runs.try_recv() {
                    last = next;
                }
                send(&last, true).await;
            }
            _ = tick.tick() => {
                let Some(window) = window.upgrade() else { continue };
                let alone = window.lock().unacked.held_since(Instant::now() - HOLD);
                drop(window);
                for acker in alone {
                    send(&acker, false).await;
                }
            }
        }
    }
}

async fn send(acker: &Acker, multiple: bool) {
    if let Err(error) = acker.ack(BasicAckOptions { multiple }).await {
        tracing::warn!(%error, "ack failed; the broker will redeliver (idempotent)");
    }
}

/// The bookkeeping of a window, apart from lapin: deliveries by tag (a
/// channel numbers its deliveries in order), each with its acker and when
/// it succeeded, once it did.
#[derive(Debug)]
struct Unacked<A> {
    deliveries: BTreeMap<u64, Option<(A, Instant)>>,
}

impl<A> Default for Unacked<A> {
    fn default() -> Self {
        Self { deliveries: BTreeMap::new() }
    }
}

impl<A> Unacked<A> {
    fn receive(&mut self, tag: u64) {
        self.deliveries.insert(tag, None);
    }

    /// Records how `tag` ended (`Some`: it succeeded, with its acker;
    /// `None`: it was settled on its own), then takes the run of succeeded
    /// deliveries at the front off, answering the acker of its last: acking
    /// that one with `multiple` settles the run.
    fn settle(&mut self, tag: u64, succeeded: Option<A>, now: Instant) -> Option<A> {
        match succeeded {
            Some(acker) => drop(self.deliveries.insert(tag, Some((acker, now)))),
            None => drop(self.deliveries.remove(&tag)),
        }
        let mut last = None;
        while let Some(entry) = self.deliveries.first_entry() {
            if entry.get().is_none() {
                break;
            }
            last = entry.remove().map(|(acker, _)| acker);
        }
        last
    }

    /// Takes off the deliveries that succeeded before `cutoff` (all behind
    /// one still in hand), answering their ackers in tag order: each is to
    /// be acked alone.
    fn held_since(&mut self, cutoff: Instant) -> Vec<A> {
        let overdue: Vec<u64> = self
            .deliveries
            .iter()
            .filter(|(_, done)| done.as_ref().is_some_and(|(_, at)| *at <= cutoff))
            .map(|(tag, _)| *tag)
            .collect();
        overdue.iter().filter_map(|tag| self.deliveries.remove(tag).flatten()).map(|(acker, _)| acker).collect()
    }
}

/// One delivery being handled: settle it with [`InHand::ack`] or
/// [`InHand::nack`].
pub struct InHand {
    window: Arc<AckWindow>,
    tag: u64,
    /// `None` once settled.
    acker: Option<Acker>,
}

impl InHand {
    /// The delivery succeeded: it is acked with the run it ends or joins.
    pub fn ack(mut self) {
        if let Some(acker) = self.acker.take() {
            self.window.settle(self.tag, Some(acker));
        }
    }

    /// Returns the delivery on its own (`requeue` decides where to), then lets
    /// the deliveries after it be acked.
    pub async fn nack(mut self, options: BasicNackOptions) -> Result<(), lapin::Error> {
        let Some(acker) = self.acker.take() else { return Ok(()) };
        let returned = acker.nack(options).await.map(drop);
        self.window.settle(self.tag, None);
        returned
    }
}

impl Drop for InHand {
    /// Never settled (its task panicked or was cancelled): the delivery goes
    /// back to its queue on its own, so that no later ack covers it.
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else { return };
        let (window, tag) = (Arc::clone(&self.window), self.tag);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                let _ = acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                window.settle(tag, None);
            })),
            // No runtime: the process is ending; the delivery stays in the
            // window (nothing after it is acked) and the broker returns it
            // when the connection closes.
            Err(_) => drop((acker, window, tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(tags: impl IntoIterator<Item = u64>) -> Unacked<u64> {
        let mut unacked = Unacked::default();
        tags.into_iter().for_each(|tag| unacked.receive(tag));
        unacked
    }

    fn tags(unacked: &Unacked<u64>) -> Vec<u64> {
        unacked.deliveries.keys().copied().collect()
    }

    #[test]
    fn a_delivery_that_succeeds_behind_one_in_hand_waits_for_it() {
        let now = Instant::now();
        let mut unacked = window([1, 2, 3]);
        assert_eq!(unacked.settle(2, Some(2), now), None, "1 is in hand: acking 2 with `multiple` would ack 1");
        assert_eq!(unacked.settle(3, Some(3), now), None);
        assert_eq!(unacked.settle(1, Some(1), now), Some(3), "1 ends the run: one ack of 3 settles 1, 2 and 3");
        assert!(unacked.deliveries.is_empty());
    }

    #[test]
    fn in_order_successes_are_acked_one_run_at_a_time() {
        let now = Instant::now();
        let mut unacked = window([7, 8]);
        assert_eq!(unacked.settle(7, Some(7), now), Some(7));
        unacked.receive(9);
        assert_eq!(unacked.settle(8, Some(8), now), Some(8));
        assert_eq!(tags(&unacked), [9]);
    }

    #[test]
    fn a_delivery_settled_on_its_own_releases_the_run_behind_it_and_is_never_acked_by_it() {
        let now = Instant::now();
        let mut unacked = window([1, 2, 3, 4]);
        assert_eq!(unacked.settle(2, Some(2), now), None);
        assert_eq!(unacked.settle(1, None, now), Some(2), "1 was returned with its own nack before this ack of 2");
        assert_eq!(unacked.settle(4, Some(4), now), None, "3 is in hand");
        assert_eq!(tags(&unacked), [3, 4]);
        assert_eq!(unacked.settle(3, None, now), Some(4));
        assert!(unacked.deliveries.is_empty());
    }

    #[test]
    fn deliveries_held_past_the_cutoff_are_taken_off_to_be_acked_alone_and_never_again() {
        let start = Instant::now();
        let later = start + HOLD;
        let mut unacked = window([1, 2, 3, 4]);
        assert_eq!(unacked.settle(2, Some(2), start), None);
        assert_eq!(unacked.settle(4, Some(4), later), None);
        assert_eq!(unacked.held_since(start), [2], "only 2 waited long enough; 1 and 3 are in hand");
        assert_eq!(tags(&unacked), [1, 3, 4]);
        assert_eq!(unacked.settle(1, Some(1), later), Some(1), "the run is 1 alone: 2 was acked on its own");
        assert_eq!(unacked.settle(3, Some(3), later), Some(4));
        assert!(unacked.held_since(later).is_empty());
    }
}

//! How the consumer runner acknowledges: in runs, one `multiple` ack for a
//! run of deliveries that succeeded (`shared::bus::amqp::acks`), never
//! covering a delivery still in hand, and alone for those that waited too
//! long behind one. Each test holds one delivery in its step while later
//! ones finish, in a vhost of its own.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::bridge::inventory_reserved;
use common::runner::{BOUND, Runner, send, unacked, wait_consumers};
use common::{Vhost, eventually, message_count};
use lapin::types::FieldTable;
use shared::bus::DeliverySettings;
use shared::bus::amqp::{StepInvoker, Topology};
use shared::{Event, Function, StepError};
use tokio::sync::watch;

/// Longer than the runner holds a delivery that succeeded for those before it (50 ms).
const HOLD_AND_SOME: std::time::Duration = std::time::Duration::from_millis(300);

/// A step that succeeds at once, except for the one `held` event, which
/// waits until released and then, on its first handling only, panics when
/// `panics` says so. It counts its calls per event.
struct Holding {
    held: String,
    panics: bool,
    release: watch::Receiver<bool>,
    calls: Mutex<HashMap<String, usize>>,
}

impl Holding {
    fn calls(&self) -> HashMap<String, usize> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl StepInvoker for Holding {
    async fn handle(&self, _function: Function, event: &Event) -> Result<Vec<Event>, StepError> {
        let id = event.id.to_string();
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(id.clone()).or_default();
            *count += 1;
            *count
        };
        if id == self.held && call == 1 {
            let mut release = self.release.clone();
            release.wait_for(|released| *released).await.expect("the test holds the sender");
            if self.panics {
                panic!("the held delivery's step fails hard (a bug in a step)");
            }
        }
        Ok(vec![])
    }
}

struct Scene {
    vhost: Vhost,
    step: Arc<Holding>,
    release: watch::Sender<bool>,
    runner: Runner,
    /// The held event's id first, then the others', in the order sent.
    sent: Vec<String>,
}

/// Starts the runner on `ship-order`'s queue and sends it the held event,
/// then `others` more; answers once the others were handled.
async fn hold_one_then_send(label: &str, panics: bool, others: usize) -> Scene {
    let vhost = Vhost::new(label);
    let link = vhost.link("acks-test");
    let settings = DeliverySettings::default();
    link.declare(&Topology::derive(&settings)).await.expect("declare the topology");
    let events: Vec<Event> = (0..=others).map(|_| inventory_reserved("SKU-1", 1)).collect();
    let (release, released) = watch::channel(false);
    let step = Arc::new(Holding {
        held: events[0].id.to_string(),
        panics,
        release: released,
        calls: Mutex::new(HashMap::new()),
    });
    let runner = Runner::start(&vhost.url, vec![Function::ShipOrder], Arc::clone(&step), settings);
    let ship = Function::ShipOrder.queue();
    wait_consumers(&link, &ship, 1).await;
    for event in &events {
        send(&link, &ship, event, FieldTable::default()).await;
    }
    let step_seen = Arc::clone(&step);
    eventually("every event handled once", BOUND, || {
        let calls = step_seen.calls();
        async move { if calls.len() == others + 1 { Ok(()) } else { Err(format!("{} handled", calls.len())) } }
    })
    .await;
    let sent = events.iter().map(|event| event.id.to_string()).collect();
    Scene { vhost, step, release, runner, sent }
}

impl Scene {
    /// Waits until the broker holds nothing of the queue, ready or unacked.
    async fn wait_settled(&self) {
        let link = self.vhost.link("acks-check");
        let ship = Function::ShipOrder.queue();
        eventually("the queue empty and nothing unacked", BOUND, || async {
            let state = (message_count(&link, &ship).await, unacked(&self.vhost));
            if state == (0, 0) { Ok(()) } else { Err(format!("(ready, unacked) = {state:?}")) }
        })
        .await;
    }
}

#[tokio::test]
async fn deliveries_that_succeed_behind_one_in_hand_are_acked_alone_without_it_then_it_once() {
    let scene = hold_one_then_send("acks-behind", false, 9).await;
    // Acked alone once they waited long enough: a `multiple` ack of any of
    // them would have acked the held one too, and left 0.
    let vhost = &scene.vhost;
    eventually("the nine acked, the held one not", BOUND, || async {
        match unacked(vhost) {
            1 => Ok(()),
            other => Err(format!("{other} unacked")),
        }
    })
    .await;
    tokio::time::sleep(HOLD_AND_SOME).await;
    assert_eq!(unacked(vhost), 1, "the held delivery stays unacked while in hand");

    scene.release.send(true).unwrap();
    scene.wait_settled().await;
    scene.runner.stop().await;
    let calls = scene.step.calls();
    for id in &scene.sent {
        assert_eq!(calls.get(id), Some(&1), "{id} is handled once: acked, never redelivered");
    }
}

#[tokio::test]
async fn a_delivery_whose_step_panics_comes_back_alone_and_the_later_ones_are_acked_once() {
    let scene = hold_one_then_send("acks-panic", true, 9).await;

    scene.release.send(true).unwrap();
    let step = Arc::clone(&scene.step);
    let held = scene.sent[0].clone();
    eventually("the held event handled again", BOUND, || {
        let again = step.calls().get(&held) == Some(&2);
        async move { if again { Ok(()) } else { Err("not yet redelivered".to_owned()) } }
    })
    .await;
    scene.wait_settled().await;
    scene.runner.stop().await;
    let calls = scene.step.calls();
    for id in &scene.sent[1..] {
        assert_eq!(calls.get(id), Some(&1), "{id} is handled once");
    }
    assert_eq!(calls.get(&held), Some(&2), "returned on its own, then handled and acked");
}

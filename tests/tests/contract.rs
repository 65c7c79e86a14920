//! The choreography table (`shared::contract::choreography`) is the one
//! declaration of the flow; these checks fail when the code or the docs
//! drift from it:
//! - every step refuses, as permanently `not_consumed`, exactly the event
//!   types outside its function's `consumes` row;
//! - the flowchart in README.md is the one `choreo graph` draws from the table.

use shared::contract::choreography::{CHOREOGRAPHY, mermaid};
use shared::contract::domain::OrderId;
use shared::step::not_consumed;
use shared::testkit::{TestStore, event, sample_payload};
use shared::{EventType, StepError};

#[tokio::test]
async fn every_step_refuses_exactly_the_event_types_outside_its_consumes_row() {
    let steps = choreo::steps::all();
    assert!(!steps.is_empty(), "no step is linked");
    for step in steps {
        let function = step.function();
        let row = CHOREOGRAPHY.iter().find(|spec| spec.function == function).expect("every function has a row");
        for &event_type in EventType::ALL {
            // GIVEN a throwaway store stocked with the samples' SKU
            let given = TestStore::with_stock(&[("SAMPLE-1", 10, 10)]).await;
            // WHEN the step is handed an event of this type
            let event = event(OrderId::new(), sample_payload(event_type));
            let refusal = not_consumed(function, &event).to_string();
            let outcome = step.handle(&event, &given.ports()).await;
            // THEN it refuses it as not consumed if and only if the table says so
            let refused = matches!(&outcome, Err(error @ StepError::Permanent(_)) if error.to_string() == refusal);
            if row.consumes.contains(&event_type) {
                assert!(
                    !refused,
                    "{function} consumes {event_type} by the table, but its step refused it: {outcome:?}"
                );
            } else {
                assert!(
                    refused,
                    "{function} does not consume {event_type} by the table, but its step answered {outcome:?}"
                );
            }
        }
    }
}

#[test]
fn the_readme_flowchart_is_the_one_drawn_from_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    let (_, after) = readme.split_once("```mermaid").expect("README.md has a ```mermaid block");
    let (block, _) = after.split_once("```").expect("the ```mermaid block of README.md is closed");
    assert_eq!(
        block.trim(),
        mermaid().trim(),
        "README.md's flowchart is not the table's: paste the output of `choreo graph` into it"
    );
}

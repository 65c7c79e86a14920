//! Saga supervision (ARCHITECTURE.md §7.9): the deadline sweeper, which
//! makes sure no order waits forever, and the reading of where a saga
//! stands (`progress`), which `choreo sagas stuck|redrive` show and cure,
//! and its full timeline (`timeline`), which `choreo order show --timeline` prints.

mod deadline;
mod progress;
mod timeline;

pub use self::deadline::{
    DEADLINE_VAR, DEFAULT_SAGA_DEADLINE, DeadlineError, SweepReport, deadline_from, parse_deadline, parse_duration,
    sweep_deadlines, sweep_every, sweep_forever,
};
pub use self::progress::{Progress, SagaRecords, Waiting, progress_of, saga_records};
pub use self::timeline::{Consumption, Hop, Timeline, WAITING, timeline_of};

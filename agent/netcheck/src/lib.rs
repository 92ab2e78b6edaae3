//! Netcheck (reference §3.2-3.3, §2.7), restricted to what DERP home selection needs: a STUN
//! probe plan over the DERP map, a sans-I/O probe state machine, the report, the sticky home
//! region with its 5-minute history, and a thin tokio shell. See README.md.

mod error;
mod home;
mod plan;
mod probe;
mod report;
mod shell;

pub use error::Error;
pub use home::{DERP_HEARD_WINDOW, HISTORY_MAX_ENTRIES, HISTORY_WINDOW, History, STICKY_MIN_GAIN};
pub use plan::{
    ACTIVE_RETRANSMIT, Family, INITIAL_RETRANSMIT, Plan, PlanOptions, PlannedProbe, SkipReason,
    SkippedNode, TRIES_PER_REGION, retransmit_interval,
};
pub use probe::{Probe, ResponseOutcome, STUN_PHASE_TIMEOUT};
pub use report::Report;
pub use shell::{StunTransport, run_once, run_over};

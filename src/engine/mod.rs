//! The retraction engine: plans, jobs, restore, automation, metrics and audit. UI-agnostic: the
//! TUI and the CLI drive it (DESIGN §1).

pub mod audit;
pub mod metrics;
pub mod plan;
pub mod roles;

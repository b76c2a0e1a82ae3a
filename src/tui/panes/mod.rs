//! One pane per file: each has `render(frame, area, &App, &Theme)` and `hints(&App)`.

pub mod audit;
pub mod confirm;
pub mod jobs;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod recipients;
pub mod search;
pub mod tenants;

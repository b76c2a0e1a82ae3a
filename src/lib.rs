//! clawback: post-delivery email retraction for Microsoft 365 and Google Workspace.
//!
//! The library holds every capability (lab, provider clients, store, trace, engine) with no UI
//! code; `tui` and `cli` are thin front ends over it (DESIGN §1).

pub mod cli;
pub mod config;
pub mod engine;
pub mod intel;
pub mod lab;
pub mod model;
pub mod provider;
pub mod secret;
pub mod store;
pub mod trace;
pub mod tui;

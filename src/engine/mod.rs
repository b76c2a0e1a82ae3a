//! The retraction engine's interface: front ends (TUI, CLI) send [`Command`]s and read
//! [`EngineEvent`]s over an [`EngineHandle`]. All provider and store I/O happens in the engine
//! task; a front end never blocks on it (DESIGN §1).

pub mod audit;
pub mod automation;
pub mod checklist;
pub mod command;
pub mod core;
pub mod event;
pub mod execute;
pub mod guard;
pub mod metrics;
pub mod overlap;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod roles;
pub mod seal;
pub mod service;
pub mod view;
pub mod worker;

pub use command::Command;
pub use core::{Engine, EngineError, Operator};
pub use event::EngineEvent;
use tokio::sync::mpsc;

/// The front end's end of the engine task: commands in, events out.
///
/// The engine task owns the other ends. It must turn a panic inside itself into
/// `EngineEvent::EngineFailed` (e.g. by running work in a `tokio::spawn`ed task and reporting a
/// `JoinError`), and simply drop its sender when it stops.
#[derive(Debug)]
pub struct EngineHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<EngineEvent>,
}

/// The engine's end of an [`EngineHandle`].
#[derive(Debug)]
pub struct EngineEnd {
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub events: mpsc::UnboundedSender<EngineEvent>,
}

impl EngineHandle {
    /// A connected pair: the handle for a front end and the end for the engine task.
    pub fn pair() -> (EngineHandle, EngineEnd) {
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        (
            EngineHandle {
                commands: command_tx,
                events: event_rx,
            },
            EngineEnd {
                commands: command_rx,
                events: event_tx,
            },
        )
    }
}

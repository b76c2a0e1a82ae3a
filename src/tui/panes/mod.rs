//! One pane per file: each holds its state, the update for its own actions and engine answers,
//! `render(frame, area, &App, &Theme)` and `hints(&App)`. The App keeps routing, global keys,
//! overlays and the engine channel; a pane gets what else it needs through a `PaneCtx`.

pub mod audit;
pub mod confirm;
pub mod jobs;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod recipients;
pub mod search;
pub mod tenants;

use crate::model::Role;
use crate::tui::app::{Confirm, Prompt, PromptKind, StatusLine};
use crate::tui::input::TextInput;
use crate::tui::keymap::Keymap;

/// What a pane's update may touch besides its own state: the status line, the prompt (a pane
/// opens its filter there), the keymap (keys named in messages) and the operator's role.
pub struct PaneCtx<'a> {
    pub status: &'a mut Option<StatusLine>,
    pub prompt: &'a mut Option<Prompt>,
    pub keymap: &'a Keymap,
    pub role: Role,
    /// What the pane asks of the rest of the console (done by the App after the update).
    pub then: Option<Then>,
}

/// A pane's request beyond its own state.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// Search the trace for this query now (the Search pane takes the focus).
    Search(String),
    /// Ask this yes/no question (an overlay only `y` / `n` / `esc` answer).
    Ask(Confirm),
    /// Open the selected search result's recipients (the Recipients pane takes the focus).
    OpenMessage,
    /// Build the plan for the checklist (the plan overlay opens).
    BuildPlan,
}

impl PaneCtx<'_> {
    pub fn set_status(&mut self, text: impl Into<String>, is_error: bool) {
        *self.status = Some(StatusLine {
            text: text.into(),
            is_error,
        });
    }

    /// Opens the `/` filter line on `text` (the pane's filter so far).
    pub fn open_filter(&mut self, text: &str) {
        *self.prompt = Some(Prompt {
            kind: PromptKind::Filter,
            text: TextInput::new(text),
        });
    }
}

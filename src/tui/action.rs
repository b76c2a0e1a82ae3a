//! `Action`: what the operator asked for, in the imperative. It is also the keymap vocabulary:
//! the snake_case serde names are what `[ui.keys.<mode>]` binds; variants that carry data are
//! internal (`#[serde(skip)]`) and cannot be bound.

use serde::{Deserialize, Serialize};

/// An operator request to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    // Global
    Quit,
    Help,
    NextPane,
    PrevPane,
    ShowSearch,
    ShowRecipients,
    ShowPolicy,
    ShowMetrics,
    ShowJobs,
    ShowAudit,
    ShowTenants,
    /// `:` command line.
    CommandLine,
    /// `/` filter (the query box on the search pane).
    Filter,
    Refresh,
    ToggleMouse,
    /// Leave the current input / overlay.
    Cancel,
    /// Enter: submit / open / confirm, depending on the pane.
    Submit,
    /// Tab on the `:` command line: complete the command name.
    Complete,
    /// Yes to the question on screen (quit with a job running, restore, resume).
    Confirm,

    // Navigation
    MoveUp,
    MoveDown,
    MoveLeft,
    MoveRight,
    PageUp,
    PageDown,
    First,
    Last,

    // Search
    ToggleGrouping,

    // Recipients
    ToggleInclude,
    SelectAll,
    SelectNone,
    InvertSelection,
    DepthIncrease,
    DepthDecrease,
    NextRetractAction,
    /// Cycle the retract action backwards.
    PrevRetractAction,
    PreviewPlan,

    // Jobs
    CancelJob,
    RetryFailed,
    Restore,
    /// Continue the selected interrupted or cancelled job.
    ResumeJob,
    /// Cycle the outcome filter: all, failed, not settled, ok, skipped.
    NextOutcomeFilter,

    // Policy
    SetPolicyCell,
    TogglePostDelivery,
    TogglePhishSubmission,
    IntervalIncrease,
    IntervalDecrease,
    SavePolicy,

    // Metrics
    NextWindow,
    ViewDetails,

    // Audit
    VerifyAudit,

    // Internal only: not bindable.
    /// An edit of the focused text input: a typed character, a cursor move, a deletion.
    #[serde(skip)]
    Edit(tui_input::InputRequest),
    /// A periodic tick (debounce, frame pacing).
    #[serde(skip)]
    Tick,
    /// The terminal was resized.
    #[serde(skip)]
    Resize(u16, u16),
}

impl Action {
    /// The keymap name (`move_down`), or `None` for internal actions.
    pub fn name(&self) -> Option<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => Some(name),
            _ => None,
        }
    }

    /// Parses a keymap name.
    pub fn from_name(name: &str) -> Option<Action> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    /// Short description for hints and the help overlay.
    pub fn describe(&self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::NextPane => "next pane",
            Action::PrevPane => "previous pane",
            Action::ShowSearch => "search",
            Action::ShowRecipients => "recipients",
            Action::ShowPolicy => "policy",
            Action::ShowMetrics => "metrics",
            Action::ShowJobs => "jobs",
            Action::ShowAudit => "audit",
            Action::ShowTenants => "tenants",
            Action::CommandLine => "command",
            Action::Filter => "filter",
            Action::Refresh => "refresh",
            Action::ToggleMouse => "mouse on/off",
            Action::Cancel => "back",
            Action::Submit => "open",
            Action::Complete => "complete",
            Action::Confirm => "yes",
            Action::MoveUp => "move up",
            Action::MoveDown => "move down",
            Action::MoveLeft => "move left",
            Action::MoveRight => "move right",
            Action::PageUp => "page up",
            Action::PageDown => "page down",
            Action::First => "first",
            Action::Last => "last",
            Action::ToggleGrouping => "group campaigns",
            Action::ToggleInclude => "include",
            Action::SelectAll => "all",
            Action::SelectNone => "none",
            Action::InvertSelection => "invert",
            Action::DepthIncrease => "depth+",
            Action::DepthDecrease => "depth-",
            Action::NextRetractAction => "action",
            Action::PrevRetractAction => "action back",
            Action::PreviewPlan => "plan",
            Action::CancelJob => "cancel job",
            Action::RetryFailed => "retry failed",
            Action::Restore => "restore",
            Action::ResumeJob => "resume job",
            Action::NextOutcomeFilter => "outcome filter",
            Action::SetPolicyCell => "set",
            Action::TogglePostDelivery => "post delivery",
            Action::TogglePhishSubmission => "phish submission",
            Action::IntervalIncrease => "interval+",
            Action::IntervalDecrease => "interval-",
            Action::SavePolicy => "save",
            Action::NextWindow => "window",
            Action::ViewDetails => "details",
            Action::VerifyAudit => "verify",
            Action::Edit(_) | Action::Tick | Action::Resize(..) => "",
        }
    }
}

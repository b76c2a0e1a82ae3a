//! The console's state and its one state machine: `App::update(Action) -> Vec<Command>` and
//! `App::on_engine(EngineEvent) -> Vec<Command>`, both synchronous and free of I/O, so the whole
//! console can be driven headless by tests.

mod live;

use super::action::Action;
use super::input::TextInput;
use super::keymap::{KeyChord, Keymap, Mode};
pub use super::panes::audit::AuditState;
pub use super::panes::confirm::Confirm;
pub use super::panes::jobs::{JobsState, OutcomeFilter};
pub use super::panes::metrics::MetricsState;
pub use super::panes::plan::{PlanExit, PlanState};
pub use super::panes::policy::PolicyState;
pub use super::panes::recipients::RecipientsState;
pub use super::panes::search::{ResultRow, SearchResults, SearchState, build_view};
pub use super::panes::tenants::{TenantsLoading, TenantsState};
use super::panes::{PaneCtx, Then};
use super::widgets::{PAGE, count, debounce_due};
use crate::engine::Command;
use crate::engine::event::EngineEvent;
use crate::engine::view::{
    Confirmation, JobId, JobKind, JobPhase, JobProgress, JobView, RetractRequest, SearchRow,
};
use crate::model::{RetractAction, Role, Trigger};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

/// Rows asked of a search.
pub const SEARCH_LIMIT: usize = 100_000;
/// Ticks of quiet typing before a search is sent (with the loop's 50 ms tick: 150 ms).
pub const DEBOUNCE_TICKS: u8 = 3;
/// Longest count the Hard Delete confirmation takes (u64 has 20 digits).
pub const HARD_DELETE_DIGITS: usize = 20;
/// Deepest conversation depth offered.
pub const MAX_DEPTH: u8 = 5;
/// Post Delivery / Phish Submission interval step and bounds, seconds.
pub const INTERVAL_STEP: u64 = 300;
pub const INTERVAL_MIN: u64 = 60;
pub const INTERVAL_MAX: u64 = 86_400;
/// Actions offered by the recipient pane's selector, in order.
pub const SELECTOR_ACTIONS: [RetractAction; 4] = [
    RetractAction::Junk,
    RetractAction::Trash,
    RetractAction::SoftDelete,
    RetractAction::HardDelete,
];

/// The panes, in tab order (number keys 1..7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Search,
    Recipients,
    Policy,
    Metrics,
    Jobs,
    Audit,
    Tenants,
}

impl Pane {
    pub const ALL: [Pane; 7] = [
        Pane::Search,
        Pane::Recipients,
        Pane::Policy,
        Pane::Metrics,
        Pane::Jobs,
        Pane::Audit,
        Pane::Tenants,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Search => "Search",
            Pane::Recipients => "Recipients",
            Pane::Policy => "Policy",
            Pane::Metrics => "Metrics",
            Pane::Jobs => "Jobs",
            Pane::Audit => "Audit",
            Pane::Tenants => "Tenants",
        }
    }

    pub fn mode(self) -> Mode {
        match self {
            Pane::Search => Mode::Search,
            Pane::Recipients => Mode::Recipients,
            Pane::Policy => Mode::Policy,
            Pane::Metrics => Mode::Metrics,
            Pane::Jobs => Mode::Jobs,
            Pane::Audit => Mode::Audit,
            Pane::Tenants => Mode::Tenants,
        }
    }

    fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// Data that arrives from the engine: every pane shows each of these states.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Loadable<T> {
    #[default]
    NotLoaded,
    Loading,
    Ready(T),
    Failed(String),
}

impl<T> Loadable<T> {
    pub fn ready(&self) -> Option<&T> {
        match self {
            Loadable::Ready(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    Command,
    Filter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub kind: PromptKind,
    pub text: TextInput,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub text: String,
    pub is_error: bool,
}

/// The context a pane's update gets: disjoint borrows of the App's status line, prompt,
/// keymap and role (a macro, so the pane's own state can be borrowed beside it).
macro_rules! pane_ctx {
    ($app:expr) => {
        PaneCtx {
            status: &mut $app.status,
            prompt: &mut $app.prompt,
            keymap: &$app.keymap,
            role: $app.role,
            then: None,
        }
    };
}

/// A pane's update with its context, then what it asked of the rest of the console.
macro_rules! route {
    ($app:expr, $pane:ident, $action:expr) => {{
        let mut ctx = pane_ctx!($app);
        let commands = $app.$pane.update($action, &mut ctx);
        let then = ctx.then;
        $app.then(commands, then)
    }};
}

/// The whole console state.
#[derive(Debug, Clone)]
pub struct App {
    pub keymap: Keymap,
    pub role: Role,
    pub focus: Pane,
    pub help: bool,
    pub prompt: Option<Prompt>,
    pub plan: Option<PlanState>,
    /// The yes/no question on screen, if any.
    pub confirm: Option<Confirm>,
    /// The terminal is smaller than the layout needs: the screen says so and only quit acts.
    pub too_small: bool,
    pub mouse: bool,
    pub should_quit: bool,
    /// Something changed since the last frame.
    pub dirty: bool,
    pub status: Option<StatusLine>,
    pub search: SearchState,
    pub recipients: RecipientsState,
    pub jobs: JobsState,
    pub policy: PolicyState,
    pub metrics: MetricsState,
    pub audit: AuditState,
    pub tenants: TenantsState,
    /// Frame of the busy indicator: advanced by the tick while work runs (see `busy`).
    pub spinner: u8,
    /// First line of the help overlay on screen.
    pub help_scroll: u16,
    /// Rows of the screen last drawn (0 until known): how far the help can scroll.
    pub screen_height: u16,
    /// Columns of the screen last drawn (0 until known): side by side from 160.
    pub screen_width: u16,
}

/// A `:` command: its name, what it takes, what it does (the list under the command line and
/// in the help overlay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    pub name: &'static str,
    pub args: &'static str,
    pub describe: &'static str,
}

/// Every `:` command, in the order they are listed.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "search",
        args: "QUERY",
        describe: "search now (also :s)",
    },
    CommandSpec {
        name: "depth",
        args: "0-5",
        describe: "conversation depth of the open message",
    },
    CommandSpec {
        name: "action",
        args: "junk|trash|soft_delete|hard_delete",
        describe: "retract action",
    },
    CommandSpec {
        name: "refresh",
        args: "",
        describe: "reload this pane",
    },
    CommandSpec {
        name: "mouse",
        args: "",
        describe: "mouse on/off",
    },
    CommandSpec {
        name: "help",
        args: "",
        describe: "the help overlay",
    },
    CommandSpec {
        name: "quit",
        args: "",
        describe: "quit (also :q)",
    },
];

/// The commands whose name starts with the first word typed (all of them for an empty line;
/// none once an argument is being typed).
pub fn matching_commands(typed: &str) -> Vec<&'static CommandSpec> {
    let typed = typed.trim_start();
    if typed.contains(' ') {
        return Vec::new();
    }
    COMMANDS
        .iter()
        .filter(|c| c.name.starts_with(typed))
        .collect()
}

/// Tab on the command line: the one matching name (with a space when it takes an argument),
/// or the longest prefix the matches share; `None` when that adds nothing.
pub fn complete_command(typed: &str) -> Option<String> {
    let matches = matching_commands(typed);
    let done = match matches.as_slice() {
        [] => return None,
        [one] if one.args.is_empty() => one.name.to_string(),
        [one] => format!("{} ", one.name),
        [first, rest @ ..] => {
            let mut prefix = first.name.to_string();
            for c in rest {
                let common = prefix
                    .chars()
                    .zip(c.name.chars())
                    .take_while(|(a, b)| a == b)
                    .count();
                prefix.truncate(common);
            }
            prefix
        }
    };
    (done != typed.trim_start()).then_some(done)
}

impl App {
    pub fn new(keymap: Keymap, role: Role) -> App {
        App {
            keymap,
            role,
            focus: Pane::Search,
            help: false,
            prompt: None,
            plan: None,
            confirm: None,
            too_small: false,
            mouse: false,
            should_quit: false,
            dirty: true,
            status: None,
            search: SearchState::default(),
            recipients: RecipientsState::default(),
            jobs: JobsState::default(),
            policy: PolicyState::default(),
            metrics: MetricsState::default(),
            audit: AuditState::default(),
            tenants: TenantsState::default(),
            spinner: 0,
            help_scroll: 0,
            screen_height: 0,
            screen_width: 0,
        }
    }

    /// Commands to send once the first frame is on screen: the newest messages, and the
    /// interrupted jobs to offer for resume.
    pub fn startup(&mut self) -> Vec<Command> {
        let mut commands = vec![self.search.send(), Command::FindInterruptedJobs];
        commands.extend(self.load_strip());
        commands
    }

    /// Search results and the checklist side by side, and the metrics strip on every screen
    /// (the screen last drawn is wide enough).
    pub fn side_by_side(&self) -> bool {
        self.screen_width >= crate::tui::ui::SIDE_BY_SIDE_WIDTH
    }

    /// Side by side, the metrics strip needs the metrics and the jobs: loaded once (the
    /// live reload keeps them fresh from then on).
    fn load_strip(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        if !self.side_by_side() {
            return commands;
        }
        if self.metrics.snapshot == Loadable::NotLoaded {
            self.metrics.snapshot = Loadable::Loading;
            commands.push(Command::LoadMetrics {
                window: self.metrics.window,
            });
        }
        if self.jobs.list == Loadable::NotLoaded {
            self.jobs.list = Loadable::Loading;
            commands.push(Command::LoadJobs);
        }
        commands
    }

    /// The keymap mode that receives keys now.
    pub fn mode(&self) -> Mode {
        if self.confirm.is_some() {
            Mode::Confirm
        } else if self.plan.is_some() {
            Mode::Plan
        } else if self.prompt.is_some() {
            Mode::Prompt
        } else if self.help {
            Mode::Global
        } else if self.focus == Pane::Search && self.search.editing {
            Mode::Query
        } else {
            self.focus.mode()
        }
    }

    /// A terminal key event: presses only (release and repeat are ignored).
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.kind != KeyEventKind::Press {
            return Vec::new();
        }
        let chord = KeyChord::from_event(&key);
        let action = if self.too_small {
            // Nothing else is on screen: the quit key answers even from a text input, and a
            // quit question takes its own keys. `update` ignores everything else.
            match self.confirm {
                Some(Confirm::Quit { .. }) => self.keymap.resolve(Mode::Confirm, chord),
                _ => self.keymap.lookup_in(Mode::Global, chord),
            }
        } else {
            self.keymap.resolve(self.mode(), chord)
        };
        match action {
            Some(action) => self.update(action),
            None if chord.modifiers.contains(KeyModifiers::ALT) && chord.code != KeyCode::Esc => {
                self.esc_then_key(key)
            }
            None => Vec::new(),
        }
    }

    /// An alt+key that nothing binds is `esc` then the key. The terminal sends alt+key as ESC
    /// followed by the key, so an `esc` typed just before a key arrives the same way (tmux
    /// joins them within its `escape-time`; over SSH they often share a packet) and crossterm
    /// reads the pair as alt+key. Bound alt keys (alt+b / alt+f in an input) keep their
    /// meaning; everything else is read as the two keys the operator typed.
    fn esc_then_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let mut commands = self.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        commands.extend(self.handle_key(KeyEvent {
            modifiers: key.modifiers - KeyModifiers::ALT,
            ..key
        }));
        commands
    }

    /// Records the size of the screen last drawn; below the layout's minimum, keys are inert.
    pub fn set_screen_size(&mut self, width: u16, height: u16) {
        self.screen_height = height;
        self.screen_width = width;
        let too_small = width < crate::tui::ui::MIN_WIDTH || height < crate::tui::ui::MIN_HEIGHT;
        if too_small != self.too_small {
            self.too_small = too_small;
            self.dirty = true;
        }
    }

    /// A mouse event (only delivered while mouse capture is on): the wheel scrolls.
    pub fn handle_mouse(&mut self, mouse: MouseEvent) -> Vec<Command> {
        if self.too_small {
            return Vec::new();
        }
        match mouse.kind {
            MouseEventKind::ScrollDown => self.update(Action::MoveDown),
            MouseEventKind::ScrollUp => self.update(Action::MoveUp),
            _ => Vec::new(),
        }
    }

    /// Shows a message in the status line (e.g. interrupted jobs found at start).
    pub fn notice(&mut self, text: impl Into<String>) {
        self.set_status(text, false);
    }

    fn set_status(&mut self, text: impl Into<String>, is_error: bool) {
        self.status = Some(StatusLine {
            text: text.into(),
            is_error,
        });
    }

    /// The single state transition for operator actions.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        if !matches!(action, Action::Tick) {
            self.dirty = true;
        }
        match action {
            Action::Tick => return self.tick(),
            Action::Resize(width, height) => {
                self.set_screen_size(width, height);
                return self.load_strip();
            }
            // A restore or resume question takes only its own answers; behind the too-small
            // screen (which hides it) quit still acts.
            Action::Quit
                if !self.too_small
                    && matches!(
                        self.confirm,
                        Some(Confirm::Restore { .. } | Confirm::Resume { .. })
                    ) =>
            {
                return Vec::new();
            }
            Action::Quit => return self.request_quit(),
            _ => {}
        }
        if self.too_small {
            // The operator cannot see what a key would do: only quit (and the answer to its
            // question) acts until the terminal is large enough again.
            let quit_question = matches!(self.confirm, Some(Confirm::Quit { .. }));
            if !(quit_question && matches!(action, Action::Confirm | Action::Cancel)) {
                return Vec::new();
            }
        }
        if self.confirm.is_some() {
            return self.update_confirm(action);
        }
        if self.plan.is_some() {
            return self.update_plan(action);
        }
        if self.prompt.is_some() {
            return self.update_prompt(action);
        }
        if self.help {
            let max = crate::tui::ui::help_max_scroll(self, self.screen_height);
            let at = self.help_scroll;
            self.help_scroll = match action {
                Action::Help | Action::Cancel => {
                    self.help = false;
                    0
                }
                Action::MoveDown => at.saturating_add(1),
                Action::MoveUp => at.saturating_sub(1),
                Action::PageDown => at.saturating_add(PAGE as u16),
                Action::PageUp => at.saturating_sub(PAGE as u16),
                Action::First => 0,
                Action::Last => max,
                _ => at,
            }
            .min(max);
            return Vec::new();
        }
        match action {
            Action::Help => {
                self.help = true;
                self.help_scroll = 0;
                Vec::new()
            }
            Action::NextPane | Action::PrevPane => {
                let n = Pane::ALL.len();
                let i = self.focus.index();
                let next = if action == Action::NextPane {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.show(Pane::ALL[next])
            }
            Action::ShowSearch => self.show(Pane::Search),
            Action::ShowRecipients => self.show(Pane::Recipients),
            Action::ShowPolicy => self.show(Pane::Policy),
            Action::ShowMetrics => self.show(Pane::Metrics),
            Action::ShowJobs => self.show(Pane::Jobs),
            Action::ShowAudit => self.show(Pane::Audit),
            Action::ShowTenants => self.show(Pane::Tenants),
            Action::CommandLine => {
                self.search.editing = false;
                self.prompt = Some(Prompt {
                    kind: PromptKind::Command,
                    text: TextInput::default(),
                });
                Vec::new()
            }
            Action::ToggleMouse => {
                self.mouse = !self.mouse;
                self.set_status(if self.mouse { "mouse on" } else { "mouse off" }, false);
                Vec::new()
            }
            Action::Refresh => self.refresh(),
            _ => match self.focus {
                Pane::Search => {
                    let before = self.search.selected;
                    let commands = route!(self, search, action);
                    // Side by side the checklist follows the selection once it rests (latest
                    // wins: a load is sent only when the debounce runs out, for the row
                    // selected then).
                    if self.search.selected != before && self.side_by_side() {
                        self.recipients.follow_debounce = Some(DEBOUNCE_TICKS);
                    }
                    commands
                }
                Pane::Recipients => route!(self, recipients, action),
                Pane::Policy => route!(self, policy, action),
                Pane::Metrics => route!(self, metrics, action),
                Pane::Jobs => route!(self, jobs, action),
                Pane::Audit => route!(self, audit, action),
                Pane::Tenants => route!(self, tenants, action),
            },
        }
    }

    fn tick(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        commands.extend(self.search.tick());
        if debounce_due(&mut self.recipients.preview_debounce) {
            commands.extend(self.recipients.send_depth_preview());
        }
        commands.extend(self.audit.tick());
        if debounce_due(&mut self.recipients.follow_debounce) {
            commands.extend(self.show_selected_message(false));
        }
        // Redrawn when the elapsed seconds shown change, not on every tick.
        if self.tenants.tick() {
            self.dirty = true;
        }
        // Two ticks a frame: the spinner turns about ten times a second while work runs.
        if self.busy() {
            self.spinner = self.spinner.wrapping_add(1);
            if self.spinner.is_multiple_of(2) {
                self.dirty = true;
            }
        }
        if !commands.is_empty() {
            self.dirty = true;
        }
        commands
    }

    /// Work the operator waits for is running: a search, a recipients load, a plan or a chain
    /// verification (the spinner turns; a running job has its own progress gauge).
    pub fn busy(&self) -> bool {
        self.search.results == Loadable::Loading
            || self.recipients.rows == Loadable::Loading
            || self
                .plan
                .as_ref()
                .is_some_and(|p| p.summary == Loadable::Loading)
            || self.audit.verification == Loadable::Loading
    }

    /// What a pane asked of the rest of the console after its update, done after its commands.
    fn then(&mut self, mut commands: Vec<Command>, then: Option<Then>) -> Vec<Command> {
        match then {
            Some(Then::Search(query)) => commands.extend(self.search_now(query)),
            Some(Then::Ask(question)) => self.confirm = Some(question),
            Some(Then::OpenMessage) => commands.extend(self.show_selected_message(true)),
            Some(Then::BuildPlan) => commands.extend(self.build_plan()),
            None => {}
        }
        commands
    }

    /// Focus a pane, loading its data the first time.
    pub fn show(&mut self, pane: Pane) -> Vec<Command> {
        self.focus = pane;
        self.search.editing = false;
        let not_loaded = match pane {
            Pane::Search | Pane::Recipients => false,
            Pane::Policy => self.policy.loaded == Loadable::NotLoaded,
            Pane::Metrics => self.metrics.snapshot == Loadable::NotLoaded,
            Pane::Jobs => self.jobs.list == Loadable::NotLoaded,
            Pane::Audit => self.audit.entries == Loadable::NotLoaded,
            Pane::Tenants => self.tenants.tenants == Loadable::NotLoaded,
        };
        if not_loaded {
            self.refresh()
        } else {
            Vec::new()
        }
    }

    fn refresh(&mut self) -> Vec<Command> {
        match self.focus {
            Pane::Search => vec![self.search.send()],
            Pane::Recipients => self.recipients.load_again(),
            Pane::Policy => self.policy.reload(),
            Pane::Metrics => self.metrics.reload(),
            Pane::Jobs => self.jobs.reload(),
            Pane::Audit => self.audit.reload(),
            Pane::Tenants => self.tenants.reload(),
        }
    }

    // ---- search ----

    /// The search row under the cursor (the first message of a campaign when grouped).
    pub fn selected_search_row(&self) -> Option<&SearchRow> {
        self.search.selected_row()
    }

    /// The Message-IDs behind the search row under the cursor: its message, or every message
    /// of its campaign when grouped.
    pub fn selected_message_ids(&self) -> Vec<String> {
        self.search.selected_message_ids()
    }

    /// Replace the query and search now (used by "view details" and `:search`).
    pub fn search_now(&mut self, query: String) -> Vec<Command> {
        self.search.query.set(query);
        self.search.error = None;
        self.focus = Pane::Search;
        self.search.editing = false;
        vec![self.search.send()]
    }

    /// The recipients of the selected message (or campaign) in the checklist; `focus` moves
    /// to it (enter), or not (side by side, following the selection).
    fn show_selected_message(&mut self, focus: bool) -> Vec<Command> {
        self.recipients.follow_debounce = None;
        let Some(row) = self.selected_search_row().cloned() else {
            return Vec::new();
        };
        let message_ids = self.selected_message_ids();
        if !focus && self.recipients.message_ids == message_ids {
            return Vec::new();
        }
        let r = &mut self.recipients;
        if r.message_ids != message_ids {
            // Other messages: nothing the operator chose for the last ones carries over.
            let had_choices =
                r.action != RetractAction::Junk || !r.excluded.is_empty() || r.depth != 0;
            if had_choices {
                let text = format!(
                    "other message: action reset to {} (was {}), {} exclusions cleared, depth 0 (was {})",
                    RetractAction::Junk.label(),
                    r.action.label(),
                    r.excluded.len(),
                    r.depth
                );
                self.set_status(text, false);
            }
            let r = &mut self.recipients;
            r.action = RetractAction::Junk;
            r.excluded.clear();
            r.depth = 0;
            r.filter.clear();
            r.selected = 0;
        }
        let r = &mut self.recipients;
        r.message = Some(row);
        r.message_ids = message_ids;
        if focus {
            self.focus = Pane::Recipients;
        }
        // A load still running for the message left behind is not waited for.
        let mut commands = Vec::new();
        if !focus && self.recipients.rows == Loadable::Loading {
            commands.push(Command::CancelRecipients {
                generation: self.recipients.generation,
            });
        }
        commands.extend(self.recipients.load_again());
        commands
    }

    // ---- recipients ----

    /// The exclusions the plan gets (see `RecipientsState::excluded`).
    pub fn excluded(&self) -> Vec<String> {
        self.recipients.excluded()
    }

    /// Ticked rows (what the plan acts on at depth 0, beside unresolved mailboxes).
    pub fn included_count(&self) -> usize {
        self.recipients.included_count()
    }

    fn build_plan(&mut self) -> Vec<Command> {
        if self.recipients.message_ids.is_empty() {
            return Vec::new();
        }
        let excluded = self.excluded();
        if self.included_count() == 0 {
            self.set_status("no recipient included: tick at least one (space)", true);
            return Vec::new();
        }
        self.plan = Some(PlanState::building());
        vec![Command::BuildPlan(RetractRequest {
            message_ids: self.recipients.message_ids.clone(),
            query: None,
            tenants: Vec::new(),
            only: Vec::new(),
            exclude: excluded,
            depth: self.recipients.depth,
            action: self.recipients.action,
            trigger: Trigger::Manual,
            reason: String::new(),
        })]
    }

    // ---- plan overlay ----

    fn update_plan(&mut self, action: Action) -> Vec<Command> {
        let Some(exit) = self.plan.as_mut().and_then(|plan| plan.update(action)) else {
            return Vec::new();
        };
        self.plan = None;
        match exit {
            PlanExit::Cancelled(discard) => discard.into_iter().collect(),
            PlanExit::Apply {
                summary,
                typed_copies,
            } => {
                self.focus = Pane::Jobs;
                self.set_status(
                    format!(
                        "applying plan {}: {} on {}",
                        short_digest(&summary.digest),
                        summary.action.label(),
                        count(summary.copies_total, "copy", "copies")
                    ),
                    false,
                );
                self.jobs.starting += 1;
                vec![Command::ApplyPlan {
                    plan_id: summary.plan_id,
                    confirmation: Confirmation { typed_copies },
                }]
            }
        }
    }

    // ---- prompt ----

    fn update_prompt(&mut self, action: Action) -> Vec<Command> {
        let Some(prompt) = self.prompt.as_mut() else {
            return Vec::new();
        };
        let kind = prompt.kind;
        match action {
            Action::Edit(edit) => {
                if !prompt.text.edit(edit) {
                    return Vec::new();
                }
            }
            // The first esc clears the line (a filter then shows everything again), the
            // second closes it.
            Action::Cancel if !prompt.text.is_empty() => prompt.text.clear(),
            Action::Cancel => {
                self.prompt = None;
                return Vec::new();
            }
            Action::Complete => {
                if kind == PromptKind::Command
                    && let Some(done) = complete_command(prompt.text.value())
                {
                    prompt.text.set(done);
                }
                return Vec::new();
            }
            Action::Submit => {
                let text = self.prompt.take().map(|p| p.text.to_string());
                return match (kind, text) {
                    (PromptKind::Command, Some(text)) => self.run_command_line(&text),
                    // A filter is applied as it is typed: enter only closes the line.
                    (PromptKind::Filter, Some(_)) | (_, None) => Vec::new(),
                };
            }
            _ => return Vec::new(),
        }
        // Filters apply as they are typed, in every pane.
        match (kind, &self.prompt) {
            (PromptKind::Filter, Some(prompt)) => {
                let text = prompt.text.to_string();
                self.apply_filter(text)
            }
            _ => Vec::new(),
        }
    }

    fn apply_filter(&mut self, text: String) -> Vec<Command> {
        match self.focus {
            Pane::Jobs => {
                self.jobs.set_filter(text);
                Vec::new()
            }
            Pane::Recipients => {
                self.recipients.filter = text;
                self.recipients.refilter();
                Vec::new()
            }
            Pane::Audit => {
                self.audit.set_filter(text);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn run_command_line(&mut self, text: &str) -> Vec<Command> {
        let text = text.trim();
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        // A new command replaces what the last one said (an old error must not linger).
        self.status = None;
        match word {
            "" => Vec::new(),
            "q" | "quit" => self.update(Action::Quit),
            "help" => {
                self.help = true;
                self.help_scroll = 0;
                Vec::new()
            }
            "mouse" => self.update(Action::ToggleMouse),
            "refresh" => {
                self.set_status(format!("refreshing {}", self.focus.title()), false);
                self.refresh()
            }
            "search" | "s" => self.search_now(rest.to_string()),
            "depth" => match rest.parse::<u8>() {
                _ if self.recipients.rows.ready().is_none() => {
                    self.set_status(
                        "depth: no message open; pick one on Search (1) and press enter",
                        true,
                    );
                    Vec::new()
                }
                Ok(d) if d <= MAX_DEPTH => {
                    self.focus = Pane::Recipients;
                    self.recipients.depth = d;
                    self.set_status(format!("depth {d}"), false);
                    self.recipients.send_depth_preview()
                }
                Ok(d) => {
                    self.set_status(
                        format!("depth {d} is too deep: the maximum is {MAX_DEPTH}"),
                        true,
                    );
                    Vec::new()
                }
                Err(_) => {
                    self.set_status(
                        format!("depth: give a number from 0 to {MAX_DEPTH}, e.g. :depth 1"),
                        true,
                    );
                    Vec::new()
                }
            },
            "action" => match rest.parse::<RetractAction>() {
                Ok(a) if SELECTOR_ACTIONS.contains(&a) => {
                    self.recipients.action = a;
                    self.set_status(format!("action {}", a.label()), false);
                    Vec::new()
                }
                _ => {
                    self.set_status("action: one of junk, trash, soft_delete, hard_delete", true);
                    Vec::new()
                }
            },
            other => {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                self.set_status(
                    format!(
                        "unknown command {other:?}; commands: {} (tab completes)",
                        names.join(", ")
                    ),
                    true,
                );
                Vec::new()
            }
        }
    }

    // ---- jobs ----

    /// The job under the cursor.
    pub fn selected_job(&self) -> Option<&JobView> {
        self.jobs.selected_job()
    }

    /// Live progress of a job, if any arrived.
    pub fn progress_of(&self, job: &JobId) -> Option<&JobProgress> {
        self.jobs.progress_of(job)
    }

    /// Whether `u` may restore `job`: the number of copies it would put back, or why not.
    pub fn can_restore(&self, job: &JobView) -> Result<u64, String> {
        self.jobs.can_restore(job)
    }

    // ---- questions ----

    /// `q`: quits at once, unless a job this console runs would be interrupted or policy
    /// changes would be lost; then it asks.
    fn request_quit(&mut self) -> Vec<Command> {
        if matches!(self.confirm, Some(Confirm::Quit { .. })) {
            return Vec::new();
        }
        let running = self.jobs.running.clone();
        let unsaved_policy = self.policy_modified();
        if running.is_empty() && self.jobs.starting == 0 && !unsaved_policy {
            return self.quit_now();
        }
        self.search.editing = false;
        self.prompt = None;
        self.confirm = Some(Confirm::Quit {
            running,
            unsaved_policy,
        });
        Vec::new()
    }

    fn quit_now(&mut self) -> Vec<Command> {
        self.should_quit = true;
        if !self.jobs.running.is_empty() {
            let ids: Vec<String> = self.jobs.running.iter().map(|j| j.to_string()).collect();
            self.set_status(
                format!(
                    "quitting: job {} stops after the copies in flight",
                    ids.join(", ")
                ),
                false,
            );
        }
        vec![Command::Shutdown]
    }

    fn update_confirm(&mut self, action: Action) -> Vec<Command> {
        let Some(confirm) = self.confirm.clone() else {
            return Vec::new();
        };
        match action {
            Action::Confirm => {
                self.confirm = None;
                match confirm {
                    Confirm::Quit { .. } => self.quit_now(),
                    Confirm::Restore { job, copies, .. } => {
                        self.jobs.restore_requested = Some(job.clone());
                        self.set_status(
                            format!(
                                "restoring job {job}: {} back to where they were",
                                count(copies, "copy", "copies")
                            ),
                            false,
                        );
                        self.jobs.starting += 1;
                        vec![Command::Restore {
                            job,
                            only: Vec::new(),
                        }]
                    }
                    Confirm::Resume { jobs } => {
                        self.focus = Pane::Jobs;
                        self.search.editing = false;
                        let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
                        self.set_status(format!("resuming job {}", ids.join(", ")), false);
                        let mut commands: Vec<Command> = jobs
                            .into_iter()
                            .map(|j| Command::ResumeJob { job: j.id })
                            .collect();
                        self.jobs.starting += commands.len() as u32;
                        if self.jobs.list == Loadable::NotLoaded {
                            self.jobs.list = Loadable::Loading;
                            commands.push(Command::LoadJobs);
                        }
                        commands
                    }
                }
            }
            Action::Cancel => {
                self.confirm = None;
                match confirm {
                    Confirm::Quit { .. } => self.set_status("not quitting", false),
                    Confirm::Restore { job, .. } => {
                        self.set_status(format!("job {job} not restored"), false)
                    }
                    Confirm::Resume { jobs } => {
                        let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
                        self.set_status(
                            format!(
                                "job {} left interrupted: Jobs (5), select it, R resumes",
                                ids.join(", ")
                            ),
                            false,
                        );
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// True when the draft differs from the stored policy.
    pub fn policy_modified(&self) -> bool {
        self.policy.modified()
    }

    // ---- metrics, audit, tenants ----

    // ---- engine events ----

    /// Folds one engine event into the state. Stale answers (older generation) are dropped.
    pub fn on_engine(&mut self, event: EngineEvent) -> Vec<Command> {
        self.dirty = true;
        match event {
            EngineEvent::SearchCompleted {
                generation,
                rows,
                total,
            } => self.search.completed(generation, rows, total),
            EngineEvent::SearchFailed { generation, error } => {
                self.search.failed(generation, error)
            }
            EngineEvent::RecipientsLoaded {
                generation, rows, ..
            } => return self.recipients.loaded(generation, rows),
            EngineEvent::RecipientsProgressed {
                generation,
                done,
                total,
                elapsed_secs,
            } => {
                if generation == self.recipients.generation
                    && matches!(self.recipients.rows, Loadable::Loading)
                {
                    self.recipients.progress = Some((done, total, elapsed_secs));
                }
            }
            EngineEvent::RecipientsCancelled { generation } => {
                if generation == self.recipients.generation
                    && matches!(self.recipients.rows, Loadable::Loading)
                {
                    self.recipients.rows = Loadable::NotLoaded;
                    self.recipients.progress = None;
                    self.recipients.cancelled = true;
                    self.set_status("loading recipients cancelled; ctrl+r loads again", false);
                }
            }
            EngineEvent::RecipientsFailed {
                generation,
                message,
            } => {
                if generation == self.recipients.generation {
                    self.recipients.rows = Loadable::Failed(message);
                    self.recipients.progress = None;
                }
            }
            EngineEvent::DepthPreviewed {
                generation,
                per_depth,
            } => {
                if generation != self.recipients.depth_generation {
                    return Vec::new();
                }
                self.recipients.depth_preview = Loadable::Ready(per_depth);
            }
            EngineEvent::PlanBuilt(summary) => {
                if let Some(plan) = self.plan.as_mut() {
                    plan.summary = Loadable::Ready(summary);
                    plan.typed.clear();
                    plan.refusal = None;
                } else {
                    // The operator cancelled while it was being built.
                    return vec![Command::DiscardPlan {
                        plan_id: summary.plan_id,
                    }];
                }
            }
            EngineEvent::PlanFailed { message } => {
                if let Some(plan) = self.plan.as_mut() {
                    plan.summary = Loadable::Failed(message.clone());
                }
                self.set_status(format!("plan failed: {message}"), true);
            }
            EngineEvent::JobStarted { job, total, .. } => {
                self.jobs.starting = self.jobs.starting.saturating_sub(1);
                // Commands are answered in order: a restore asked for is this job.
                let restore_of = self.jobs.restore_requested.take();
                if let Some(of) = &restore_of {
                    self.jobs.restores_started.push((of.clone(), job.clone()));
                }
                // The list selects this job when it arrives (whatever was selected before).
                self.jobs.follow = Some(job.clone());
                if !self.jobs.running.contains(&job) {
                    self.jobs.running.push(job.clone());
                }
                self.jobs.progress.retain(|p| p.job != job);
                self.jobs.progress.push(JobProgress {
                    job: job.clone(),
                    done: 0,
                    failed: 0,
                    remaining: total,
                    rate_per_sec: 0.0,
                    eta_secs: None,
                    throttled_waits: 0,
                });
                self.set_status(
                    match restore_of {
                        Some(of) => {
                            format!(
                                "restore job {job} (undo of job {of}) started: {}",
                                count(total, "copy", "copies")
                            )
                        }
                        None => format!("job {job} started: {}", count(total, "item", "items")),
                    },
                    false,
                );
                if self.jobs.list.ready().is_none() {
                    self.jobs.list = Loadable::Loading;
                }
                return vec![Command::LoadJobs];
            }
            EngineEvent::JobProgressed(progress) => self.jobs.progressed(progress),
            EngineEvent::ItemFailed {
                job,
                address,
                reason,
                ..
            } => self.jobs.failures.push((job, address, reason)),
            EngineEvent::JobFinished { job, outcomes } => {
                let what = match job.kind {
                    JobKind::Retract => format!("job {}", job.id),
                    JobKind::Restore => format!("restore job {}", job.id),
                };
                let done = match job.kind {
                    JobKind::Retract => "succeeded",
                    JobKind::Restore => "restored",
                };
                let tail = if job.state == JobPhase::Interrupted {
                    ": R resumes it (Jobs, 5)"
                } else {
                    ""
                };
                self.set_status(
                    format!(
                        "{what} {}: {} {done}, {} failed{tail}",
                        job.state.label(),
                        job.succeeded,
                        job.failed()
                    ),
                    job.failed() > 0 || job.state == JobPhase::Interrupted,
                );
                self.jobs.running.retain(|r| *r != job.id);
                let id = job.id.clone();
                let restore = job.kind == JobKind::Restore;
                self.jobs.upsert_job(job);
                self.jobs.set_outcomes(id, outcomes);
                // A restore changes its retract job (restorable, restored by): list again.
                if restore {
                    return vec![Command::LoadJobs];
                }
            }
            EngineEvent::JobOutcomesLoaded { job, outcomes } => {
                self.jobs.set_outcomes(job, outcomes);
            }
            EngineEvent::JobLeased { job, holder } => {
                self.jobs.starting = self.jobs.starting.saturating_sub(1);
                // Not a failure: the job goes on in the process that holds it.
                self.jobs.running.retain(|r| *r != job);
                self.jobs.progress.retain(|p| p.job != job);
                if self.jobs.follow.as_ref() == Some(&job) {
                    self.jobs.follow = None;
                }
                self.set_status(
                    format!("job {job} is being run by {holder}: it goes on there"),
                    false,
                );
            }
            EngineEvent::InterruptedJobsFound(jobs) => {
                if jobs.is_empty() {
                    return Vec::new();
                }
                if self.confirm.is_none() && self.plan.is_none() {
                    self.prompt = None;
                    self.search.editing = false;
                    self.confirm = Some(Confirm::Resume { jobs });
                } else {
                    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
                    self.set_status(
                        format!(
                            "interrupted job {}: Jobs (5), select it, R resumes",
                            ids.join(", ")
                        ),
                        false,
                    );
                }
            }
            EngineEvent::MetricsLoaded(snapshot) => self.metrics.loaded(snapshot),
            EngineEvent::MetricsDetailsLoaded { window, messages } => {
                self.metrics.details_loaded(window, messages)
            }
            EngineEvent::StoreChanged(changes) => return self.reload_changed(changes),
            EngineEvent::JobsLoaded(jobs) => self.jobs.set_jobs(jobs),
            EngineEvent::AuditLoaded(entries) => self.audit.loaded(entries),
            EngineEvent::AuditVerified(result) => {
                self.audit.verification = Loadable::Ready(result);
            }
            EngineEvent::TenantsLoaded(tenants) => self.tenants.loaded(tenants),
            EngineEvent::TenantsProgress(progress) => self.tenants.progressed(progress),
            // The pane said so when Esc was pressed.
            EngineEvent::TenantsCancelled => self.tenants.loading = None,
            EngineEvent::PolicyLoaded(policy) => self.policy.loaded(policy),
            EngineEvent::HoldsLoaded(held) => {
                self.policy.held = held;
            }
            EngineEvent::PolicySaved(policy) => {
                self.policy.saving = false;
                self.set_status(format!("policy saved (version {})", policy.version), false);
                self.policy.loaded(policy);
            }
            EngineEvent::Denied {
                action,
                role,
                required,
            } => {
                if self
                    .plan
                    .as_ref()
                    .is_some_and(|p| p.summary == Loadable::Loading)
                {
                    self.plan = None;
                }
                self.policy.saving = false;
                self.jobs.restore_requested = None;
                self.jobs.starting = self.jobs.starting.saturating_sub(1);
                self.set_status(
                    format!("denied: {action} needs role {required} (you are {role})"),
                    true,
                );
            }
            EngineEvent::EngineFailed { message } => {
                // Every command that starts a job is answered once: started, leased, denied
                // or failed.
                self.jobs.restore_requested = None;
                self.jobs.starting = self.jobs.starting.saturating_sub(1);
                self.fail_pending(&message);
                self.set_status(format!("engine: {message}"), true);
            }
        }
        Vec::new()
    }
}

/// Marks every request still waiting as failed: after `EngineFailed` no answer may come. An
/// answer that does arrive later still replaces the error.
fn fail<T>(slot: &mut Loadable<T>, message: &str) {
    if matches!(slot, Loadable::Loading) {
        *slot = Loadable::Failed(message.to_string());
    }
}

impl App {
    fn fail_pending(&mut self, message: &str) {
        fail(&mut self.search.results, message);
        fail(&mut self.recipients.rows, message);
        fail(&mut self.recipients.depth_preview, message);
        if let Some(plan) = self.plan.as_mut() {
            fail(&mut plan.summary, message);
        }
        fail(&mut self.jobs.list, message);
        fail(&mut self.policy.loaded, message);
        fail(&mut self.metrics.snapshot, message);
        if let Some(details) = self.metrics.details.as_mut() {
            fail(details, message);
        }
        fail(&mut self.audit.entries, message);
        fail(&mut self.audit.verification, message);
        fail(&mut self.tenants.tenants, message);
        self.policy.saving = false;
    }
}

/// The first 12 hex digits of a digest, for screens.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

//! The console (issue 6): a thin ratatui front end over the engine. All I/O happens in the
//! engine task; this module turns keys into `Action`s, `Action`s into engine `Command`s, and
//! `EngineEvent`s into state that `ui::render` draws.
//!
//! Modules: `terminal` (lifecycle), `event` (the select loop), `action` (operator vocabulary),
//! `keymap` (per-mode bindings), `input` (line editing), `app` (state machine), `ui` (layout), `theme`, `panes/*`.

pub mod action;
pub mod app;
pub mod event;
pub mod input;
pub mod keymap;
pub mod panes;
pub mod terminal;
pub mod theme;
pub mod ui;
pub mod widgets;

use crate::config::Config;
use crate::engine::EngineHandle;
use std::path::PathBuf;

/// Front-end options beyond the config file (CLI flags win over config).
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// `--theme NAME|PATH`; overrides `config.ui.theme`.
    pub theme: Option<String>,
    /// Start with mouse capture on; overrides `config.ui.mouse`.
    pub mouse: Option<bool>,
    /// Where `themes/<name>.toml` overrides are looked up (default: the config file's directory,
    /// else the platform config dir).
    pub config_dir: Option<PathBuf>,
    /// Force colours off (as `NO_COLOR` does); `None`: follow `NO_COLOR`.
    pub no_color: Option<bool>,
    /// A message for the status line at start (e.g. interrupted jobs to resume).
    pub notice: Option<String>,
    /// Colours the terminal shows; `None`: as `COLORTERM` / `TERM` advertise. A theme that
    /// needs more is approximated and the status line says so.
    pub colour_depth: Option<theme::ColourDepth>,
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("keymap: {0}")]
    Keymap(#[from] keymap::KeymapError),
    #[error("theme: {0}")]
    Theme(#[from] theme::ThemeError),
    #[error("terminal: {0}")]
    Terminal(std::io::Error),
}

fn config_dir(config: &Config, options: &TuiOptions) -> Option<PathBuf> {
    options
        .config_dir
        .clone()
        .or_else(|| {
            config
                .source
                .as_ref()
                .and_then(|p| p.parent().map(PathBuf::from))
        })
        .or_else(|| {
            directories::ProjectDirs::from("", "", "clawback").map(|d| d.config_dir().to_path_buf())
        })
}

/// Builds the app state and theme exactly as `run` does, without touching the terminal.
pub fn prepare(
    config: &Config,
    options: &TuiOptions,
) -> Result<(app::App, theme::Theme), TuiError> {
    let keymap = keymap::Keymap::with_overrides(&config.ui.keys)?;
    let theme_name = options
        .theme
        .clone()
        .or_else(|| config.ui.theme.clone())
        .unwrap_or_else(|| "default".to_string());
    let mut theme = theme::Theme::load(&theme_name, config_dir(config, options).as_deref())?;
    let mut warning = None;
    if options.no_color.unwrap_or_else(theme::no_color_requested) {
        theme = theme.without_colours();
    } else {
        let depth = options
            .colour_depth
            .unwrap_or_else(theme::ColourDepth::from_env);
        (theme, warning) = theme.for_terminal(depth);
    }
    let mut app = app::App::new(keymap, config.operator.role);
    app.mouse = options.mouse.unwrap_or(config.ui.mouse);
    if let Some(text) = &warning {
        tracing::warn!("{text}");
    }
    let notices: Vec<&String> = options.notice.iter().chain(warning.iter()).collect();
    if !notices.is_empty() {
        app.notice(
            notices
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    Ok((app, theme))
}

/// Runs the console on the current terminal against an engine until the operator quits.
pub async fn run(
    config: &Config,
    engine: EngineHandle,
    options: TuiOptions,
) -> Result<(), TuiError> {
    let (mut app, theme) = prepare(config, &options)?;
    terminal::install_panic_hook();
    let mut guard = terminal::TerminalGuard::enter().map_err(TuiError::Terminal)?;
    let result = event::run_loop(&mut guard, &mut app, &theme, engine).await;
    drop(guard);
    result
}

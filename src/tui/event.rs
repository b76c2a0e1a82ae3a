//! The event loop: one `tokio::select!` over terminal events, engine events and a tick.
//! State changes go through `App`; commands go to the engine; a frame is drawn only when
//! something changed, at most ~30 per second.

use super::TuiError;
use super::action::Action;
use super::app::App;
use super::terminal::TerminalGuard;
use super::theme::Theme;
use crate::engine::{Command, EngineEvent, EngineHandle};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// Tick period: debounce counts these (3 ticks = 150 ms).
pub const TICK: Duration = Duration::from_millis(50);
/// Minimum time between frames (~30 fps).
pub const FRAME: Duration = Duration::from_millis(33);
/// How long quitting waits for the jobs this console runs to stop after their copies in
/// flight (the engine gives them a little less).
pub const QUIT_WAIT: Duration = Duration::from_secs(12);

/// Sends commands; a closed channel means the engine is gone, which the app is told about.
fn send(app: &mut App, engine: &EngineHandle, commands: Vec<Command>) {
    for command in commands {
        let name = command.name();
        if engine.commands.send(command).is_err() {
            app.on_engine(EngineEvent::EngineFailed {
                message: format!("the engine is not running ({name} not sent)"),
            });
            return;
        }
    }
}

/// Runs until the operator quits or the terminal event stream ends.
pub async fn run_loop(
    terminal: &mut TerminalGuard,
    app: &mut App,
    theme: &Theme,
    mut engine: EngineHandle,
) -> Result<(), TuiError> {
    // First frame before any I/O reaches the engine. Keys act only on a screen large enough
    // to show what they do: the app learns the size of every frame drawn.
    let (width, height) = terminal.draw(app, theme).map_err(TuiError::Terminal)?;
    app.set_screen_size(width, height);
    if app.dirty {
        terminal.draw(app, theme).map_err(TuiError::Terminal)?;
    }
    app.dirty = false;
    let mut last_draw = Instant::now();
    let startup = app.startup();
    send(app, &engine, startup);

    let mut terminal_events = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut engine_open = true;

    loop {
        let commands = tokio::select! {
            event = terminal_events.next() => match event {
                Some(Ok(Event::Key(key))) => app.handle_key(key),
                Some(Ok(Event::Mouse(mouse))) if app.mouse => app.handle_mouse(mouse),
                Some(Ok(Event::Resize(w, h))) => app.update(Action::Resize(w, h)),
                Some(Ok(_)) => Vec::new(),
                Some(Err(e)) => return Err(TuiError::Terminal(e)),
                None => break,
            },
            event = engine.events.recv(), if engine_open => match event {
                Some(event) => app.on_engine(event),
                None => {
                    engine_open = false;
                    app.on_engine(EngineEvent::EngineFailed {
                        message: "the engine stopped; restart clawback".into(),
                    })
                }
            },
            _ = tick.tick() => app.update(Action::Tick),
        };
        send(app, &engine, commands);
        if app.should_quit {
            break;
        }
        terminal.set_mouse(app.mouse).map_err(TuiError::Terminal)?;
        if app.dirty && last_draw.elapsed() >= FRAME {
            let (width, height) = terminal.draw(app, theme).map_err(TuiError::Terminal)?;
            app.set_screen_size(width, height);
            app.dirty = false;
            last_draw = Instant::now();
        }
    }
    if engine_open && (!app.jobs.running.is_empty() || app.jobs.starting > 0) {
        wait_for_jobs_to_stop(terminal, app, theme, &mut engine).await?;
    }
    Ok(())
}

/// After `Shutdown`: the jobs this console runs stop after their copies in flight and report
/// it (interrupted, resumable); the screen shows it meanwhile. Keys are no longer read.
async fn wait_for_jobs_to_stop(
    terminal: &mut TerminalGuard,
    app: &mut App,
    theme: &Theme,
    engine: &mut EngineHandle,
) -> Result<(), TuiError> {
    terminal.draw(app, theme).map_err(TuiError::Terminal)?;
    let deadline = tokio::time::Instant::now() + QUIT_WAIT;
    while !app.jobs.running.is_empty() || app.jobs.starting > 0 {
        match tokio::time::timeout_at(deadline, engine.events.recv()).await {
            Ok(Some(event)) => {
                // Answers are not acted on any more: the engine is stopping.
                let _ = app.on_engine(event);
                terminal.draw(app, theme).map_err(TuiError::Terminal)?;
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(())
}

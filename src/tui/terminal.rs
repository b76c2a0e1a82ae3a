//! Terminal lifecycle in one place: enter (raw mode, alternate screen), draw inside a
//! synchronized update, mouse capture on request, restore — also from a panic hook, which
//! restores the terminal before the panic message is printed.

use super::app::App;
use super::theme::Theme;
use super::ui;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{
    BeginSynchronizedUpdate, EndSynchronizedUpdate, EnterAlternateScreen, LeaveAlternateScreen,
    disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute, queue};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::{self, Stdout, Write};

/// Restores the terminal to the state the shell expects. Safe to call more than once.
pub fn restore() -> io::Result<()> {
    let mut out = io::stdout();
    // Each step is attempted even if an earlier one failed.
    let a = execute!(out, DisableMouseCapture, LeaveAlternateScreen, cursor::Show);
    let b = disable_raw_mode();
    a.and(b)
}

/// Chains a panic hook that restores the terminal first, so the message lands on a sane screen.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = restore();
        previous(info);
    }));
}

/// The terminal while the console owns it; restores on drop.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    mouse: bool,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen.
    pub fn enter() -> io::Result<TerminalGuard> {
        enable_raw_mode()?;
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
            let _ = restore();
            return Err(e);
        }
        let terminal = match Terminal::new(CrosstermBackend::new(out)) {
            Ok(t) => t,
            Err(e) => {
                let _ = restore();
                return Err(e);
            }
        };
        Ok(TerminalGuard {
            terminal,
            mouse: false,
        })
    }

    /// Turns mouse capture on or off (off by default: terminal selection keeps working).
    pub fn set_mouse(&mut self, on: bool) -> io::Result<()> {
        if on != self.mouse {
            if on {
                execute!(self.terminal.backend_mut(), EnableMouseCapture)?;
            } else {
                execute!(self.terminal.backend_mut(), DisableMouseCapture)?;
            }
            self.mouse = on;
        }
        Ok(())
    }

    /// Draws one frame wrapped in a synchronized update (no tearing over SSH / tmux); returns
    /// the size it was drawn at.
    pub fn draw(&mut self, app: &App, theme: &Theme) -> io::Result<(u16, u16)> {
        queue!(self.terminal.backend_mut(), BeginSynchronizedUpdate)?;
        let drawn = self
            .terminal
            .draw(|frame| ui::render(frame, app, theme))
            .map(|frame| (frame.area.width, frame.area.height));
        queue!(self.terminal.backend_mut(), EndSynchronizedUpdate)?;
        self.terminal.backend_mut().flush()?;
        drawn
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = restore();
    }
}

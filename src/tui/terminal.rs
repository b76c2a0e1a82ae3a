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

/// crossterm writes every colour as `38;5;N` (256-colour form), even the 16 ANSI ones, which a
/// 16-colour terminal (`TERM=xterm`, the Linux console, some SSH clients) draws wrongly or not
/// at all. This writer holds a frame until it is flushed and rewrites `38;5;N` / `48;5;N` for
/// N < 16 into the 16-colour codes (30–37, 90–97, 40–47, 100–107); other colours pass as they
/// are. ratatui flushes once per frame, so a frame goes out in one write.
pub struct Ansi16Writer<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> Ansi16Writer<W> {
    pub fn new(inner: W) -> Ansi16Writer<W> {
        Ansi16Writer {
            inner,
            pending: Vec::new(),
        }
    }

    /// The writer underneath (what has been flushed so far).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for Ansi16Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let out = ansi16_sgr(&self.pending);
            self.pending.clear();
            self.inner.write_all(&out)?;
        }
        self.inner.flush()
    }
}

/// Rewrites the SGR sequences (`ESC [ … m`) in `bytes`: a 256-colour index below 16 becomes
/// its 16-colour code. Everything else is copied unchanged.
pub fn ansi16_sgr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            let start = i + 2;
            let params_end = bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b';'))
                .map(|n| start + n);
            if let Some(end) = params_end
                && bytes[end] == b'm'
                && let Ok(params) = std::str::from_utf8(&bytes[start..end])
            {
                out.extend_from_slice(b"\x1b[");
                out.extend_from_slice(rewrite_sgr_params(params).as_bytes());
                out.push(b'm');
                i = end + 1;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn rewrite_sgr_params(params: &str) -> String {
    let parts: Vec<&str> = params.split(';').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let index = parts.get(i + 2).and_then(|n| n.parse::<u8>().ok());
        match (parts[i], parts.get(i + 1), index) {
            (base @ ("38" | "48"), Some(&"5"), Some(n)) if n < 16 => {
                let (normal, bright) = if base == "38" { (30, 90) } else { (40, 100) };
                let code = if n < 8 { normal + n } else { bright + n - 8 };
                out.push(code.to_string());
                i += 3;
            }
            // Other extended colours keep all their parameters (index, or r;g;b).
            ("38" | "48" | "58", Some(&kind @ ("5" | "2")), _) => {
                let len = if kind == "5" { 3 } else { 5 };
                let end = (i + len).min(parts.len());
                out.extend(parts[i..end].iter().map(|p| p.to_string()));
                i = end;
            }
            (other, _, _) => {
                out.push(other.to_string());
                i += 1;
            }
        }
    }
    out.join(";")
}

/// The terminal while the console owns it; restores on drop.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Ansi16Writer<Stdout>>>,
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
        let terminal = match Terminal::new(CrosstermBackend::new(Ansi16Writer::new(out))) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgr_colours_below_16_become_16_colour_codes() {
        let cases = [
            ("\x1b[38;5;1m", "\x1b[31m"),
            ("\x1b[38;5;8m", "\x1b[90m"),
            ("\x1b[48;5;15m", "\x1b[107m"),
            ("\x1b[38;5;9;48;5;0m", "\x1b[91;40m"),
            ("\x1b[1;38;5;6;4m", "\x1b[1;36;4m"),
            // 256-colour and truecolour pass unchanged; so do other sequences and text.
            ("\x1b[38;5;208m", "\x1b[38;5;208m"),
            ("\x1b[38;2;1;2;3;48;5;3m", "\x1b[38;2;1;2;3;43m"),
            ("\x1b[39;49;59m", "\x1b[39;49;59m"),
            ("\x1b[12;40Hx;5;1m", "\x1b[12;40Hx;5;1m"),
            ("\x1b[?25h", "\x1b[?25h"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                String::from_utf8(ansi16_sgr(input.as_bytes())).unwrap(),
                expected,
                "{input:?}"
            );
        }
    }
}

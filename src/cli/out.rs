//! Standard output for the CLI.
//!
//! `println!` panics when the reader has gone away (`clawback audit export | head`: EPIPE), so
//! every command prints through [`outln!`] and [`out!`] instead:
//!
//! - a closed pipe ends the output quietly: nothing on stderr, the command's own exit code;
//! - any other write error (a full disk under `> file`) is said once on stderr and turns an exit
//!   code of 0 into 1, so a truncated export is never mistaken for a complete one.
//!
//! After the first failed write every later one is skipped. Listings stop when the macros return
//! `false`; commands that act (retract, restore, resume) keep going: losing the reader must not
//! interrupt work in progress.
//!
//! Messages go through [`errln!`] and [`err!`] instead of `eprintln!`, which panics just the same
//! when stderr is the closed pipe (`clawback trace ingest DIR 2>&1 | head`). A message that
//! cannot be written is dropped: there is nowhere else to say it.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
/// The reader closed the pipe: quiet.
const CLOSED: u8 = 1;
/// Another write error, already reported on stderr.
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Writes to stdout (through the lock, so lines of concurrent writers do not interleave).
/// Returns `false` when stdout is gone; the caller should stop printing.
pub(crate) fn write(args: std::fmt::Arguments<'_>) -> bool {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return false;
    }
    match io::stdout().lock().write_fmt(args) {
        Ok(()) => true,
        Err(e) => {
            lost(&e);
            false
        }
    }
}

/// Records a failed write: quiet for a closed pipe, one line on stderr otherwise.
fn lost(e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        STATE.store(CLOSED, Ordering::Relaxed);
    } else if STATE.swap(FAILED, Ordering::Relaxed) != FAILED {
        // Not `eprintln!`: it would panic in turn if stderr is gone too.
        let _ = writeln!(
            io::stderr(),
            "clawback: cannot write to standard output: {e}"
        );
    }
}

/// Writes to stderr; a failure is ignored (see the module doc).
pub(crate) fn write_err(args: std::fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Flushes stdout at exit and returns the exit code: `code`, or 1 if it was 0 and output was
/// lost to an error other than a closed pipe.
pub(crate) fn finish(code: u8) -> u8 {
    if STATE.load(Ordering::Relaxed) == OPEN
        && let Err(e) = io::stdout().lock().flush()
    {
        lost(&e);
    }
    if STATE.load(Ordering::Relaxed) == FAILED && code == crate::cli::exit::OK {
        crate::cli::exit::FAILURE
    } else {
        code
    }
}

/// `println!` that survives a closed stdout; evaluates to `false` once stdout is gone.
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed stdout; evaluates to `false` once stdout is gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `eprintln!` that survives a closed stderr.
macro_rules! errln {
    () => {
        $crate::cli::out::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that survives a closed stderr.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::cli::out::write_err(format_args!($($arg)*))
    };
}

pub(crate) use {err, errln, out, outln};

//! The `clawback` binary: parses arguments and dispatches. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    clawback::cli::main()
}

//! The `clawback` binary: parses arguments and dispatches. Everything else lives in the library.

/// mimalloc instead of glibc malloc: profiling `retract_e2e` put a third of both clawback's and
/// the lab's CPU samples in glibc's `_int_malloc`/`malloc_consolidate`/`free` (small JSON and
/// HTTP buffers from many threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clawback::cli::main()
}

//! The README is the new user's way in: it must show the two commands, CI must run exactly its
//! test command, and every section a user follows must be there (an editing slip once wrote it
//! empty without any test noticing).

#![allow(clippy::unwrap_used)]

#[test]
fn readme_shows_the_two_commands_ci_runs_and_its_sections() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        readme.contains("cargo run --release -- demo"),
        "the demo command"
    );
    let test_command = "cargo test --locked";
    assert!(readme.contains(test_command), "the test command");
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run runs the README's test command"
    );
    for section in [
        "## The two commands",
        "## A first retraction (in the demo)",
        "## The console",
        "## Connecting real tenants",
        "### `clawback doctor`",
        "## Retracting from the command line",
        "## Automation: policy, `clawback watch`, intel",
        "## The lab",
    ] {
        assert!(readme.contains(section), "README lacks {section:?}");
    }
}

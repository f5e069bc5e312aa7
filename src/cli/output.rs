//! Lines on standard output and standard error that never panic. `println!` panics when the
//! reader has gone (`payhub iso8583 decode … | head -c 0`), and operations.md allows a failed
//! command one line on standard error, never a panic.

use anyhow::Context;
use std::fmt::Display;
use std::io::Write;

/// One line of a command's result, written at once. A reader that has gone fails the command.
pub fn result(line: impl Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

/// One line of a running service's report on standard output. A reader that has gone must not
/// stop the service, so the line is then dropped.
pub fn note(line: impl Display) {
    let _ = result(line);
}

/// One line on standard error; dropped when standard error is closed.
pub fn warn(line: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

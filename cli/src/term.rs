//! What only a person at a terminal sees: a progress bar on standard error while a big
//! input (over [`PROGRESS_MIN`]) is signed, encrypted, decrypted or verified, and colour
//! on result words (doctor's ok/warn/fail, verify's Good/BAD). Neither ever reaches a pipe
//! or a file, and colour is off with `NO_COLOR` set (https://no-color.org) or `TERM=dumb`.

use std::io::{IsTerminal, Read, Seek, SeekFrom};

/// Inputs larger than this get a progress bar (at a terminal).
pub const PROGRESS_MIN: u64 = 8 << 20;

/// Whether colour may be written to a stream that `is_terminal` says is (or is not) a
/// terminal: a terminal, `NO_COLOR` unset or empty, `TERM` not `dumb`.
pub fn colour(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Colour for standard output.
pub fn colour_stdout() -> bool {
    colour(std::io::stdout().is_terminal())
}

/// Colour for standard error.
pub fn colour_stderr() -> bool {
    colour(std::io::stderr().is_terminal())
}

/// What a word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// ok, Good: green.
    Good,
    /// warn: yellow.
    Warn,
    /// fail, BAD: red.
    Bad,
    /// info: the terminal's own colour, dimmed.
    Quiet,
}

/// `text` in the tone's colour when `on`; else `text` unchanged.
pub fn paint(text: &str, tone: Tone, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "1;31",
        Tone::Quiet => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A reader that shows its progress on standard error: a bar when standard error is a
/// terminal and `len` is over [`PROGRESS_MIN`]; otherwise it only passes the bytes on.
#[derive(Debug)]
pub struct Progress<R> {
    inner: R,
    bar: Option<indicatif::ProgressBar>,
}

impl<R> Progress<R> {
    /// Wraps `inner`, `len` bytes long (`None`: unknown, no bar), for `what` ("signing").
    pub fn new(inner: R, len: Option<u64>, what: &str) -> Self {
        let bar = len
            .filter(|n| *n > PROGRESS_MIN && std::io::stderr().is_terminal())
            .map(|n| {
                let bar = indicatif::ProgressBar::with_draw_target(
                    Some(n),
                    indicatif::ProgressDrawTarget::stderr(),
                );
                let style = indicatif::ProgressStyle::with_template(
                    "{msg} {wide_bar} {bytes}/{total_bytes} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                bar.set_style(style.progress_chars("=> "));
                bar.set_message(what.to_string());
                bar
            });
        Progress { inner, bar }
    }

    /// Whether a bar is shown.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }
}

impl Progress<std::fs::File> {
    /// A file, with its length for the bar.
    pub fn file(f: std::fs::File, what: &str) -> Self {
        let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        Self::new(f, len, what)
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Progress<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        if let Some(b) = &self.bar {
            b.set_position(at);
        }
        Ok(at)
    }
}

impl<R> Drop for Progress<R> {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_colour_off_a_terminal_and_paint_is_plain_then() {
        assert!(!colour(false));
        assert_eq!(paint("ok", Tone::Good, false), "ok");
        assert_eq!(paint("fail", Tone::Bad, true), "\x1b[1;31mfail\x1b[0m");
    }

    #[test]
    fn off_a_terminal_there_is_no_bar_and_the_bytes_pass() {
        // test output is captured: standard error is no terminal here
        let data = vec![7u8; 100];
        let mut p = Progress::new(std::io::Cursor::new(data.clone()), Some(1 << 40), "x");
        assert_eq!(p.shown(), std::io::stderr().is_terminal());
        let small = Progress::new(std::io::empty(), Some(PROGRESS_MIN), "x");
        assert!(!small.shown());
        let mut out = Vec::new();
        p.read_to_end(&mut out).expect("read");
        assert_eq!(out, data);
    }
}

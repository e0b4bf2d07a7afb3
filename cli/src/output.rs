//! What the CLI prints: results on stdout (text, or JSON with `--json`), notes and errors on
//! stderr (an error is one line), progress bars on stderr only when both stdout and stderr
//! are terminals and `--json` is not given.

use crate::failure::Failure;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;

pub struct Out {
    pub json: bool,
    pub interactive: bool,
    color: bool,
}

impl Out {
    pub fn new(json: bool) -> Out {
        let interactive =
            !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        Out {
            json,
            interactive,
            color: interactive && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    pub fn result(&self, text: &str, json: &impl Serialize) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(json).expect("serialisable as JSON")
            );
        } else if self.color {
            println!("\x1b[1m{text}\x1b[0m");
        } else {
            println!("{text}");
        }
    }

    /// A remark for people (stderr; not with `--json`).
    pub fn note(&self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    /// A failure: one line on stderr, or with `--json` one JSON object (`Failure::to_json`).
    pub fn failure(&self, failure: &Failure) {
        if self.json {
            eprintln!("{}", failure.to_json());
        } else {
            self.error(&failure.message);
        }
    }

    pub fn error(&self, message: &str) {
        let line = message.replace(['\n', '\r'], " ");
        if self.color {
            eprintln!("\x1b[31merror:\x1b[0m {line}");
        } else {
            eprintln!("error: {line}");
        }
    }

    fn bar(&self, len: u64, template: &str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    }

    /// Upload progress in bytes.
    pub fn upload_bar(&self, len: u64) -> ProgressBar {
        self.bar(
            len,
            "uploading [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
    }

    /// Import progress: the position is the share of the file read, in tenths of a percent;
    /// the message carries the rows, the rate and the time left (measured by `api::show`:
    /// the position moves in jumps, which indicatif's own estimate reads badly).
    pub fn import_bar(&self) -> ProgressBar {
        self.bar(1000, "importing [{bar:30}] {percent:>3}% {wide_msg}")
    }
}

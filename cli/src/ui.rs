//! How commands speak to a person: tables, check lines, a spinner while
//! waiting, confirmations; or, with `--json`, one JSON document for scripts.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;

/// Whether output is for a person or for a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Laid out for reading.
    Human,
    /// One JSON document on stdout.
    Json,
}

/// Prints a JSON value, pretty.
pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A spinner on stderr while `what` happens (nothing when stderr is not a terminal).
pub fn spinner(what: &str) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
pub fn bytes_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Asks "`question` [y/N]" on the terminal; `yes` answers for the person.
///
/// # Errors
/// [`CliError::Stopped`] when the answer is no, or [`CliError::Usage`] when
/// there is no terminal to ask on and `--yes` was not given.
pub fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "{question}: no terminal to confirm on; add --yes to go ahead"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(CliError::Stopped("nothing changed".into()))
    }
}

/// `✔ text` or `✘ text`, then `  → fix` on the next line when there is one.
pub fn check_line(ok: bool, text: &str, fix: Option<&str>) -> String {
    let mut out = format!("{} {text}", if ok { "✔" } else { "✘" });
    if let Some(f) = fix {
        out.push_str("\n    → ");
        out.push_str(f);
    }
    out
}

/// A string field of a JSON object, or `""`.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let t = table(
            &["ID", "STATUS"],
            &[
                vec!["support".into(), "active".into()],
                vec!["a".into(), "pending_consent".into()],
            ],
        );
        assert_eq!(t, "ID       STATUS\nsupport  active\na        pending_consent\n");
    }

    #[test]
    fn check_lines_name_the_fix_under_a_failure() {
        assert_eq!(check_line(true, "stack relay365", None), "✔ stack relay365");
        assert_eq!(
            check_line(false, "app secret", Some("run infra/set-app-secret.sh")),
            "✘ app secret\n    → run infra/set-app-secret.sh"
        );
    }
}

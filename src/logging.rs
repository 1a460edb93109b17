//! Logs on standard error: which lines is the `INKAN_LOG` filter's (`warn`
//! unless set), their form is `[log] format`'s: text for people (coloured on
//! a terminal only, never in files and journals) or one JSON object a line
//! for collectors (time, level, target, the message and its fields flattened,
//! and the span they were written in: a request's id).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Starts logging in `format`. A second call changes nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("INKAN_LOG").unwrap_or_else(|_| "warn".into());
    let lines = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => lines.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => lines.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
}

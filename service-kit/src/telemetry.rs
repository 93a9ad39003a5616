//! Log output: `RUST_LOG` filters (default `info`), text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

const DEFAULT_FILTER: &str = "info,h2=warn,tower=warn,hyper=warn,sqlx=warn";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only for a person at a terminal, not for log files and collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// For tests: silent unless `TEST_LOG` is set; safe to call from every test.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

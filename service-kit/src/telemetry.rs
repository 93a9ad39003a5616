//! Log output: `RUST_LOG` filters (default `info`), text or JSON lines, each
//! saying which binary wrote it.
//!
//! At the default level a log says what a person running Agora needs: one line
//! per call at the edge (the gateway, or a service called directly), state
//! changes (a dependency down, and up again), start-up facts (listening, the
//! migrations applied) and failures. Health checks, reflection, the calls a
//! service serves behind the gateway, and probes are at debug.

use std::{fmt, io::IsTerminal};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{self, JsonFields, Writer},
    },
    registry::LookupSpan,
};

use crate::LogFormat;

const DEFAULT_FILTER: &str = "info,h2=warn,tower=warn,hyper=warn,sqlx=warn";

/// Installs the global subscriber for binary `service`. Call once, first thing in
/// `main`. Every line names the binary: a `service` field in JSON, the first word
/// of a text line (as `docker compose logs` and journald show a process), so that
/// the gateway's and a service's lines read apart when they share a terminal or
/// a collector.
pub fn init(service: &'static str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only for a person at a terminal, not for log files and collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder
            .event_format(Named {
                service,
                inner: format::format(),
            })
            .init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(Named {
                service,
                inner: format::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            })
            .init(),
    }
}

/// An event format that names the binary.
struct Named<F> {
    service: &'static str,
    inner: F,
}

impl<S, N> FormatEvent<S, N> for Named<format::Format<format::Full>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{} ", self.service)?;
        self.inner.format_event(ctx, writer, event)
    }
}

impl<S, N> FormatEvent<S, N> for Named<format::Format<format::Json>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let service = serde_json::Value::from(self.service);
                write!(writer, "{{\"service\":{service},{rest}")
            }
            None => writer.write_str(&line),
        }
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

//! Log output: `RUST_LOG` filters (default `info`), text or JSON lines, each
//! saying which binary wrote it.
//!
//! At the default level a log says what a person running Agora needs: one line
//! per call at the edge (the gateway, or a service called directly), state
//! changes (a dependency down, and up again), start-up facts (listening, the
//! migrations applied) and failures. Health checks, reflection, the calls a
//! service serves behind the gateway, and probes are at debug.

use std::{fmt, io::IsTerminal, time::Duration};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{self, JsonFields, Writer},
    },
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::{LogFormat, traces::TracesError};

const DEFAULT_FILTER: &str = "info,h2=warn,tower=warn,hyper=warn,sqlx=warn";

/// Installs the global subscriber for binary `service`, and its tracer (see
/// [`crate::traces`]). Call once, first thing in `main`, inside the Tokio
/// runtime. Every line names the binary: a `service` field in JSON, the first
/// word of a text line (as `docker compose logs` and journald show a process),
/// so that the gateway's and a service's lines read apart when they share a
/// terminal or a collector. A JSON line written during a traced call also
/// carries its `trace_id` and `span_id`.
pub fn init(service: &'static str, format: LogFormat) -> Result<(), TracesError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only for a person at a terminal, not for log files and collectors.
    let ansi = std::io::stdout().is_terminal();
    let log = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .event_format(Named {
                service,
                inner: format::format(),
            })
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .fmt_fields(JsonFields::new())
            .event_format(Named {
                service,
                inner: format::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            })
            .with_filter(filter)
            .boxed(),
    };
    // sqlx reports each statement as a debug event; those become spans when
    // spans leave the process, whatever the log's level.
    // A bad setting is reported through the log, which is installed regardless.
    let traces = crate::traces::install(service);
    let statements = matches!(traces, Ok(true))
        .then(|| StatementSpans.with_filter(filter_fn(|metadata| metadata.target() == SQLX_QUERY)));
    let acquires =
        PoolAcquires.with_filter(filter_fn(|metadata| metadata.target() == SQLX_ACQUIRE));
    tracing_subscriber::registry()
        .with(log)
        .with(statements)
        .with(acquires)
        .init();
    traces.map(|_| ())
}

/// The target of sqlx's event for each statement it ran.
const SQLX_QUERY: &str = "sqlx::query";
/// The target of sqlx's event for each connection taken from a pool.
const SQLX_ACQUIRE: &str = "sqlx::pool::acquire";

/// Turns sqlx's pool events into the metric of how long calls wait for a
/// connection.
struct PoolAcquires;

impl<S: Subscriber> Layer<S> for PoolAcquires {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut waited = Waited(None);
        event.record(&mut waited);
        if let Some(seconds) = waited.0 {
            crate::metrics::record_pool_acquire(Duration::from_secs_f64(seconds.max(0.0)));
        }
    }
}

/// The `acquired_after_secs` of a pool event.
struct Waited(Option<f64>);

impl Visit for Waited {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "acquired_after_secs" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// Turns sqlx's statement events into spans of the call that ran them.
struct StatementSpans;

impl<S: Subscriber> Layer<S> for StatementSpans {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut statement = Statement::default();
        event.record(&mut statement);
        crate::traces::record_statement(
            &statement.summary,
            &statement.text,
            statement.rows,
            Duration::from_secs_f64(statement.elapsed_secs.max(0.0)),
        );
    }
}

/// The fields of sqlx's statement event.
#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    rows: u64,
    elapsed_secs: f64,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.text = value.to_owned(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows = value;
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
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
                write!(writer, "{{\"service\":{service},")?;
                if let Some((trace_id, span_id)) = crate::traces::current_ids() {
                    write!(
                        writer,
                        "\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\","
                    )?;
                }
                writer.write_str(rest)
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

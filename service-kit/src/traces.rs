//! Traces across services: W3C trace context on every hop, a span per call and
//! per SQL statement, and OTLP export when the standard `OTEL_*` variables ask.
//!
//! Propagation is always on. Each call's server span takes its parent from the
//! caller's `traceparent` header, and every call to another service carries its
//! own, so one trace id follows a request through every process and appears in
//! their JSON log lines, even when nothing is exported.
//!
//! Export is off until `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) says where, or `OTEL_TRACES_EXPORTER`
//! is `otlp`. The SDK reads the rest of the standard variables: the sampler
//! (`OTEL_TRACES_SAMPLER`, parent-based always-on by default), batching
//! (`OTEL_BSP_*`), headers, timeout, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`. While export is off, spans are not recorded
//! unless a caller's `traceparent` says its trace is sampled, so that the
//! sampled flag passes on to services that do export. `OTEL_SDK_DISABLED=true`
//! turns traces off altogether, propagation included.
//!
//! Spans are made with the OpenTelemetry API directly and carried in its
//! [`Context`], attached to each call's future; the `tracing` spans stay what
//! they were, the log's.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    runtime,
    trace::{Sampler, SdkTracer, SdkTracerProvider, span_processor_with_async_runtime},
};

/// The tracer of this process, once [`install`] has run. Without it (tests that
/// build servers without a binary's start-up), every function here is a no-op.
static TRACING: OnceLock<Tracing> = OnceLock::new();

struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    exporting: bool,
}

/// Why the `OTEL_*` settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("OTEL_TRACES_EXPORTER={0:?} is not supported: set it to otlp (OTLP over gRPC) or none")]
    Exporter(String),
    #[error(
        "{variable}={value:?} is not supported: traces are exported with OTLP over gRPC; set it \
         to grpc and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port (4317)"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("cannot export traces: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What the standard variables ask of this process's traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traces {
    /// `OTEL_SDK_DISABLED=true`: no spans, no trace context passed on.
    Disabled,
    /// Trace context passed on, spans recorded only for sampled callers and
    /// exported nowhere (the default).
    Propagated,
    /// Spans exported over OTLP.
    Exported,
}

fn wanted() -> Result<Traces, TracesError> {
    let set = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(Traces::Disabled);
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = set(variable)
            && value != "grpc"
        {
            return Err(TracesError::Protocol { variable, value });
        }
    }
    let exported = match set("OTEL_TRACES_EXPORTER").as_deref() {
        Some("otlp") => true,
        Some("none") => false,
        Some(other) => return Err(TracesError::Exporter(other.to_owned())),
        // The specification's default is otlp; here export waits to be told where.
        None => {
            set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    };
    Ok(if exported {
        Traces::Exported
    } else {
        Traces::Propagated
    })
}

/// Sets up this process's tracer for binary `service`, from the `OTEL_*`
/// variables; returns whether spans are exported. Call once, inside the Tokio
/// runtime (the exporter's batches are sent from a task of it).
pub(crate) fn install(service: &'static str) -> Result<bool, TracesError> {
    let traces = wanted()?;
    if traces == Traces::Disabled {
        return Ok(false);
    }
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let exporting = traces == Traces::Exported;
    let provider = if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let batches = span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            runtime::Tokio,
        )
        .build();
        builder.with_span_processor(batches).build()
    } else {
        builder
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build()
    };
    let tracer = provider.tracer("agora");
    let _ = TRACING.set(Tracing {
        tracer,
        provider,
        exporting,
    });
    Ok(exporting)
}

/// Sends the spans still batched, at shutdown; gives up after a few seconds
/// rather than hold the exit for an unreachable collector.
pub async fn flush() {
    let Some(installed) = TRACING.get() else {
        return;
    };
    if !installed.exporting {
        return;
    }
    let provider = installed.provider.clone();
    // Shutting down blocks until the batch task has exported: off the runtime's
    // workers, which that task needs.
    let shutdown = tokio::task::spawn_blocking(move || provider.shutdown());
    match tokio::time::timeout(Duration::from_secs(5), shutdown).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "traces not all exported at shutdown"),
        Ok(Err(_)) | Err(_) => tracing::warn!("traces not all exported at shutdown"),
    }
}

/// Starts the span of a call this process serves (gRPC or HTTP), a child of the
/// caller's span when its `traceparent` names one, else the root of a new trace.
pub fn start_server_span(name: String, headers: &HeaderMap) -> Context {
    let Some(installed) = TRACING.get() else {
        return Context::new();
    };
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let span = installed
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .start_with_context(&installed.tracer, &parent);
    parent.with_span(span)
}

/// Starts the span of a call to another service, a child of the current one,
/// and names it in the call's `traceparent`.
pub fn start_client_span(name: String, headers: &mut HeaderMap) -> Context {
    let Some(installed) = TRACING.get() else {
        // No span to start, nor one to end later: not the caller's.
        return Context::new();
    };
    let parent = Context::current();
    let span = installed
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .start_with_context(&installed.tracer, &parent);
    let cx = parent.with_span(span);
    TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
    cx
}

/// Ends the span of a gRPC call with its status code (as `grpc-status` carries
/// it); `fault` marks the span an error (the server's own failures, for a
/// server span; any failure, for a client's).
pub fn end_rpc_span(cx: &Context, code: &str, fault: bool) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("rpc.system", "grpc"));
        span.set_attribute(KeyValue::new(
            "rpc.grpc.status_code",
            code.parse::<i64>().unwrap_or(2),
        ));
        if fault {
            span.set_status(Status::error(format!("gRPC status {code}")));
        }
    }
    span.end();
}

/// Ends the span of an HTTP request with its status; a server error marks it
/// an error.
pub fn end_http_span(cx: &Context, status: u16) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP status {status}")));
        }
    }
    span.end();
}

/// The current trace and span ids, as W3C trace context writes them, when a
/// traced call is under way.
pub fn current_ids() -> Option<(String, String)> {
    Context::map_current(|cx| {
        let span = cx.span();
        let ids = span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    })
}

/// Records a finished SQL statement as a span of the current call, when that
/// call's trace is sampled: `elapsed` before now, with sqlx's summary as its
/// name.
pub(crate) fn record_statement(summary: &str, statement: &str, rows: u64, elapsed: Duration) {
    let Some(installed) = TRACING.get() else {
        return;
    };
    Context::map_current(|parent| {
        if !parent.span().span_context().is_sampled() {
            return;
        }
        let now = SystemTime::now();
        let text = if statement.is_empty() {
            summary
        } else {
            statement.trim()
        };
        let mut span = installed
            .tracer
            .span_builder(summary.to_owned())
            .with_kind(SpanKind::Client)
            .with_start_time(now.checked_sub(elapsed).unwrap_or(now))
            .with_attributes([
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.query.text", text.to_owned()),
                KeyValue::new("db.response.returned_rows", rows as i64),
            ])
            .start_with_context(&installed.tracer, parent);
        span.end_with_timestamp(now);
    });
}

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into request headers.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

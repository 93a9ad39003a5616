//! Prometheus metrics, served by every binary at `METRICS_ADDR` (off unless
//! set), apart from its API's port: calls by method and status, with their
//! latency; the database pool; upstream health. Recorded through the `metrics`
//! facade, which costs next to nothing while no exporter is installed, and
//! exposed by `metrics-exporter-prometheus`.

use std::{net::SocketAddr, time::Duration};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use sqlx::PgPool;

/// Where the metrics are served.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://<this address>/metrics (off unless
    /// set); keep it off the public network.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Latency buckets, in seconds: from a cached read to a slow hash.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the pool's figures are read.
const POOL_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Serves the metrics of this process, labelled with `binary`, when `args`
/// names an address. Call once, inside the runtime.
pub fn install(binary: &'static str, args: &MetricsArgs) -> Result<(), BuildError> {
    let Some(address) = args.metrics_addr else {
        return Ok(());
    };
    PrometheusBuilder::new()
        .with_http_listener(address)
        .add_global_label("binary", binary)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .install()?;
    tracing::info!(address = %address, "metrics served at http://{address}/metrics");
    Ok(())
}

/// Services whose calls are counted by name besides Agora's own.
const HOUSEKEEPING_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The service and method a path names, as metric labels: Agora's methods and
/// the housekeeping services by name, anything else as `unknown`, so that a
/// caller inventing paths cannot grow the metrics without bound.
pub(crate) fn labels(path: &str) -> (&'static str, &'static str) {
    if let Some(rpc) = agora_proto::Rpc::at(path) {
        return (rpc.service, rpc.method);
    }
    let service = path
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .map(|(service, _)| service);
    match HOUSEKEEPING_SERVICES
        .iter()
        .find(|known| Some(**known) == service)
    {
        Some(known) => (known, "*"),
        None => ("unknown", "unknown"),
    }
}

/// Counts a call to `(service, method)` (from [`labels`]) that ended with gRPC
/// status `code` after `elapsed`; `role` is `edge` for the gateway's public
/// port, `service` behind it.
pub(crate) fn record_call(
    (service, method): (&'static str, &'static str),
    code: &str,
    role: &'static str,
    elapsed: Duration,
) {
    let code = code_name(code);
    metrics::counter!("rpc_calls_total", "role" => role, "service" => service,
        "method" => method, "code" => code)
    .increment(1);
    metrics::histogram!("rpc_duration_seconds", "role" => role, "service" => service,
        "method" => method)
    .record(elapsed.as_secs_f64());
}

/// A gRPC status code's name, from its number as `grpc-status` carries it.
/// Counts one request to an HTTP port (the gateway's facade) by method, route
/// template and status, and records its latency. `route` is a template of the
/// router's (`/posts/{id}`) or `unmatched`, so the labels stay few.
pub fn record_http(method: &http::Method, route: &str, status: u16, elapsed: Duration) {
    let method = match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    metrics::counter!("http_requests_total", "method" => method, "route" => route.to_owned(),
        "status" => status.to_string())
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method,
        "route" => route.to_owned())
    .record(elapsed.as_secs_f64());
}

fn code_name(code: &str) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    code.parse::<usize>()
        .ok()
        .and_then(|number| NAMES.get(number).copied())
        .unwrap_or("UNKNOWN")
}

/// Whether a dependency answers, as the binary's health follows it.
/// Counts a statement the database could not answer, by why: no connection
/// free in the pool in time, the server unreachable, or a statement or lock
/// wait that ran out of time.
pub(crate) fn record_database_outage(error: &sqlx::Error) {
    let kind = match error {
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::Database(error)
            if error
                .code()
                .is_some_and(|code| matches!(&*code, "57014" | "55P03")) =>
        {
            "statement_timeout"
        }
        _ => "unreachable",
    };
    metrics::counter!("db_unavailable_total", "kind" => kind).increment(1);
}

/// Records how long a call waited for a pool connection.
pub(crate) fn record_pool_acquire(waited: Duration) {
    metrics::histogram!("db_pool_acquire_seconds").record(waited.as_secs_f64());
}

pub(crate) fn record_upstream(dependency: &'static str, serving: bool) {
    metrics::gauge!("upstream_serving", "upstream" => dependency).set(if serving {
        1.0
    } else {
        0.0
    });
}

/// Reads the pool's size and idle connections every few seconds, for as long
/// as the pool is open.
pub(crate) fn watch_pool(pool: PgPool) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(POOL_SAMPLE_EVERY);
        while !pool.is_closed() {
            every.tick().await;
            let (size, idle) = (pool.size(), pool.num_idle());
            metrics::gauge!("db_pool_connections", "state" => "open").set(f64::from(size));
            metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
            metrics::gauge!("db_pool_max_connections")
                .set(f64::from(pool.options().get_max_connections()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_to_known_methods() {
        assert_eq!(
            labels("/agora.posts.v1.PostService/GetPost"),
            ("agora.posts.v1.PostService", "GetPost")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "*")
        );
        for invented in ["/x.Y/Z", "/agora.posts.v1.PostService/Nope", "/", ""] {
            assert_eq!(labels(invented), ("unknown", "unknown"), "{invented}");
        }
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("16"), "UNAUTHENTICATED");
        assert_eq!(code_name("99"), "UNKNOWN");
    }

    #[test]
    fn database_outages_are_counted_by_why() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let page = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            record_database_outage(&sqlx::Error::PoolTimedOut);
            record_database_outage(&sqlx::Error::PoolTimedOut);
            record_database_outage(&sqlx::Error::PoolClosed);
            record_pool_acquire(Duration::from_millis(3));
        });
        let page = page.render();
        for line in [
            r#"db_unavailable_total{kind="pool_timeout"} 2"#,
            r#"db_unavailable_total{kind="unreachable"} 1"#,
            "db_pool_acquire_seconds_count 1",
        ] {
            assert!(page.contains(line), "{line} missing from:\n{page}");
        }
    }
}

//! Counts what a piece of work costs, from the services' own telemetry: the RPCs
//! they serve (their `rpc` spans), how those ended (the `code` of their `rpc
//! finished` lines) and the SQL statements they run (sqlx's `sqlx::query` events).
//!
//! The counting layer is part of the global subscriber (installed once per test
//! binary), and counts into the scope of the current thread. `#[sqlx::test]` runs
//! each test on its own current-thread runtime, so every in-process service's work
//! is seen, and no other test's.

use std::{cell::RefCell, collections::BTreeMap, sync::Once};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::Attributes,
};
use tracing_subscriber::{EnvFilter, Layer, layer::Context, prelude::*, registry::LookupSpan};

/// RPCs served, by method path; how many ended with each gRPC status code, as
/// the services log it; and SQL statements run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cost {
    pub rpcs: BTreeMap<String, usize>,
    pub endings: BTreeMap<String, usize>,
    pub statements: usize,
}

thread_local! {
    /// What the current thread's work has cost since [`cost_of`] began counting.
    static SCOPE: RefCell<Option<Cost>> = const { RefCell::new(None) };
}

fn count(add: impl FnOnce(&mut Cost)) {
    SCOPE.with_borrow_mut(|scope| {
        if let Some(cost) = scope {
            add(cost);
        }
    });
}

struct Counter;

/// The value of one field of a span or event.
struct FieldValue(&'static str, Option<String>);

impl Visit for FieldValue {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.0 {
            self.1 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.0 {
            self.1 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Counter {
    fn on_new_span(&self, attributes: &Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        if attributes.metadata().name() == "rpc" {
            let mut method = FieldValue("method", None);
            attributes.record(&mut method);
            if let Some(method) = method.1 {
                count(|cost| *cost.rpcs.entry(method).or_default() += 1);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            count(|cost| cost.statements += 1);
        }
        let mut code = FieldValue("code", None);
        event.record(&mut code);
        if let Some(code) = code.1 {
            count(|cost| *cost.endings.entry(code).or_default() += 1);
        }
    }
}

/// Installs the global subscriber: the counter, plus log output when `TEST_LOG`
/// is set. Idempotent.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let log = std::env::var_os("TEST_LOG").map(|_| {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(filter)
        });
        // Another subscriber may have won the race; counting then reads zero and
        // the tests that count say so.
        let _ = tracing_subscriber::registry()
            .with(Counter)
            .with(log)
            .try_init();
    });
}

/// What `work` cost, as counted on this thread while it ran.
pub async fn cost_of<T>(work: impl Future<Output = T>) -> (T, Cost) {
    install();
    SCOPE.set(Some(Cost::default()));
    let output = work.await;
    let cost = SCOPE.take().expect("the scope set above");
    (output, cost)
}

/// What has been counted so far inside [`cost_of`] on this thread.
pub fn cost_so_far() -> Cost {
    SCOPE.with_borrow(|scope| scope.clone().unwrap_or_default())
}

//! The quickstart's demo: its `invoices` and `payments` (seeded by `kalla_core::demo`, as
//! `kalla demo` seeds them) in a database of the test's own, and its recipe.

use serde_json::Value;

use crate::postgres::{self, TestDatabase};
use crate::runner::Runner;

/// A fresh database holding the demo's tables.
pub async fn database() -> TestDatabase {
    let db = TestDatabase::create().await;
    kalla_core::demo::seed(&postgres::server_url().await, &db.name)
        .await
        .expect("seed the demo tables");
    db
}

/// The demo's tables registered with `runner` as the sources the demo's recipe reads.
pub async fn register_sources(runner: &Runner, db: &TestDatabase) {
    runner
        .register_source("invoices_pg", &db.source_uri("public.invoices"))
        .await;
    runner
        .register_source("payments_pg", &db.source_uri("public.payments"))
        .await;
}

/// `examples/recipes/invoices-vs-payments.json`.
pub fn recipe() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/recipes/invoices-vs-payments.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the demo recipe")).expect("JSON")
}

//! `sqlx::migrate!` embeds the metadata DB's migrations at compile time: a migration added or
//! edited must rebuild the runner.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

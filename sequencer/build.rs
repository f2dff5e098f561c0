//! `sqlx::migrate!` embeds `../migrations` at compile time, but on a stable compiler nothing tells
//! cargo that the crate depends on that directory: without this, a new migration file did not rebuild
//! the crate, and an incremental build ran without it (sqlx documents this build script for that).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

// `sqlx::migrate!` embeds migrations/ at compile time, but on stable Rust it cannot tell
// Cargo to watch that folder: without this, an incremental build keeps the migrations it
// embedded last and a new one never runs (the release api of ops/bench/search did, once).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

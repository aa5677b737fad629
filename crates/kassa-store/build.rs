// `sqlx::migrate!` embeds /migrations at compile time but cannot ask the compiler to watch the
// folder on stable Rust, so a migration added by someone else would otherwise go unnoticed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}

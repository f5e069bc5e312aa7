//! Migrations are embedded at compile time (`refinery::embed_migrations!`): rebuild when they change.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

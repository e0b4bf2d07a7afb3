// Rebuild when a migration is added: `sqlx::migrate!` embeds the directory's files, and a
// stable compiler does not track the directory by itself.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

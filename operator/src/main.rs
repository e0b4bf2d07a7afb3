//! bulk-import-operator: a placeholder until the operator issue lands.

fn main() {
    eprintln!("bulk-import-operator is not implemented yet (see the operator issue)");
    std::process::exit(2);
}

//! berthctl: being written (issue 5).

mod commands;

fn main() {
    eprintln!("berthctl: being written");
    std::process::exit(1);
}

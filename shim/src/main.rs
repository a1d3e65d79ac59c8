//! `berth-shim`: one per container; see `berth_shim::monitor`.

fn main() {
    let args = match berth_shim::monitor::args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("berth-shim: {message}");
            std::process::exit(2);
        }
    };
    std::process::exit(berth_shim::monitor::run_create(args));
}

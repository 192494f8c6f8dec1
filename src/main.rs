//! The `blindspot` command: parses arguments and dispatches to the library (see `cli`).

mod cli;

fn main() {
    std::process::exit(cli::main());
}

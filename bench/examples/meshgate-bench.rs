//! `meshgate bench` as a stand-alone program (for the shell and the Ctrl-C test), until the
//! `meshgate` binary carries the subcommand: `cargo run --release -p meshgate-bench --example
//! meshgate-bench -- --help`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "meshgate-bench")]
struct Cli {
    #[command(flatten)]
    bench: meshgate_bench::BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = meshgate_bench::run(&cli.bench) {
        eprintln!("meshgate bench: {e}");
        std::process::exit(e.exit_code());
    }
}

//! `relay365`: parses the command line and runs it (see the library for the commands).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    relay365_cli::run(relay365_cli::Cli::parse()).await
}

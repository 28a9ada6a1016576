//! `simplekv`: the server, the interactive client and the cluster admin verbs.
#![warn(clippy::unwrap_used)]

mod client;
mod cluster_cmd;
mod local;
mod logger;
mod server_cmd;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "simplekv",
    version,
    about = "A replicated key-value server that speaks RESP2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a standalone server in the foreground.
    Server(server_cmd::ServerArgs),
    /// Interactive client, or run one command and exit
    Cli(client::ClientArgs),
    /// Cluster admin (create, status, rebalance) and a local cluster for trying things out.
    Cluster(cluster_cmd::ClusterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Cli(args) => client::run(args),
        Command::Cluster(args) => cluster_cmd::run(args),
    }
}

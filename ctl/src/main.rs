//! berthctl: berth's client. crictl's everyday commands over CRI, docker-like `run`,
//! tables or JSON/YAML, errors that say what to do next, exit codes scripts can rely on
//! (see `berthctl --help`).

mod cli;
mod client;
mod commands;
mod config_file;
mod output;
#[allow(dead_code)]
mod progress;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::client::{exit_code, Connection, CtlError};

fn main() {
    // clap exits with 2 on a usage error and 0 for --help/--version.
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => report(&error),
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Completion(args) = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(args.shell, &mut command, "berthctl", &mut std::io::stdout());
        return Ok(exit_code::OK);
    }
    let conn = Connection::new(&cli.endpoint(), cli.timeout)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(dispatch(&conn, &cli.command))
}

async fn dispatch(conn: &Connection, command: &Command) -> anyhow::Result<i32> {
    use commands::*;
    let done = match command {
        Command::Version => info::version(conn).await,
        Command::Info(args) => info::info(conn, args).await,
        Command::Imagefsinfo(args) => info::imagefsinfo(conn, args).await,
        Command::Pull(args) => pull::run(conn, args).await,
        Command::Images(args) => images::list(conn, args).await,
        Command::Inspecti(args) => images::inspect(conn, args).await,
        Command::Rmi(args) => rmi::run(conn, args).await,
        Command::Runp(args) => runp::run(conn, args).await,
        Command::Pods(args) => pods::list(conn, args).await,
        Command::Inspectp(args) => pods::inspect(conn, args).await,
        Command::Stopp(args) => pods::stop(conn, args).await,
        Command::Rmp(args) => pods::remove(conn, args).await,
        Command::Create(args) => create::run(conn, args).await,
        Command::Start(args) => containers::start(conn, args).await,
        Command::Ps(args) => containers::list(conn, args).await,
        Command::Inspect(args) => containers::inspect(conn, args).await,
        Command::Stop(args) => containers::stop(conn, args).await,
        Command::Rm(args) => containers::remove(conn, args).await,
        Command::Exec(args) => return exec::run(conn, args).await,
        Command::Logs(args) => return logs::run(conn, args).await,
        Command::Run(args) => return run::run(conn, args).await,
        Command::Completion(_) => unreachable!("handled before connecting"),
    };
    done.map(|()| exit_code::OK)
}

/// Prints `error` for a person and returns its exit code.
fn report(error: &anyhow::Error) -> i32 {
    match error.downcast_ref::<CtlError>() {
        // Already printed one per failed id.
        Some(CtlError::Reported { code, .. }) => *code,
        Some(known) => {
            eprintln!("berthctl: {known}");
            known.exit_code()
        }
        None => {
            eprintln!("berthctl: {error:#}");
            exit_code::RUNTIME_ERROR
        }
    }
}

//! `observer`: see every LLM API call on this host, with no code change.
mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // The exec gate is this executable re-run by the observer: nothing else may start in it.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == observer::capture::EXEC_GATE_ARG)
    {
        return observer::capture::run_exec_gate();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("observer=info"))
        .format_timestamp(
            std::env::var_os("OBSERVER_LOG_TIMES").map(|_| env_logger::TimestampPrecision::Micros),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Capture(args) => commands::capture(args),
        Command::Replay(args) => commands::replay(args),
        Command::Run(args) => commands::run(args),
        Command::Traces(args) => commands::traces(args),
        Command::Show(args) => commands::show(args),
        Command::Serve(args) => commands::serve(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("observer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

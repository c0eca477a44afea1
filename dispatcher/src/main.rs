//! `concurrent`: the cluster agent (`concurrent agent`) and the step runner (`concurrent step`).

mod agent;
mod cli;
mod config;
mod edge;
mod executor;
mod inspect;
mod metrics;
mod mlflow;
mod pace;
mod report;
mod retry;
mod roots;
mod step;
mod timeline;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "concurrent",
    version,
    about = "Concurrent: the cluster agent that pulls work from the edge API, the step runner it launches, and the templates and runs commands for terminal users."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull work for one cluster from the edge API and run it until stopped (SIGINT/SIGTERM).
    Agent(config::AgentConfig),
    /// Run one leased step: download inputs, run the MLflow Project, upload outputs.
    Step(step::StepArgs),
    /// Print the shell command an entry point of a local MLflow Project runs with these
    /// parameters (what the fast launcher starts), or why only `mlflow run` can start it.
    EntryCommand(EntryCommandArgs),
    /// Push, validate, list and get DAG templates.
    Templates {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::Templates,
    },
    /// Start, follow, list, read, cancel and repair runs.
    Runs {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::Runs,
    },
    /// Create, list, pause, resume and delete triggers (a template started by a model-registry
    /// event or another template's success).
    Triggers {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::Triggers,
    },
}

#[derive(clap::Args)]
struct EntryCommandArgs {
    /// The project directory.
    project: std::path::PathBuf,
    /// The entry point.
    #[arg(short, long, default_value = "main")]
    entry_point: String,
    /// A parameter, `key=value` (repeatable), as `mlflow run -P`.
    #[arg(short = 'P', value_parser = parse_key_value)]
    param: Vec<(String, String)>,
}

/// `key=value`, for repeatable flags (`-P`, `--node-selector`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn entry_command(args: EntryCommandArgs) -> anyhow::Result<()> {
    let params = args.param.into_iter().collect();
    let cwd = std::env::current_dir()?;
    match step::mlproject::plan(&args.project, &args.entry_point, &params, &cwd)
        .map_err(anyhow::Error::msg)?
    {
        step::mlproject::Plan::Direct { command, .. } => println!("{command}"),
        step::mlproject::Plan::Mlflow(why) => println!("(mlflow run: {why})"),
    }
    Ok(())
}

/// Log to stderr; `CONCURRENT_LOG_FORMAT=json` for structured logs.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCURRENT_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CONCURRENT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_tracing();
    let command = Cli::parse().command;
    let for_people = matches!(
        command,
        Command::Templates { .. } | Command::Runs { .. } | Command::Triggers { .. }
    );
    let result = match command {
        Command::Agent(config) => agent::run(config).await,
        Command::Step(args) => step::run(args).await,
        Command::EntryCommand(args) => entry_command(args),
        Command::Templates {
            connection,
            command,
        } => cli::templates(connection, command).await,
        Command::Runs {
            connection,
            command,
        } => cli::runs(connection, command).await,
        Command::Triggers {
            connection,
            command,
        } => cli::triggers(connection, command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A terminal user gets the message alone; agents and steps log it.
        Err(e) if for_people => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reads a secret from a file, trimmed; never logged.
pub fn read_secret(path: &PathBuf) -> anyhow::Result<String> {
    use anyhow::Context;
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let s = s.trim().to_string();
    anyhow::ensure!(!s.is_empty(), "the token file {} is empty", path.display());
    Ok(s)
}

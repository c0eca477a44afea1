//! `concurrent`: the cluster agent (`concurrent agent`) and the step runner (`concurrent step`).

mod agent;
mod edge;
mod executor;
mod metrics;
mod mlflow;
mod step;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "concurrent",
    version,
    about = "Runs the steps of Concurrent DAGs: an agent that pulls work from the edge API, and the step runner it launches."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull work for one cluster from the edge API and run it until stopped (SIGINT/SIGTERM).
    Agent(agent::AgentConfig),
    /// Run one leased step: download inputs, run the MLflow Project, upload outputs.
    Step(step::StepArgs),
}

/// Where steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// A child process per step on this machine (the default for one machine).
    Local,
    /// A pod per step, in --namespace (in-cluster config, or KUBECONFIG).
    Kubernetes,
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
    let result = match Cli::parse().command {
        Command::Agent(config) => agent::run(config).await,
        Command::Step(args) => step::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
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

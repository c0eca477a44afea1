//! `concurrent templates …`, `concurrent runs …` and `concurrent triggers …`: the edge API for people in a terminal.
//! The edge URL and token come from flags, then the environment (`CONCURRENT_EDGE_URL`,
//! `CONCURRENT_TOKEN`), then `~/.config/concurrent/config.json` (`{"edgeUrl", "token"}`).
//! Lists print tables, `--output json` prints the API's JSON for scripts, and `runs start
//! --follow` / `runs get --follow` show the run live and exit with its outcome.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use concurrent_core::access::Route;
use concurrent_core::run::{InstanceState, RunState, RunStatus};
use concurrent_core::wire::{ErrorBody, RunSummary, SavedTemplate, TemplateSummary};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Connection {
    /// The edge API (default: $CONCURRENT_EDGE_URL, then the config file).
    #[arg(long, global = true)]
    edge_url: Option<String>,
    /// A file holding the API token (default: $CONCURRENT_TOKEN, then the config file).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(clap::Subcommand, Debug)]
pub enum Templates {
    /// Save a template file (JSON) as the template's next version.
    Push {
        file: PathBuf,
        /// Save even with validation problems (a draft cannot run).
        #[arg(long)]
        draft: bool,
        /// Only if the latest version is this one (otherwise: whatever is latest).
        #[arg(long)]
        if_version: Option<u32>,
    },
    /// Check a template file without saving it.
    Validate { file: PathBuf },
    /// The templates, with their latest version and whether it can run.
    List,
    /// Print a template (its latest version, or `--version`) as JSON.
    Get {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum Runs {
    /// Start a run of a template.
    Start {
        template: String,
        /// A run parameter, `key=value` (repeatable).
        #[arg(short = 'p', long = "param", value_parser = crate::parse_key_value)]
        params: Vec<(String, String)>,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        version: Option<u32>,
        /// The MLflow experiment of the run (default: `concurrent/<template>`).
        #[arg(long)]
        experiment_id: Option<String>,
        /// Run every step, reusing no cached results (new ones are still cached).
        #[arg(long)]
        ignore_cache: bool,
        /// Follow the run until it ends; exit 0 only if it succeeded.
        #[arg(long, short)]
        follow: bool,
    },
    /// Runs, newest first.
    List {
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A run's nodes and their instances' states.
    Get {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// The whole log of an instance's latest attempt (from MLflow, through the edge).
    Logs {
        id: String,
        /// The node (default: the run's only node, else required).
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value_t = 0)]
        instance: usize,
    },
    Cancel {
        id: String,
    },
    /// Run the failed and cancelled instances again.
    Retry {
        id: String,
    },
    /// Run a node and everything downstream again.
    Rerun {
        id: String,
        node: String,
    },
    /// Approve a paused approval node: the run goes on.
    Approve {
        id: String,
        node: String,
        /// Why, for the record (a tag on the MLflow parent run).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reject a paused approval node: the node fails, and with it the run.
    Reject {
        id: String,
        node: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn config_file() -> Option<Value> {
    let home = std::env::var("HOME").ok()?;
    let text =
        std::fs::read_to_string(PathBuf::from(home).join(".config/concurrent/config.json")).ok()?;
    serde_json::from_str(&text).ok()
}

impl Api {
    fn new(c: &Connection) -> anyhow::Result<Api> {
        let file = config_file();
        let from_file = |k: &str| file.as_ref().and_then(|f| f[k].as_str().map(String::from));
        let base = c
            .edge_url
            .clone()
            .or_else(|| std::env::var("CONCURRENT_EDGE_URL").ok())
            .or_else(|| from_file("edgeUrl"))
            .context("no edge URL: pass --edge-url, set CONCURRENT_EDGE_URL, or put {\"edgeUrl\": …} in ~/.config/concurrent/config.json")?;
        let token = match &c.token_file {
            Some(f) => crate::read_secret(f)?,
            None => std::env::var("CONCURRENT_TOKEN").ok().or_else(|| from_file("token")).context(
                "no API token: pass --token-file, set CONCURRENT_TOKEN, or put {\"token\": …} in ~/.config/concurrent/config.json (an admin creates tokens with POST /api/v1/tokens)",
            )?,
        };
        crate::edge::check_url(&base)?;
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "the edge at {} cannot be reached; check --edge-url",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let Ok(body) = serde_json::from_str::<ErrorBody>(&text) else {
            bail!("{method} {path}: the edge answered {status}: {text}");
        };
        let mut msg = format!("{} ({status})", body.error.message);
        for p in &body.error.details {
            msg.push_str(&format!("\n  {}: {}", p.path, p.message));
        }
        if status == 401 {
            msg.push_str("\n  the token is missing, unknown or revoked; check --token-file or CONCURRENT_TOKEN");
        }
        bail!(msg)
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.call(method, path, body, &[]).await?.json().await?)
    }
}

fn read_json(file: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// Rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(header.iter().map(|h| h.to_string()).collect()))
        .chain(rows.into_iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn time(ms: u64) -> String {
    concurrent_core::time::rfc3339(ms)
}

pub async fn templates(c: Connection, cmd: Templates) -> anyhow::Result<()> {
    let api = Api::new(&c)?;
    let out = c.output;
    match cmd {
        Templates::Push {
            file,
            draft,
            if_version,
        } => {
            let t = read_json(&file)?;
            let name = t["name"]
                .as_str()
                .context("the template has no \"name\"")?
                .to_string();
            let path = format!(
                "{}{}",
                Route::TemplateSave.path(&[&name]),
                if draft { "?draft=true" } else { "" }
            );
            let matching = if_version.map_or("*".to_string(), |v| v.to_string());
            let saved: SavedTemplate = api
                .call(
                    reqwest::Method::PUT,
                    &path,
                    Some(&t),
                    &[("If-Match", matching)],
                )
                .await?
                .json()
                .await?;
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&saved)?),
                Output::Table => println!(
                    "saved {} version {}{}",
                    saved.name,
                    saved.version,
                    if saved.problems.is_empty() {
                        String::new()
                    } else {
                        format!(" as a draft with {} problem(s)", saved.problems.len())
                    }
                ),
            }
        }
        Templates::Validate { file } => {
            let t = read_json(&file)?;
            let answer = api
                .json(
                    reqwest::Method::POST,
                    &Route::TemplatesValidate.path(&[]),
                    Some(&t),
                )
                .await?;
            let problems = answer["problems"].as_array().cloned().unwrap_or_default();
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
                Output::Table if problems.is_empty() => println!("{}: valid", file.display()),
                Output::Table => {
                    for p in &problems {
                        println!(
                            "{}: {}",
                            p["path"].as_str().unwrap_or(""),
                            p["message"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            if !problems.is_empty() {
                bail!("{} problem(s) in {}", problems.len(), file.display());
            }
        }
        Templates::List => {
            let list: Vec<TemplateSummary> = serde_json::from_value(
                api.json(reqwest::Method::GET, &Route::TemplatesList.path(&[]), None)
                    .await?,
            )?;
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Table => println!(
                    "{}",
                    table(
                        &["NAME", "VERSION", "VALID", "UPDATED", "BY"],
                        list.iter()
                            .map(|t| vec![
                                t.name.clone(),
                                t.latest_version.to_string(),
                                if t.valid { "yes" } else { "no" }.into(),
                                time(t.updated_at),
                                t.updated_by.clone().unwrap_or_default()
                            ])
                            .collect()
                    )
                ),
            }
        }
        Templates::Get { name, version } => {
            let path = match version {
                Some(v) => Route::TemplateVersion.path(&[&name, &v.to_string()]),
                None => Route::TemplateGet.path(&[&name]),
            };
            let v = api.json(reqwest::Method::GET, &path, None).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(if out == Output::Json {
                    &v
                } else {
                    &v["template"]
                })?
            );
        }
    }
    Ok(())
}

/// Per node: its state and instance counts by state.
fn progress_rows(run: &RunState) -> Vec<Vec<String>> {
    run.template
        .nodes
        .iter()
        .map(|n| {
            let node = run.node(&n.id);
            let counts = node
                .map(|n| {
                    concurrent_core::run::page(
                        n,
                        concurrent_core::run::InstanceFilter {
                            state: None,
                            offset: 0,
                            limit: 0,
                        },
                    )
                    .counts
                })
                .unwrap_or_default();
            let shown = node.map_or(InstanceState::Waiting, |n| n.shown_state());
            vec![
                n.id.clone(),
                shown.as_str().to_string(),
                // Before a node is planned, its instance count is the template's.
                format!(
                    "{}/{}",
                    node.map_or(0, |n| n.succeeded()),
                    node.filter(|n| !n.instances.is_empty())
                        .map_or(n.instances as usize, |n| n.instances.len())
                ),
                counts
                    .iter()
                    .map(|(s, k)| format!("{} {k}", s.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect()
}

async fn get_run(api: &Api, id: &str) -> anyhow::Result<RunState> {
    Ok(serde_json::from_value(
        api.json(reqwest::Method::GET, &Route::RunGet.path(&[id]), None)
            .await?,
    )?)
}

/// Shows the run until it ends (a progress bar on a terminal, a line per change otherwise);
/// fails unless it succeeded.
async fn follow(api: &Api, id: &str, out: Output) -> anyhow::Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} instances done · {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        b
    });
    let mut last = String::new();
    let run = loop {
        let run = get_run(api, id).await?;
        let total: usize = run.nodes.iter().map(|n| n.instances.len()).sum();
        let done: usize = run
            .nodes
            .iter()
            .map(|n| n.instances.iter().filter(|i| i.state.is_terminal()).count())
            .sum();
        let summary = progress_rows(&run)
            .iter()
            .map(|r| format!("{} {} ({})", r[0], r[1], r[2]))
            .collect::<Vec<_>>()
            .join(" · ");
        match &bar {
            Some(b) => {
                b.set_length(total as u64);
                b.set_position(done as u64);
                b.set_message(format!("{} · {summary}", run.status.as_str()));
            }
            None if summary != last && out == Output::Table => {
                eprintln!("{} {}: {summary}", time(now_ms()), run.status.as_str())
            }
            None => {}
        }
        last = summary;
        if run.status.is_terminal() {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    print_run(&run, out)?;
    match run.status {
        RunStatus::Succeeded => Ok(()),
        other => bail!(
            "run {id} ended {}{}",
            other.as_str(),
            run.error.map(|e| format!(": {e}")).unwrap_or_default()
        ),
    }
}

fn print_run(run: &RunState, out: Output) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(run)?),
        Output::Table => {
            println!(
                "run {} of {} v{}: {}",
                run.id,
                run.template.name,
                run.template_version,
                run.status.as_str()
            );
            if let Some(e) = &run.error {
                println!("error: {e}");
            }
            println!(
                "{}",
                table(&["NODE", "STATE", "DONE", "INSTANCES"], progress_rows(run))
            );
        }
    }
    Ok(())
}

pub async fn runs(c: Connection, cmd: Runs) -> anyhow::Result<()> {
    let api = Api::new(&c)?;
    let out = c.output;
    match cmd {
        Runs::Start {
            template,
            params,
            cluster,
            version,
            experiment_id,
            ignore_cache,
            follow: f,
        } => {
            let body = serde_json::to_value(concurrent_core::wire::StartRun {
                template,
                version,
                parameters: params.into_iter().collect(),
                cluster,
                experiment_id,
                ignore_cache,
            })?;
            let started: RunSummary = serde_json::from_value(
                api.json(
                    reqwest::Method::POST,
                    &Route::RunStart.path(&[]),
                    Some(&body),
                )
                .await?,
            )?;
            if f {
                if out == Output::Table {
                    eprintln!("started run {}", started.id);
                }
                return follow(&api, &started.id, out).await;
            }
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&started)?),
                Output::Table => println!("{}", started.id),
            }
        }
        Runs::List {
            template,
            status,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            q.extend(template.map(|t| format!("template={t}")));
            q.extend(status.map(|s| format!("status={s}")));
            let list: Vec<RunSummary> = serde_json::from_value(
                api.json(
                    reqwest::Method::GET,
                    &format!("{}?{}", Route::RunsList.path(&[]), q.join("&")),
                    None,
                )
                .await?,
            )?;
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Table => println!(
                    "{}",
                    table(
                        &["ID", "TEMPLATE", "VERSION", "STATUS", "STARTED", "BY"],
                        list.iter()
                            .map(|r| vec![
                                r.id.clone(),
                                r.template.clone(),
                                r.template_version.to_string(),
                                r.status.as_str().into(),
                                time(r.created_at),
                                r.started_by.clone().unwrap_or_default()
                            ])
                            .collect()
                    )
                ),
            }
        }
        Runs::Get { id, follow: f } => {
            if f {
                return follow(&api, &id, out).await;
            }
            print_run(&get_run(&api, &id).await?, out)?;
        }
        Runs::Logs { id, node, instance } => {
            let run = get_run(&api, &id).await?;
            let node = match node {
                Some(n) => n,
                None if run.nodes.len() == 1 => run.nodes[0].id.clone(),
                None => bail!(
                    "the run has {} nodes; pick one with --node ({})",
                    run.nodes.len(),
                    run.nodes
                        .iter()
                        .map(|n| n.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let n = run
                .node(&node)
                .with_context(|| format!("run {id} has no node {node:?}"))?;
            let attempt = n
                .instances
                .get(instance)
                .and_then(|i| i.current())
                .with_context(|| {
                    format!("node {node} has no instance {instance} with an attempt yet")
                })?;
            let mlflow_run = attempt.mlflow_run_id.clone().with_context(|| {
                format!(
                    "{node} #{instance} attempt {} has no MLflow run yet",
                    attempt.number
                )
            })?;
            let resp = api
                .call(
                    reqwest::Method::GET,
                    &format!("/get-artifact?run_uuid={mlflow_run}&path=logs%2Fstep.log"),
                    None,
                    &[],
                )
                .await
                .with_context(|| {
                    format!(
                        "the log of {node} #{instance} attempt {} is not in MLflow (yet)",
                        attempt.number
                    )
                })?;
            let bytes = resp.bytes().await?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        Runs::Cancel { id } => repair(&api, Route::RunCancel, &id, json!({}), out).await?,
        Runs::Retry { id } => repair(&api, Route::RunRetry, &id, json!({}), out).await?,
        Runs::Rerun { id, node } => {
            repair(&api, Route::RunRerun, &id, json!({"node": node}), out).await?
        }
        Runs::Approve { id, node, note } => decide(&api, &id, node, true, note, out).await?,
        Runs::Reject { id, node, note } => decide(&api, &id, node, false, note, out).await?,
    }
    Ok(())
}

async fn decide(
    api: &Api,
    id: &str,
    node: String,
    approve: bool,
    note: String,
    out: Output,
) -> anyhow::Result<()> {
    let body = concurrent_core::wire::DecideRequest {
        node,
        approve,
        note,
    };
    repair(api, Route::RunDecide, id, serde_json::to_value(body)?, out).await
}

async fn repair(api: &Api, route: Route, id: &str, body: Value, out: Output) -> anyhow::Result<()> {
    let answer = api
        .json(reqwest::Method::POST, &route.path(&[id]), Some(&body))
        .await?;
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Table => println!(
            "{}: run {id} is {}",
            route.spec().pattern.rsplit('/').next().unwrap_or_default(),
            answer["status"].as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum Triggers {
    /// Create a trigger from a JSON file (admins): `{"name", "template", "on": {"event":
    /// "modelAliasSet", "model", "alias"} | {"event": "modelVersionCreated", "model"} |
    /// {"event": "runSucceeded", "template"}, "parameters", "cluster", "pollSeconds"}`.
    Create {
        file: PathBuf,
    },
    /// The triggers, with what they last did.
    List,
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
}

pub async fn triggers(c: Connection, cmd: Triggers) -> anyhow::Result<()> {
    let api = Api::new(&c)?;
    let (route, name) = match cmd {
        Triggers::Create { file } => {
            let body = read_json(&file)?;
            let t = api
                .json(
                    reqwest::Method::POST,
                    &Route::TriggerCreate.path(&[]),
                    Some(&body),
                )
                .await?;
            match c.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&t)?),
                Output::Table => println!(
                    "trigger {} created: {}",
                    t["name"].as_str().unwrap_or("?"),
                    t["delivery"]
                        .as_str()
                        .unwrap_or("starts on each run's success")
                ),
            }
            return Ok(());
        }
        Triggers::List => {
            let list = api
                .json(reqwest::Method::GET, &Route::TriggersList.path(&[]), None)
                .await?;
            let rows = list.as_array().cloned().unwrap_or_default();
            match c.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Output::Table => println!(
                    "{}",
                    table(
                        &[
                            "NAME",
                            "TEMPLATE",
                            "ON",
                            "STATE",
                            "RUNS",
                            "LAST RUN",
                            "LAST ERROR"
                        ],
                        rows.iter()
                            .map(|t| {
                                let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                                let on = &t["on"];
                                let on = match on["event"].as_str() {
                                    Some("modelAliasSet") => format!(
                                        "{}@{} moved",
                                        on["model"].as_str().unwrap_or("?"),
                                        on["alias"].as_str().unwrap_or("?")
                                    ),
                                    Some("modelVersionCreated") => format!(
                                        "new {} version",
                                        on["model"].as_str().unwrap_or("?")
                                    ),
                                    _ => format!(
                                        "{} succeeded",
                                        on["template"].as_str().unwrap_or("?")
                                    ),
                                };
                                let state = if t["paused"] == true {
                                    "paused"
                                } else {
                                    "active"
                                };
                                vec![
                                    s("name"),
                                    s("template"),
                                    on,
                                    state.into(),
                                    t["fired"].to_string(),
                                    s("lastRunId"),
                                    s("lastError"),
                                ]
                            })
                            .collect()
                    )
                ),
            }
            return Ok(());
        }
        Triggers::Pause { name } => (Route::TriggerPause, name),
        Triggers::Resume { name } => (Route::TriggerResume, name),
        Triggers::Delete { name } => (Route::TriggerDelete, name),
    };
    if route == Route::TriggerDelete {
        api.call(reqwest::Method::DELETE, &route.path(&[&name]), None, &[])
            .await?;
        println!("trigger {name} deleted");
    } else {
        let t = api
            .json(reqwest::Method::POST, &route.path(&[&name]), None)
            .await?;
        println!(
            "trigger {name} is {}",
            if t["paused"] == true {
                "paused"
            } else {
                "active"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["A", "LONGER"],
            vec![
                vec!["wide value".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A           LONGER\nwide value  x\ny           z");
    }
}

//! `logs`: an environment's build, deployment and runtime lines through LogService.TailLogs
//! — the backfill asked for, then (with `-f`) live lines until interrupted.

use std::collections::HashMap;
use std::time::Duration;

use slipway_proto::logs::v1 as lpb;
use tonic::{Code, Request};

use crate::app::{App, list_services};
use crate::errors::UserError;
use crate::output::{self, Format, label};

const LOGS_EXAMPLES: &str = "Examples:
  slipway logs                            # the environment's last 100 lines
  slipway logs -f --service web           # follow web's lines live (Ctrl-C to stop)
  slipway logs --kind build --deployment 0190f1a2-…
  slipway logs --since 10m --grep error
  slipway logs --tail 500 -o json | jq -r .message";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    Build,
    Deployment,
    Runtime,
}

#[derive(Debug, clap::Args)]
#[command(after_help = LOGS_EXAMPLES)]
pub struct LogsArgs {
    /// Keep following new lines until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only lines of this service (name or id).
    #[arg(long, short = 's')]
    service: Option<String>,
    /// Only lines of this deployment (its builds, its progress, the runtime output of
    /// what it deployed).
    #[arg(long)]
    deployment: Option<String>,
    /// Only lines of these kinds (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    kind: Vec<KindArg>,
    /// Start this far back (`10m`, `2h`) or at this RFC 3339 time.
    #[arg(long, conflicts_with = "tail")]
    since: Option<String>,
    /// How many stored lines to start with (default 100; at most 10000).
    #[arg(long, value_name = "N")]
    tail: Option<u32>,
    /// Only lines containing this text (case-insensitive, not a pattern).
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
}

pub async fn logs(app: &App, args: LogsArgs) -> anyhow::Result<()> {
    let client = app.client()?;
    let environment_id = app.environment_id(&client).await?;
    // Lines carry service ids; people read names.
    let names: HashMap<String, String> = list_services(&client, &environment_id)
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let service_id = match &args.service {
        Some(service) => app.service(&client, service).await?.id,
        None => String::new(),
    };
    let filter = lpb::LogFilter {
        environment_id,
        service_id,
        deployment_id: args.deployment.clone().unwrap_or_default(),
        kinds: args
            .kind
            .iter()
            .map(|k| {
                i32::from(match k {
                    KindArg::Build => lpb::LogKind::Build,
                    KindArg::Deployment => lpb::LogKind::Deployment,
                    KindArg::Runtime => lpb::LogKind::Runtime,
                })
            })
            .collect(),
        contains: args.grep.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut backfill = Some(match (&args.since, args.tail) {
        (Some(since), _) => {
            lpb::tail_logs_request::Backfill::SinceTime(crate::time::past_time(since)?)
        }
        (None, Some(n)) => lpb::tail_logs_request::Backfill::TailLines(n),
        (None, None) => lpb::tail_logs_request::Backfill::TailLines(100),
    });
    let mut last_sequence: Option<u64> = None;
    let mut retries = 0;
    loop {
        // After a broken stream, resume right after the last line seen.
        let request = lpb::TailLogsRequest {
            filter: Some(filter.clone()),
            backfill: match last_sequence {
                Some(sequence) => Some(lpb::tail_logs_request::Backfill::AfterSequence(sequence)),
                None => backfill.take(),
            },
        };
        let opened = client.logs().tail_logs(Request::new(request)).await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) if args.follow && resumable(&status) && retries < 30 => {
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    retries = 0;
                    if let Some(dropped) = &response.dropped {
                        eprintln!("… {} lines dropped", dropped.count);
                    }
                    for line in &response.lines {
                        print_line(app.format, line, &names)?;
                        last_sequence = Some(line.sequence);
                    }
                    if response.caught_up && !args.follow {
                        return Ok(());
                    }
                }
                Ok(None) if !args.follow => return Ok(()),
                Ok(None) => break,
                Err(status) if args.follow && resumable(&status) && retries < 30 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                Err(status) => return Err(status.into()),
            }
        }
        if !args.follow {
            return Err(UserError::plain("the log stream ended early").into());
        }
    }
}

fn resumable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable)
}

fn print_line(
    format: Format,
    line: &lpb::LogLine,
    names: &HashMap<String, String>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            // One object per line, so a follower can be piped line by line.
            println!("{}", serde_json::to_string(&output::json(line)?)?);
        }
        Format::Table => {
            let time = line
                .time
                .as_ref()
                .and_then(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                })
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            let source = names
                .get(&line.service_id)
                .cloned()
                .unwrap_or_else(|| label!(lpb::LogKind, line.kind).to_lowercase());
            let kind = match lpb::LogKind::try_from(line.kind) {
                Ok(lpb::LogKind::Runtime) => String::new(),
                _ => format!(" {}", label!(lpb::LogKind, line.kind).to_lowercase()),
            };
            println!("{time} {source}{kind} | {}", line.message.trim_end());
        }
    }
    Ok(())
}

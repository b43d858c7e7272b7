//! The gRPC adapter of `LogService`: decode and validate, authorize on the environment's
//! project and mode, then tail or query.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use slipway_api::{Violations, page};
use slipway_auth::rbac::{Action, Answer, Decision, Principal, Resource, ResourceKind};
use slipway_db::DatabaseConnection;
use slipway_events::EventBus;
use slipway_proto::ApiError;
use slipway_proto::logs::v1 as pb;
use slipway_proto::logs::v1::log_service_server::LogService;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::directory::{Directory, DirectoryError, Placement};
use crate::history::{History, HistoryError};
use crate::hub::Hub;
use crate::line::Filter;
use crate::query::{self, Query};
use crate::quota::TailQuota;
use crate::tail::{self, Backfill, MAX_BACKFILL, TailPlan};

/// Longest `LogFilter.contains`, in characters.
const MAX_CONTAINS: usize = 256;
/// `QueryLogs.page_size` when unset, and its ceiling.
const DEFAULT_PAGE: usize = 500;
const MAX_PAGE: usize = 5000;

/// Knobs of the service, beside the platform.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Unsent lines kept per tail before the oldest are dropped for that slow client.
    pub tail_buffer: usize,
    /// Live tails one organization may hold at once in this process (see [`TailQuota`]).
    pub max_tails_per_organization: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            tail_buffer: 10_000,
            max_tails_per_organization: 500,
        }
    }
}

/// The `LogService` implementation. Cheap to clone.
#[derive(Clone)]
pub struct Logs {
    hub: Hub,
    history: History,
    directory: Directory,
    options: LogOptions,
    quota: TailQuota,
}

impl Logs {
    /// Starts the live fan-out on `bus`; `db` keeps the environment directory.
    pub fn new(bus: Arc<dyn EventBus>, db: DatabaseConnection, options: LogOptions) -> Self {
        Self {
            hub: Hub::start(Arc::clone(&bus)),
            history: History::new(Arc::clone(&bus)),
            directory: Directory::new(bus, db),
            quota: TailQuota::new(options.max_tails_per_organization),
            options,
        }
    }

    /// Open tails in this process.
    pub fn open_tails(&self) -> usize {
        self.hub.tails()
    }

    /// Checks that `principal` may read the logs of the filter's environment; its owning
    /// organization, which scopes every read.
    async fn authorize(&self, principal: &Principal, filter: &Filter) -> Result<String, ApiError> {
        let env = filter.environment_id.as_str();
        let not_found = || ApiError::not_found("environment", env);
        let Placement {
            organization_id,
            project_id,
            mode,
        } = self
            .directory
            .lookup(env)
            .await
            .map_err(directory_unavailable)?
            .ok_or_else(not_found)?;
        let mut resource = Resource::in_organization(&organization_id)
            .in_project(&project_id)
            .target(ResourceKind::Logs, env);
        if let Some(mode) = mode {
            resource = resource.in_environment(env, mode);
        }
        match slipway_auth::authorize(principal, Action::LogsEntriesRead, &resource) {
            Decision::Allow(_) => Ok(organization_id),
            Decision::Deny(denial) => Err(match denial.answer() {
                Answer::PermissionDenied => ApiError::PermissionDenied {
                    permission: denial.action().as_str().to_owned(),
                },
                Answer::Unauthenticated => {
                    ApiError::Unauthenticated(slipway_proto::AuthFailure::TokenInvalid)
                }
                _ => not_found(),
            }),
        }
    }
}

fn directory_unavailable(error: DirectoryError) -> ApiError {
    tracing::warn!(%error, "cannot look an environment up");
    let store = match error {
        DirectoryError::Store(_) => "the database",
        DirectoryError::Events(_) | DirectoryError::TimedOut => "the event store",
    };
    ApiError::Unavailable(format!("{store} is unavailable; retry shortly"))
}

fn history_unavailable(error: HistoryError) -> ApiError {
    tracing::warn!(%error, "cannot read stored logs");
    ApiError::Unavailable("the log store is unavailable; retry shortly".to_owned())
}

/// A subject token: what an id must be to name a subject (UUIDs always are).
fn is_token(id: &str) -> bool {
    !id.is_empty()
        && !id.contains(['.', '*', '>'])
        && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Validates a `LogFilter`, adding violations under `filter.`.
fn filter(filter: Option<pb::LogFilter>, v: &mut Violations) -> Filter {
    let f = filter.unwrap_or_default();
    if f.environment_id.is_empty() {
        v.add("filter.environment_id", "is required");
    } else if !is_token(&f.environment_id) {
        v.add("filter.environment_id", "is not a valid id");
    }
    if !f.service_id.is_empty() && !is_token(&f.service_id) {
        v.add("filter.service_id", "is not a valid id");
    }
    for (index, kind) in f.kinds.iter().enumerate() {
        if !matches!(
            pb::LogKind::try_from(*kind),
            Ok(pb::LogKind::Build | pb::LogKind::Deployment | pb::LogKind::Runtime)
        ) {
            v.add(format!("filter.kinds[{index}]"), "must be a known kind");
        }
    }
    if pb::LogSeverity::try_from(f.min_severity).is_err() {
        v.add("filter.min_severity", "must be a known severity");
    }
    if f.contains.chars().count() > MAX_CONTAINS {
        v.add("filter.contains", "must be at most 256 characters");
    }
    if f.instance.len() > 253 {
        v.add("filter.instance", "must be at most 253 characters");
    }
    Filter {
        environment_id: f.environment_id,
        service_id: f.service_id,
        deployment_id: f.deployment_id,
        kinds: f.kinds,
        instance: f.instance,
        min_severity: f.min_severity,
        contains: f.contains.to_lowercase(),
    }
}

fn system_time(
    field: &str,
    time: Option<prost_types::Timestamp>,
    v: &mut Violations,
) -> Option<SystemTime> {
    let time = time?;
    match SystemTime::try_from(time) {
        Ok(time) => Some(time),
        Err(_) => {
            v.add(field, "is not a valid time");
            None
        }
    }
}

fn nanos(time: SystemTime) -> i128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i128::try_from(since.as_nanos()).unwrap_or(i128::MAX)
        })
}

fn from_nanos(nanos: i128) -> SystemTime {
    let nanos = u64::try_from(nanos).unwrap_or(0);
    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos)
}

/// Where the next page starts; bound to its query by [`page`].
#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Sequence of the last line returned.
    s: u64,
    /// The query's end, fixed on the first page (nanoseconds since the epoch).
    e: i128,
}

type TailStream = Pin<Box<dyn Stream<Item = Result<pb::TailLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LogService for Logs {
    type TailLogsStream = TailStream;

    async fn tail_logs(
        &self,
        request: Request<pb::TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, Status> {
        let principal = slipway_auth::principal(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::new();
        let filter = filter(request.filter, &mut v);
        let backfill = match request.backfill {
            None => Backfill::None,
            Some(pb::tail_logs_request::Backfill::TailLines(count)) => {
                if count == 0 || count as usize > MAX_BACKFILL {
                    v.add("tail_lines", "must be between 1 and 10000");
                }
                Backfill::Lines(count as usize)
            }
            Some(pb::tail_logs_request::Backfill::SinceTime(time)) => Backfill::Since(
                system_time("since_time", Some(time), &mut v).unwrap_or(SystemTime::UNIX_EPOCH),
            ),
            Some(pb::tail_logs_request::Backfill::AfterSequence(sequence)) => {
                Backfill::After(sequence)
            }
        };
        v.finish()?;
        let organization_id = self.authorize(&principal, &filter).await?;
        let Some(permit) = self.quota.acquire(&organization_id) else {
            return Err(ApiError::ResourceExhausted {
                subject: format!("organization:{organization_id}"),
                message: format!(
                    "the organization already has {} live log tails, the most one organization may hold; close some and retry",
                    self.quota.limit()
                ),
            }
            .into());
        };
        let plan = TailPlan {
            organization_id,
            filter,
            backfill,
            capacity: self.options.tail_buffer,
        };
        let (out, receiver) = mpsc::channel(4);
        let (hub, history) = (self.hub.clone(), self.history.clone());
        tokio::spawn(async move {
            tail::run(hub, history, plan, out).await;
            // The tail counts against its organization until its stream ends.
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn query_logs(
        &self,
        request: Request<pb::QueryLogsRequest>,
    ) -> Result<Response<pb::QueryLogsResponse>, Status> {
        let principal = slipway_auth::principal(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::new();
        let filter = filter(request.filter, &mut v);
        let start = system_time("start_time", request.start_time, &mut v);
        let end = system_time("end_time", request.end_time, &mut v);
        if let (Some(start), Some(end)) = (start, end)
            && start > end
        {
            v.add("start_time", "must not be after end_time");
        }
        let order = pb::LogOrder::try_from(request.order);
        if order.is_err() {
            v.add("order", "must be a known order");
        }
        let page_size = match usize::try_from(request.page_size) {
            Err(_) => {
                v.add("page_size", "must not be negative");
                DEFAULT_PAGE
            }
            Ok(0) => DEFAULT_PAGE,
            Ok(size) if size > MAX_PAGE => {
                v.add("page_size", "must be at most 5000");
                MAX_PAGE
            }
            Ok(size) => size,
        };
        v.finish()?;
        let newest_first = !matches!(order, Ok(pb::LogOrder::OldestFirst));
        let key = format!(
            "logs/{}|{:?}|{:?}|{newest_first}",
            filter.describe(),
            start.map(nanos),
            end.map(nanos)
        );
        let cursor: Option<Cursor> = page::decode(&request.page_token, &key)?;
        let organization_id = self.authorize(&principal, &filter).await?;
        let end = match &cursor {
            Some(cursor) => from_nanos(cursor.e),
            None => end.unwrap_or_else(SystemTime::now),
        };
        let query = Query {
            organization_id,
            filter,
            start,
            end,
            newest_first,
            page_size,
            after: cursor.as_ref().map(|cursor| cursor.s),
        };
        let found = query::page(&self.history, &query)
            .await
            .map_err(history_unavailable)?;
        let next = found.next.map(|s| Cursor { s, e: nanos(end) });
        Ok(Response::new(pb::QueryLogsResponse {
            lines: found.lines,
            next_page_token: page::encode(next, &key),
        }))
    }
}

//! `QueryLogs`: one page of stored lines in a time range, either direction.
//!
//! Pages follow stream order (arrival order), which is time order for each producer; the
//! cursor is the sequence of the last line returned, so a page never repeats or skips a
//! line even while new ones arrive.

use std::ops::ControlFlow;
use std::time::SystemTime;

use slipway_events::ReadFrom;
use slipway_proto::logs::v1 as pb;

use crate::history::{CLOCK_SLACK, History, HistoryError, read_from_time};
use crate::line::{self, Filter};

/// One page's worth of question.
#[derive(Debug, Clone)]
pub struct Query {
    pub organization_id: String,
    pub filter: Filter,
    /// Inclusive lower bound on line time.
    pub start: Option<SystemTime>,
    /// Exclusive upper bound on line time.
    pub end: SystemTime,
    pub newest_first: bool,
    pub page_size: usize,
    /// Sequence of the last line of the previous page.
    pub after: Option<u64>,
}

/// A page and the cursor of the next one.
#[derive(Debug, Default)]
pub struct Page {
    pub lines: Vec<pb::LogLine>,
    /// Sequence of the last line, when more may follow.
    pub next: Option<u64>,
}

impl Query {
    fn wanted(&self, line: &pb::LogLine) -> bool {
        let time = line::line_time(line);
        let beyond_cursor = match self.after {
            None => true,
            Some(after) if self.newest_first => line.sequence < after,
            Some(after) => line.sequence > after,
        };
        beyond_cursor
            && self.start.is_none_or(|start| time >= start)
            && time < self.end
            && self.filter.matches(line)
    }
}

/// Reads the page `query` asks for.
pub async fn page(history: &History, query: &Query) -> Result<Page, HistoryError> {
    let subject = query.filter.subject(&query.organization_id);
    // One line more than the page, to know whether another page follows.
    let want = query.page_size + 1;
    let mut lines = Vec::new();
    if query.newest_first {
        let before = match query.after {
            Some(after) => line::batch_sequence(after) + 1,
            None => history.last_sequence().await? + 1,
        };
        let oldest_store = query.start.map(|start| {
            start
                .checked_sub(CLOCK_SLACK)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
        history
            .backward(&subject, before, |batch| {
                if oldest_store.is_some_and(|oldest| batch.stored < oldest) {
                    return ControlFlow::Break(());
                }
                for line in batch.lines.iter().rev() {
                    if query.wanted(line) {
                        lines.push(pb::LogLine::clone(line));
                        if lines.len() >= want {
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
    } else {
        let from = match (query.after, query.start) {
            (Some(after), _) => ReadFrom::Sequence(line::batch_sequence(after)),
            (None, Some(start)) => read_from_time(start),
            (None, None) => ReadFrom::Sequence(1),
        };
        let newest_store = query.end.checked_add(CLOCK_SLACK);
        history
            .forward(&subject, from, |batch| {
                if newest_store.is_some_and(|newest| batch.stored > newest) {
                    return ControlFlow::Break(());
                }
                for line in &batch.lines {
                    if query.wanted(line) {
                        lines.push(pb::LogLine::clone(line));
                        if lines.len() >= want {
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
    }
    let next = if lines.len() > query.page_size {
        lines.truncate(query.page_size);
        lines.last().map(|line| line.sequence)
    } else {
        None
    };
    Ok(Page { lines, next })
}

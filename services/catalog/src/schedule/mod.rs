//! Schedules: the cron expressions of CRON_JOB services and the daily start/stop times
//! of deployment rules, with the time zone and time-of-day inputs they are read with.
//!
//! Own code rather than a cron crate, so the accepted syntax, the error messages people
//! see and the daylight-saving behaviour are exactly what the API documents.

mod cron;
mod time;

#[cfg(test)]
mod tests;

pub use cron::{CronError, CronField, CronSchedule, TokenProblem};
pub use time::{
    TimeOfDayError, TimezoneError, WeekdayTime, WeekdayTimeError, parse_time_of_day,
    parse_timezone, time_of_day,
};

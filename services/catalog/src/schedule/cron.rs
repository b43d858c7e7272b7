//! Five-field cron expressions, with Vixie cron's semantics.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike,
};
use thiserror::Error;

/// One of the five fields, to name it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    /// 0-59.
    Minute,
    /// 0-23.
    Hour,
    /// 1-31.
    DayOfMonth,
    /// 1-12 or JAN-DEC.
    Month,
    /// 0-7 (0 and 7 are Sunday) or SUN-SAT.
    DayOfWeek,
}

const FIELDS: [CronField; 5] = [
    CronField::Minute,
    CronField::Hour,
    CronField::DayOfMonth,
    CronField::Month,
    CronField::DayOfWeek,
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronField {
    /// Smallest and largest value written in the field.
    fn bounds(self) -> (u32, u32) {
        match self {
            Self::Minute => (0, 59),
            Self::Hour => (0, 23),
            Self::DayOfMonth => (1, 31),
            Self::Month => (1, 12),
            Self::DayOfWeek => (0, 7),
        }
    }

    /// What `*` covers: the bounds, except that Sunday is counted once.
    fn star(self) -> (u32, u32) {
        match self {
            Self::DayOfWeek => (0, 6),
            other => other.bounds(),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Month => &MONTHS,
            Self::DayOfWeek => &WEEKDAYS,
            _ => &[],
        }
    }

    /// The value a name stands for (`JAN` = 1, `SUN` = 0).
    fn name_value(self, token: &str) -> Option<u32> {
        let offset = u32::from(self == Self::Month);
        let index = self
            .names()
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))?;
        u32::try_from(index).ok().map(|i| i + offset)
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::DayOfMonth => "day-of-month",
            Self::Month => "month",
            Self::DayOfWeek => "day-of-week",
        })
    }
}

/// What is wrong with one token of a field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenProblem {
    /// Nothing between two commas, or around `-` or `/`.
    #[error("empty value")]
    Empty,
    /// Not a number, nor a name the field knows.
    #[error("not a number{}", if *.names { " or a name" } else { "" })]
    NotANumber {
        /// Whether the field accepts names (month, day of week).
        names: bool,
    },
    /// A number outside the field's bounds.
    #[error("out of range {min}-{max}")]
    OutOfRange {
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// A range whose start is after its end (ranges do not wrap around).
    #[error("range start is after its end")]
    ReversedRange,
    /// A step of zero, or one that is not a number.
    #[error("step must be a number from 1 to {max}")]
    BadStep {
        /// Largest step accepted.
        max: u32,
    },
    /// More than one `/` or `-`.
    #[error("too many '/' or '-'")]
    Malformed,
}

/// Why a cron expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    /// Blank.
    #[error("schedule is empty")]
    Empty,
    /// Not five fields.
    #[error("schedule has {found} fields, expected 5 (minute hour day-of-month month day-of-week)")]
    FieldCount {
        /// How many there were.
        found: usize,
    },
    /// An `@` shorthand that is not one of those supported.
    #[error(
        "unknown shorthand {name:?}; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    UnknownMacro {
        /// The shorthand as written.
        name: String,
    },
    /// A bad token in a field.
    #[error("{field} field: {token:?}: {problem}")]
    InvalidToken {
        /// The field.
        field: CronField,
        /// The offending token (the list item, or the part of it that is wrong).
        token: String,
        /// What is wrong with it.
        problem: TokenProblem,
    },
    /// Valid syntax for days that do not exist (`0 0 30 2 *`): refused, since a job
    /// that never runs is always a mistake.
    #[error("schedule never fires: no month in it has the days of month it names")]
    NeverFires,
}

/// A parsed cron expression: the five standard fields (`*`, lists, ranges, steps,
/// month and weekday names, 0 or 7 for Sunday) or one of the shorthands `@yearly`
/// `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly`.
///
/// Semantics are Vixie cron's: when both day of month and day of week are restricted
/// (their field does not start with `*`) a day matches when *either* does, else when
/// both do. `a/n` means `a-max/n`. Times are local to the time zone of the instant
/// given to [`CronSchedule::next_after`]; a local time skipped by a daylight-saving
/// change does not fire, and a repeated one fires once (at its first occurrence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    source: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    dom_star: bool,
    dow_star: bool,
}

/// Days in each month, February counted as 29 since leap years have it.
const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// How far [`CronSchedule::next_after`] looks: every valid (month, day) falls on every
/// weekday within the 400-year Gregorian cycle.
const SEARCH_YEARS: i32 = 400;

impl CronSchedule {
    /// Parses an expression; errors name the field and the token at fault.
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        let expanded = if trimmed.starts_with('@') {
            macro_expansion(trimmed).ok_or_else(|| CronError::UnknownMacro {
                name: trimmed.to_owned(),
            })?
        } else {
            trimmed
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != FIELDS.len() {
            return Err(CronError::FieldCount { found: parts.len() });
        }
        let mut masks = [0_u64; 5];
        for ((mask, field), text) in masks.iter_mut().zip(FIELDS).zip(&parts) {
            *mask = parse_field(field, text)?;
        }
        let [minutes, hours, days_of_month, months, days_of_week] = masks;
        let schedule = Self {
            source: trimmed.to_owned(),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_star: parts[2].starts_with('*'),
            dow_star: parts[4].starts_with('*'),
        };
        if !schedule.can_fire() {
            return Err(CronError::NeverFires);
        }
        Ok(schedule)
    }

    /// The expression as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether some day of the calendar matches. With the day-of-week OR rule any
    /// weekday is enough; otherwise some listed month must have a listed day.
    fn can_fire(&self) -> bool {
        if !self.dom_star && !self.dow_star {
            return true;
        }
        (1..=12_u32).any(|m| {
            bit(self.months, m)
                && MAX_DAYS
                    .get(m as usize - 1)
                    .is_some_and(|&max| (1..=max).any(|d| bit(self.days_of_month, d)))
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = bit(self.days_of_month, date.day());
        let dow = bit(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the schedule names this local minute (seconds are ignored).
    pub fn matches_local(&self, local: &NaiveDateTime) -> bool {
        bit(self.months, local.month())
            && self.day_matches(local.date())
            && bit(self.hours, local.hour())
            && bit(self.minutes, local.minute())
    }

    /// Whether the schedule names the minute of `at`, read in its own time zone.
    pub fn matches<T: TimeZone>(&self, at: &DateTime<T>) -> bool {
        self.matches_local(&at.naive_local())
    }

    /// The first firing strictly after `after`, in `after`'s time zone; `None` when
    /// there is none before the end of chrono's calendar.
    pub fn next_after<T: TimeZone>(&self, after: &DateTime<T>) -> Option<DateTime<T>> {
        let tz = after.timezone();
        let local = after.naive_local();
        let limit = local.year().saturating_add(SEARCH_YEARS);
        let mut at = local
            .date()
            .and_hms_opt(local.hour(), local.minute(), 0)?
            .checked_add_signed(Duration::minutes(1))?;
        loop {
            if at.year() > limit {
                return None;
            }
            if !bit(self.months, at.month()) {
                at = first_of_next_month(at.date())?;
                continue;
            }
            if !self.day_matches(at.date()) {
                at = at.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            let Some(hour) = next_bit(self.hours, at.hour(), 23) else {
                at = at.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            };
            if hour != at.hour() {
                at = at.date().and_hms_opt(hour, 0, 0)?;
            }
            let Some(minute) = next_bit(self.minutes, at.minute(), 59) else {
                at = next_hour(at)?;
                continue;
            };
            at = at.date().and_hms_opt(hour, minute, 0)?;
            match tz.from_local_datetime(&at) {
                // Ambiguous: the first occurrence only, so a repeated hour fires once.
                LocalResult::Single(found) | LocalResult::Ambiguous(found, _) if found > *after => {
                    return Some(found);
                }
                // A skipped local time, or the repeat of one already past.
                _ => at = at.checked_add_signed(Duration::minutes(1))?,
            }
        }
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn macro_expansion(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

fn bit(mask: u64, value: u32) -> bool {
    value < 64 && mask & (1_u64 << value) != 0
}

/// The smallest set bit in `from..=max`.
fn next_bit(mask: u64, from: u32, max: u32) -> Option<u32> {
    (from..=max).find(|&v| bit(mask, v))
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDateTime> {
    let (year, month) = if date.month() == 12 {
        (date.year().checked_add(1)?, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)
}

fn next_hour(at: NaiveDateTime) -> Option<NaiveDateTime> {
    if at.hour() == 23 {
        at.date().succ_opt()?.and_hms_opt(0, 0, 0)
    } else {
        at.date().and_hms_opt(at.hour() + 1, 0, 0)
    }
}

fn invalid(field: CronField, token: &str, problem: TokenProblem) -> CronError {
    CronError::InvalidToken {
        field,
        token: token.to_owned(),
        problem,
    }
}

/// Parses one field into a bit mask of the values it names.
fn parse_field(field: CronField, text: &str) -> Result<u64, CronError> {
    let mut mask = 0_u64;
    for item in text.split(',') {
        mask |= parse_item(field, item)?;
    }
    if field == CronField::DayOfWeek && bit(mask, 7) {
        mask = (mask & !(1 << 7)) | 1; // 7 is Sunday too.
    }
    Ok(mask)
}

/// Parses one list item: `*`, `v`, `a-b`, each optionally followed by `/step`.
fn parse_item(field: CronField, item: &str) -> Result<u64, CronError> {
    if item.is_empty() {
        return Err(invalid(field, item, TokenProblem::Empty));
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    let (min, max) = field.bounds();
    let (start, end) = if base == "*" {
        field.star()
    } else if let Some((a, b)) = base.split_once('-') {
        let (a, b) = (parse_value(field, a)?, parse_value(field, b)?);
        if a > b {
            return Err(invalid(field, item, TokenProblem::ReversedRange));
        }
        (a, b)
    } else {
        let v = parse_value(field, base)?;
        // `a/n` runs from `a` to the end of the field, as in Vixie cron.
        (
            v,
            if step.is_some() {
                field.star().1.max(v)
            } else {
                v
            },
        )
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let bad = || invalid(field, s, TokenProblem::BadStep { max });
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match s.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(bad()),
            }
        }
    };
    debug_assert!(min <= start && end <= max);
    let mut mask = 0_u64;
    let mut v = start;
    while v <= end {
        mask |= 1 << v;
        v += step;
    }
    Ok(mask)
}

/// Parses a number within the field's bounds, or a name the field knows.
fn parse_value(field: CronField, token: &str) -> Result<u32, CronError> {
    if token.is_empty() {
        return Err(invalid(field, token, TokenProblem::Empty));
    }
    if token.contains(['-', '/']) {
        return Err(invalid(field, token, TokenProblem::Malformed));
    }
    let (min, max) = field.bounds();
    if token.bytes().all(|b| b.is_ascii_digit()) {
        // Leading zeros are fine (`05`); absurdly long numbers are out of range.
        let value = token.trim_start_matches('0');
        return match value.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            Err(_) if value.is_empty() && min == 0 => Ok(0),
            _ => Err(invalid(field, token, TokenProblem::OutOfRange { min, max })),
        };
    }
    field.name_value(token).ok_or_else(|| {
        invalid(
            field,
            token,
            TokenProblem::NotANumber {
                names: !field.names().is_empty(),
            },
        )
    })
}

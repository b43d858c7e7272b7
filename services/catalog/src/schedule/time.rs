//! Time zones, times of day and the "at this local time on these weekdays" schedule of
//! deployment rules.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use thiserror::Error;

/// Why a time zone is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimezoneError {
    /// Blank (callers that default to UTC check for that first).
    #[error("time zone is empty")]
    Empty,
    /// Not a name of the IANA time zone database.
    #[error("unknown time zone {name:?}; use an IANA name such as \"Europe/Paris\"")]
    Unknown {
        /// The name as given.
        name: String,
    },
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`), exactly as the database
/// spells it: no offsets like `+02:00`, since those do not follow daylight saving time.
pub fn parse_timezone(name: &str) -> Result<Tz, TimezoneError> {
    if name.is_empty() {
        return Err(TimezoneError::Empty);
    }
    Tz::from_str(name).map_err(|_| TimezoneError::Unknown {
        name: name.to_owned(),
    })
}

/// Why a time of day is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeOfDayError {
    /// Not `HH:MM`.
    #[error("time {text:?} is not written HH:MM")]
    Format {
        /// The text as given.
        text: String,
    },
    /// Hour over 23.
    #[error("hour {hours} is out of range 0-23")]
    Hours {
        /// The hour given.
        hours: u32,
    },
    /// Minute over 59.
    #[error("minute {minutes} is out of range 0-59")]
    Minutes {
        /// The minute given.
        minutes: u32,
    },
}

/// A time of day from the API's `TimeOfDay { hours, minutes }`.
pub fn time_of_day(hours: u32, minutes: u32) -> Result<NaiveTime, TimeOfDayError> {
    if hours > 23 {
        return Err(TimeOfDayError::Hours { hours });
    }
    if minutes > 59 {
        return Err(TimeOfDayError::Minutes { minutes });
    }
    NaiveTime::from_hms_opt(hours, minutes, 0).ok_or(TimeOfDayError::Hours { hours })
}

/// Parses `HH:MM` (24-hour clock, two digits each, `00:00` to `23:59`).
pub fn parse_time_of_day(text: &str) -> Result<NaiveTime, TimeOfDayError> {
    let format = || TimeOfDayError::Format {
        text: text.to_owned(),
    };
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| {
                d.iter()
                    .fold(0_u32, |acc, b| acc * 10 + u32::from(b - b'0'))
            })
    };
    if bytes.len() != 5 || bytes[2] != b':' {
        return Err(format());
    }
    let (Some(hours), Some(minutes)) = (digits(0..2), digits(3..5)) else {
        return Err(format());
    };
    time_of_day(hours, minutes)
}

/// Why a [`WeekdayTime`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WeekdayTimeError {
    /// No weekday at all: the rule would never act.
    #[error("at least one weekday is required")]
    NoWeekdays,
    /// A weekday listed twice.
    #[error("weekday {weekday} is listed more than once")]
    DuplicateWeekday {
        /// The repeated day.
        weekday: Weekday,
    },
}

/// A local time of day on some weekdays: when a deployment rule starts or stops
/// environments. Unlike cron, a local time skipped by a daylight-saving change acts at
/// the first minute after the gap (an environment must still stop that day); a repeated
/// one acts once, at its first occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekdayTime {
    time: NaiveTime,
    weekdays: u8,
}

impl WeekdayTime {
    /// `time` (seconds dropped) on each of `weekdays`: at least one, each once.
    pub fn new(time: NaiveTime, weekdays: &[Weekday]) -> Result<Self, WeekdayTimeError> {
        let mut mask = 0_u8;
        for day in weekdays {
            let bit = 1 << day.num_days_from_monday();
            if mask & bit != 0 {
                return Err(WeekdayTimeError::DuplicateWeekday { weekday: *day });
            }
            mask |= bit;
        }
        if mask == 0 {
            return Err(WeekdayTimeError::NoWeekdays);
        }
        let time = time
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(time);
        Ok(Self {
            time,
            weekdays: mask,
        })
    }

    /// The local time of day.
    pub fn time(&self) -> NaiveTime {
        self.time
    }

    /// Whether the rule acts on `day`.
    pub fn on(&self, day: Weekday) -> bool {
        self.weekdays & (1 << day.num_days_from_monday()) != 0
    }

    /// The first time strictly after `after` the rule acts, in `after`'s time zone.
    pub fn next_after<T: TimeZone>(&self, after: &DateTime<T>) -> Option<DateTime<T>> {
        let tz = after.timezone();
        let mut date = after.naive_local().date().pred_opt()?;
        // The day before covers a gap-shifted time landing after midnight; eight more
        // days reach every weekday.
        for _ in 0..10 {
            if self.on(date.weekday()) {
                let mut local = date.and_time(self.time);
                // Inside a gap, walk to its end (gaps last at most a day anywhere).
                for _ in 0..=24 * 60 {
                    if let Some(found) = tz.from_local_datetime(&local).earliest() {
                        if found > *after {
                            return Some(found);
                        }
                        break;
                    }
                    local = local.checked_add_signed(Duration::minutes(1))?;
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn cron(expr: &str) -> CronSchedule {
    match CronSchedule::parse(expr) {
        Ok(s) => s,
        Err(e) => panic!("{expr}: {e}"),
    }
}

fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Tz> {
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn next<T: TimeZone>(expr: &str, after: &DateTime<T>) -> DateTime<T> {
    cron(expr).next_after(after).unwrap()
}

// ---- parsing ------------------------------------------------------------------------

#[test]
fn valid_expressions() {
    for expr in [
        "* * * * *",
        "0 3 * * 1-5",
        "*/5 * * * *",
        "1-10/2 * * * *",
        "0,15,30,45 0-23/6 1,15 * *",
        "0 0 1 JAN *",
        "0 0 * jan-mar,Dec mon-FRI",
        "0 0 * * 7",
        "0 0 * * 0",
        "0 0 * * 5-7",
        "5/15 * * * *",
        "00 05 01 01 00",
        "59 23 31 12 6",
        "0 0 29 2 *",
        "  0   3  *  *  *  ",
        "0\t3 * * *",
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@DAILY",
    ] {
        assert!(CronSchedule::parse(expr).is_ok(), "{expr}");
    }
}

#[test]
fn invalid_expressions_name_field_and_token() {
    use CronField::*;
    let cases: &[(&str, CronField, &str)] = &[
        ("60 * * * *", Minute, "60"),
        ("* 24 * * *", Hour, "24"),
        ("* * 0 * *", DayOfMonth, "0"),
        ("* * 32 * *", DayOfMonth, "32"),
        ("* * * 13 *", Month, "13"),
        ("* * * 0 *", Month, "0"),
        ("* * * * 8", DayOfWeek, "8"),
        ("* * * FOO *", Month, "FOO"),
        ("* * * * MONDAY", DayOfWeek, "MONDAY"),
        ("* * * * JAN", DayOfWeek, "JAN"),
        ("MON * * * *", Minute, "MON"),
        ("*/0 * * * *", Minute, "0"),
        ("*/x * * * *", Minute, "x"),
        ("*/ * * * *", Minute, ""),
        ("1,,2 * * * *", Minute, ""),
        ("10-5 * * * *", Minute, "10-5"),
        ("1-2-3 * * * *", Minute, "2-3"),
        ("1/2/3 * * * *", Minute, "2/3"),
        ("-1 * * * *", Minute, ""),
        ("* * * * 1-", DayOfWeek, ""),
        ("? * * * *", Minute, "?"),
        ("L * * * *", Minute, "L"),
        (
            "99999999999999999999 * * * *",
            Minute,
            "99999999999999999999",
        ),
        ("+5 * * * *", Minute, "+5"),
    ];
    for (expr, field, token) in cases {
        match CronSchedule::parse(expr) {
            Err(CronError::InvalidToken {
                field: f, token: t, ..
            }) => {
                assert_eq!((&f, t.as_str()), (field, *token), "{expr}");
            }
            other => panic!("{expr}: {other:?}"),
        }
    }
    assert_eq!(CronSchedule::parse(""), Err(CronError::Empty));
    assert_eq!(CronSchedule::parse("   "), Err(CronError::Empty));
    assert_eq!(
        CronSchedule::parse("* * * *"),
        Err(CronError::FieldCount { found: 4 })
    );
    assert_eq!(
        CronSchedule::parse("* * * * * *"),
        Err(CronError::FieldCount { found: 6 })
    );
    assert!(matches!(
        CronSchedule::parse("@reboot"),
        Err(CronError::UnknownMacro { .. })
    ));
    assert!(matches!(
        CronSchedule::parse("@daily 5"),
        Err(CronError::UnknownMacro { .. })
    ));
    assert_eq!(
        CronSchedule::parse("0 0 30 2 *"),
        Err(CronError::NeverFires)
    );
    assert_eq!(
        CronSchedule::parse("0 0 31 4,6,9,11 *"),
        Err(CronError::NeverFires)
    );
    // With a restricted day of week the OR rule makes it fire on Mondays.
    assert!(CronSchedule::parse("0 0 30 2 1").is_ok());
}

#[test]
fn error_messages_read_well() {
    let err = CronSchedule::parse("* * * * 8").unwrap_err();
    assert_eq!(
        err.to_string(),
        "day-of-week field: \"8\": out of range 0-7"
    );
    let err = CronSchedule::parse("*/0 * * * *").unwrap_err();
    assert_eq!(
        err.to_string(),
        "minute field: \"0\": step must be a number from 1 to 59"
    );
}

// ---- evaluation ---------------------------------------------------------------------

#[test]
fn next_times_in_utc() {
    let t = utc(2024, 1, 1, 10, 7); // a Monday
    assert_eq!(next("* * * * *", &t), utc(2024, 1, 1, 10, 8));
    assert_eq!(next("*/5 * * * *", &t), utc(2024, 1, 1, 10, 10));
    assert_eq!(next("0 3 * * 1-5", &t), utc(2024, 1, 2, 3, 0));
    assert_eq!(next("@hourly", &t), utc(2024, 1, 1, 11, 0));
    assert_eq!(next("@daily", &t), utc(2024, 1, 2, 0, 0));
    assert_eq!(next("@weekly", &t), utc(2024, 1, 7, 0, 0));
    assert_eq!(next("@monthly", &t), utc(2024, 2, 1, 0, 0));
    assert_eq!(next("@yearly", &t), utc(2025, 1, 1, 0, 0));
    assert_eq!(next("0 0 29 2 *", &t), utc(2024, 2, 29, 0, 0));
    assert_eq!(
        next("0 0 29 2 *", &utc(2024, 3, 1, 0, 0)),
        utc(2028, 2, 29, 0, 0)
    );
    assert_eq!(next("0 12 * * 7", &t), utc(2024, 1, 7, 12, 0));
    assert_eq!(next("0 12 * * sun", &t), utc(2024, 1, 7, 12, 0));
    assert_eq!(next("59 23 31 12 *", &t), utc(2024, 12, 31, 23, 59));
    // Strictly after, even on a firing minute, and seconds are ignored.
    assert_eq!(next("7 10 * * *", &t), utc(2024, 1, 2, 10, 7));
    let with_seconds = Utc.with_ymd_and_hms(2024, 1, 1, 10, 7, 30).unwrap();
    assert_eq!(next("* * * * *", &with_seconds), utc(2024, 1, 1, 10, 8));
}

#[test]
fn day_of_month_or_day_of_week() {
    // Both restricted: the 13th or any Friday.
    let s = cron("0 0 13 * 5");
    assert_eq!(
        s.next_after(&utc(2024, 1, 1, 0, 0)).unwrap(),
        utc(2024, 1, 5, 0, 0)
    );
    assert_eq!(
        s.next_after(&utc(2024, 1, 12, 0, 0)).unwrap(),
        utc(2024, 1, 13, 0, 0)
    );
    // Day of week starting with '*': both must match (Friday the 13th).
    let s = cron("0 0 13 * */5");
    assert_eq!(
        s.next_after(&utc(2024, 1, 1, 0, 0)).unwrap(),
        utc(2024, 9, 13, 0, 0)
    );
    // Day of month unrestricted: only the weekday counts.
    let s = cron("0 0 * * 5");
    assert_eq!(
        s.next_after(&utc(2024, 1, 1, 0, 0)).unwrap(),
        utc(2024, 1, 5, 0, 0)
    );
}

#[test]
fn dst_europe_berlin() {
    let tz: Tz = parse_timezone("Europe/Berlin").unwrap();
    // 2024-03-31 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
    let before = local(tz, 2024, 3, 31, 0, 0);
    let got = next("30 2 * * *", &before);
    assert_eq!(got, local(tz, 2024, 4, 1, 2, 30));
    assert_eq!(got.with_timezone(&Utc), utc(2024, 4, 1, 0, 30));
    // Every 15 minutes goes straight from 01:45 to 03:00.
    assert_eq!(
        next("*/15 * * * *", &local(tz, 2024, 3, 31, 1, 45)),
        local(tz, 2024, 3, 31, 3, 0)
    );
    // 2024-10-27 03:00 CEST falls back to 02:00 CET: 02:30 happens twice, fires once.
    let first = next("30 2 * * *", &local(tz, 2024, 10, 27, 0, 0));
    assert_eq!(first.with_timezone(&Utc), utc(2024, 10, 27, 0, 30));
    let second = next("30 2 * * *", &first);
    assert_eq!(second.with_timezone(&Utc), utc(2024, 10, 28, 1, 30));
    // Every 30 minutes through the repeated hour: 02:00, 02:30 (CEST), then 03:00 CET.
    let s = cron("*/30 * * * *");
    let mut t = local(tz, 2024, 10, 27, 1, 45);
    let mut seen = Vec::new();
    for _ in 0..3 {
        t = s.next_after(&t).unwrap();
        seen.push(t.with_timezone(&Utc));
    }
    assert_eq!(
        seen,
        [
            utc(2024, 10, 27, 0, 0),
            utc(2024, 10, 27, 0, 30),
            utc(2024, 10, 27, 2, 0)
        ]
    );
}

#[test]
fn dst_america_new_york() {
    let tz: Tz = parse_timezone("America/New_York").unwrap();
    // 2024-03-10 02:00 EST jumps to 03:00 EDT.
    let got = next("0 2 * * *", &local(tz, 2024, 3, 10, 0, 0));
    assert_eq!(got.with_timezone(&Utc), utc(2024, 3, 11, 6, 0));
    assert_eq!(
        next("15 3 * * *", &local(tz, 2024, 3, 10, 0, 0)).with_timezone(&Utc),
        utc(2024, 3, 10, 7, 15)
    );
    // 2024-11-03 02:00 EDT falls back to 01:00 EST: 01:30 fires once, in EDT.
    let first = next("30 1 * * *", &local(tz, 2024, 11, 3, 0, 0));
    assert_eq!(first.with_timezone(&Utc), utc(2024, 11, 3, 5, 30));
    let second = next("30 1 * * *", &first);
    assert_eq!(second.with_timezone(&Utc), utc(2024, 11, 4, 6, 30));
    // Starting inside the repeated hour (second pass), the next run is after it.
    let in_second_pass = tz.from_utc_datetime(&utc(2024, 11, 3, 6, 10).naive_utc());
    assert_eq!(
        next("*/20 * * * *", &in_second_pass).with_timezone(&Utc),
        utc(2024, 11, 3, 7, 0)
    );
}

// ---- time zones, times of day, weekday times --------------------------------------

#[test]
fn timezones() {
    assert_eq!(parse_timezone("Europe/Paris"), Ok(chrono_tz::Europe::Paris));
    assert_eq!(parse_timezone("UTC"), Ok(chrono_tz::UTC));
    assert_eq!(parse_timezone(""), Err(TimezoneError::Empty));
    for bad in [
        "Mars/Olympus",
        "+02:00",
        "europe/paris",
        " Europe/Paris",
        "Local",
    ] {
        assert!(
            matches!(parse_timezone(bad), Err(TimezoneError::Unknown { .. })),
            "{bad}"
        );
    }
}

#[test]
fn times_of_day() {
    let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    assert_eq!(parse_time_of_day("00:00"), Ok(t(0, 0)));
    assert_eq!(parse_time_of_day("09:05"), Ok(t(9, 5)));
    assert_eq!(parse_time_of_day("23:59"), Ok(t(23, 59)));
    assert_eq!(
        parse_time_of_day("24:00"),
        Err(TimeOfDayError::Hours { hours: 24 })
    );
    assert_eq!(
        parse_time_of_day("12:60"),
        Err(TimeOfDayError::Minutes { minutes: 60 })
    );
    for bad in [
        "9:05",
        "09:5",
        "0905",
        "09-05",
        "",
        "ab:cd",
        "09:05:00",
        " 9:05",
        "+9:05",
        "٠٩:٠٥",
    ] {
        assert!(
            matches!(parse_time_of_day(bad), Err(TimeOfDayError::Format { .. })),
            "{bad}"
        );
    }
    assert_eq!(time_of_day(7, 30), Ok(t(7, 30)));
    assert_eq!(
        time_of_day(7, 60),
        Err(TimeOfDayError::Minutes { minutes: 60 })
    );
}

#[test]
fn weekday_times() {
    let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    assert_eq!(
        WeekdayTime::new(t(8, 0), &[]),
        Err(WeekdayTimeError::NoWeekdays)
    );
    assert_eq!(
        WeekdayTime::new(t(8, 0), &[Weekday::Mon, Weekday::Mon]),
        Err(WeekdayTimeError::DuplicateWeekday {
            weekday: Weekday::Mon
        })
    );
    let workdays = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    let rule = WeekdayTime::new(t(19, 0), &workdays).unwrap();
    // Friday 2024-01-05 20:00 → Monday 19:00.
    assert_eq!(
        rule.next_after(&utc(2024, 1, 5, 20, 0)).unwrap(),
        utc(2024, 1, 8, 19, 0)
    );
    assert_eq!(
        rule.next_after(&utc(2024, 1, 5, 18, 59)).unwrap(),
        utc(2024, 1, 5, 19, 0)
    );
    let berlin: Tz = parse_timezone("Europe/Berlin").unwrap();
    // A skipped time acts at the first minute after the gap (Sunday 2024-03-31).
    let sunday = WeekdayTime::new(t(2, 30), &[Weekday::Sun]).unwrap();
    let got = sunday
        .next_after(&local(berlin, 2024, 3, 30, 12, 0))
        .unwrap();
    assert_eq!(got, local(berlin, 2024, 3, 31, 3, 0));
    // ... and only once: after it, the next is a week later.
    assert_eq!(
        sunday.next_after(&got).unwrap(),
        local(berlin, 2024, 4, 7, 2, 30)
    );
    // A repeated time acts once (Sunday 2024-10-27).
    let first = sunday
        .next_after(&local(berlin, 2024, 10, 26, 12, 0))
        .unwrap();
    assert_eq!(first.with_timezone(&Utc), utc(2024, 10, 27, 0, 30));
    assert_eq!(
        sunday.next_after(&first).unwrap(),
        local(berlin, 2024, 11, 3, 2, 30)
    );
}

// ---- properties ---------------------------------------------------------------------

fn arb_field(min: u32, max: u32, names: &'static [&'static str]) -> BoxedStrategy<String> {
    let value = move || {
        prop_oneof![
            (min..=max).prop_map(|v| v.to_string()),
            proptest::sample::select(names.to_vec()).prop_map(str::to_owned),
        ]
    };
    let value = if names.is_empty() {
        (min..=max).prop_map(|v| v.to_string()).boxed()
    } else {
        value().boxed()
    };
    let item = prop_oneof![
        Just("*".to_owned()),
        (1..=max).prop_map(|s| format!("*/{s}")),
        value.clone(),
        (min..=max, min..=max, 1..=max).prop_map(|(a, b, s)| {
            let (a, b) = (a.min(b), a.max(b));
            format!("{a}-{b}/{s}")
        }),
    ];
    proptest::collection::vec(item, 1..3)
        .prop_map(|items| items.join(","))
        .boxed()
}

fn arb_cron() -> impl Strategy<Value = String> {
    (
        arb_field(0, 59, &[]),
        arb_field(0, 23, &[]),
        arb_field(1, 31, &[]),
        arb_field(1, 12, &["JAN", "feb", "Mar", "DEC"]),
        arb_field(0, 7, &["SUN", "mon", "Sat"]),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn arb_zone() -> impl Strategy<Value = Tz> {
    proptest::sample::select(vec![
        chrono_tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe, // half-hour daylight saving shift
        chrono_tz::Asia::Kolkata,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = CronSchedule::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_cron_like_text(s in "[0-9*/,\\- a-zA-Z@]{0,30}") {
        let _ = CronSchedule::parse(&s);
    }

    #[test]
    fn next_after_is_later_and_matches(
        expr in arb_cron(),
        zone in arb_zone(),
        secs in 0_i64..4_000_000_000,
    ) {
        let schedule = match CronSchedule::parse(&expr) {
            Ok(s) => s,
            Err(CronError::NeverFires) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{expr}: {e}"))),
        };
        let after = zone.from_utc_datetime(&DateTime::from_timestamp(secs, 0).unwrap().naive_utc());
        let next = schedule.next_after(&after);
        prop_assert!(next.is_some(), "{expr} never fires after {after}");
        let next = next.unwrap();
        prop_assert!(next > after, "{expr}: {next} is not after {after}");
        prop_assert!(schedule.matches(&next), "{expr}: {next} does not match");
        prop_assert_eq!(next.second(), 0);
        // Nothing in between matched: check minute by minute when the gap is short.
        let gap = (next - after).num_minutes();
        if gap <= 3 * 24 * 60 {
            let mut t = after.with_second(0).unwrap() + chrono::Duration::minutes(1);
            while t < next {
                let ambiguous_repeat = zone
                    .from_local_datetime(&t.naive_local())
                    .earliest()
                    .is_some_and(|first| first < t);
                prop_assert!(
                    !schedule.matches(&t) || ambiguous_repeat,
                    "{expr}: {t} matches before {next}"
                );
                t += chrono::Duration::minutes(1);
            }
        }
    }

    #[test]
    fn weekday_time_is_later_and_on_a_listed_day(
        hours in 0_u32..24,
        minutes in 0_u32..60,
        days in proptest::sample::subsequence(
            vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun],
            1..=7,
        ),
        zone in arb_zone(),
        secs in 0_i64..4_000_000_000,
    ) {
        let rule = WeekdayTime::new(time_of_day(hours, minutes).unwrap(), &days).unwrap();
        let after = zone.from_utc_datetime(&DateTime::from_timestamp(secs, 0).unwrap().naive_utc());
        let next = rule.next_after(&after).unwrap();
        prop_assert!(next > after);
        prop_assert!((next - after).num_days() <= 7);
        let naive = next.naive_local();
        // Either the exact local time, or the end of a gap that swallowed it.
        let exact = naive.time() == rule.time() && rule.on(naive.date().weekday());
        let scheduled = naive.date().and_time(rule.time());
        let shifted = zone.from_local_datetime(&scheduled).earliest().is_none();
        prop_assert!(exact || shifted, "{next} for {hours}:{minutes} on {days:?}");
    }
}

#[test]
fn never_fires_check_agrees_with_search() {
    // Leap day on a Sunday, day-of-week starting with '*' so both must match: rare but
    // real, found by the search.
    let s = cron("0 0 29 2 */7");
    let got = s.next_after(&utc(2024, 3, 1, 0, 0)).unwrap();
    assert_eq!(got, utc(2032, 2, 29, 0, 0));
    assert_eq!(
        NaiveDate::from_ymd_opt(2032, 2, 29).unwrap().weekday(),
        Weekday::Sun
    );
}

//! When a schedule ticks: a standard 5-field cron expression read in a time zone, or a fixed
//! interval (ticks at whole multiples of it since the Unix epoch, so every runner agrees on them);
//! and the date a tick gives its run.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Most ticks counted between two times; a longer outage counts as this many missed.
const MOST_COUNTED: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Timing {
    clock: Clock,
    zone: Tz,
}

#[derive(Debug, Clone)]
enum Clock {
    Cron(Box<Cron>),
    Every(Duration),
}

impl Timing {
    /// Exactly one of `cron` and `every_secs`, in the IANA time zone `timezone`; the error says
    /// what is wrong with which.
    pub fn new(cron: Option<&str>, every_secs: Option<i64>, timezone: &str) -> Result<Self, String> {
        let zone = Tz::from_str(timezone).map_err(|_| {
            format!("timezone: {timezone:?} is not an IANA time zone (e.g. UTC, Europe/Oslo)")
        })?;
        let clock = match (cron, every_secs) {
            (Some(cron), None) => Clock::Cron(Box::new(parse_cron(cron)?)),
            (None, Some(secs)) if secs >= 1 => Clock::Every(Duration::from_secs(secs as u64)),
            (None, Some(secs)) => return Err(format!("every: {secs} s; an interval is at least 1 s")),
            _ => return Err("give exactly one of cron and every".into()),
        };
        Ok(Self { clock, zone })
    }

    /// The latest tick after `after` and at or before `until`, and how many ticks there are in
    /// that span (itself included).
    pub fn due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<(DateTime<Utc>, u64)> {
        match &self.clock {
            Clock::Every(interval) => {
                let step = interval.as_millis() as i64;
                let first = after.timestamp_millis().div_euclid(step) + 1;
                let last = until.timestamp_millis().div_euclid(step);
                (last >= first).then(|| (millis(last * step), (last - first + 1) as u64))
            }
            Clock::Cron(_) => {
                let mut latest = None;
                let mut count = 0;
                let mut ticks = self.ticks_after(after);
                while count < MOST_COUNTED {
                    match ticks.next() {
                        Some(tick) if tick <= until => {
                            latest = Some(tick);
                            count += 1;
                        }
                        _ => break,
                    }
                }
                latest.map(|tick| (tick, count))
            }
        }
    }

    /// The next `n` ticks after `after`.
    pub fn next(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.ticks_after(after).take(n).collect()
    }

    /// The tick's date in the schedule's time zone.
    pub fn date_of(&self, tick: DateTime<Utc>) -> NaiveDate {
        tick.with_timezone(&self.zone).date_naive()
    }

    /// The tick `at` names: an instant that is one of the schedule's ticks, or a date (in the
    /// schedule's time zone), standing for its first tick that day. The error says why it names
    /// none, and where the nearest one is.
    pub fn tick_named(&self, at: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(date) = NaiveDate::parse_from_str(at, "%Y-%m-%d") {
            let midnight = self
                .zone
                .from_local_datetime(&date.and_time(NaiveTime::MIN))
                .earliest()
                .ok_or_else(|| format!("at: {at} has no midnight in {}", self.zone))?
                .with_timezone(&Utc);
            let tick = self.first_from(midnight)?;
            if self.date_of(tick) != date {
                return Err(format!(
                    "at: the schedule has no tick on {at}; its next is {}",
                    tick.to_rfc3339()
                ));
            }
            return Ok(tick);
        }
        let instant = DateTime::parse_from_rfc3339(at)
            .map_err(|_| {
                format!("at: {at:?} is neither a date (2026-11-30) nor an RFC 3339 time (2026-11-30T06:00:00+01:00)")
            })?
            .with_timezone(&Utc);
        let tick = self.first_from(instant)?;
        if tick != instant {
            return Err(format!(
                "at: {at} is not one of the schedule's ticks; the next after it is {}",
                tick.to_rfc3339()
            ));
        }
        Ok(tick)
    }

    /// The first tick at or after `from`.
    fn first_from(&self, from: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        self.ticks_after(from - chrono::Duration::milliseconds(1))
            .next()
            .ok_or_else(|| "at: the schedule has no tick after it".to_string())
    }

    fn ticks_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut last = after;
        std::iter::from_fn(move || {
            let next = match &self.clock {
                Clock::Every(interval) => {
                    let step = interval.as_millis() as i64;
                    millis((last.timestamp_millis().div_euclid(step) + 1) * step)
                }
                // Cron ticks fall on whole seconds; croner keeps a fraction it is given.
                Clock::Cron(cron) => cron
                    .find_next_occurrence(&last.trunc_subsecs(0).with_timezone(&self.zone), false)
                    .ok()?
                    .with_timezone(&Utc),
            };
            last = next;
            Some(next)
        })
    }
}

fn millis(at: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn parse_cron(pattern: &str) -> Result<Cron, String> {
    let fields = pattern.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron: {pattern:?} has {fields} fields; give the standard 5 (minute hour day-of-month month \
             day-of-week), or use every for intervals in seconds"
        ));
    }
    Cron::from_str(pattern).map_err(|error| format!("cron: {pattern:?}: {error}"))
}

/// An interval as `90`, `90s`, `15m`, `2h` or `1d`, in seconds.
pub fn parse_every(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "every: {text:?}; give seconds, or a number with s, m, h or d"
            ));
        }
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|secs| *secs >= 1)
        .ok_or_else(|| format!("every: {text:?}; give a whole number of at least 1 s, e.g. 5s or 15m"))
}

/// `value` with `{tick_date}` (or `{tick_date-N}`, `{tick_date+N}`, N days) replaced by the
/// tick's date as `YYYY-MM-DD`.
pub fn with_tick_date(value: &str, date: NaiveDate) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("{tick_date") {
        out.push_str(&rest[..start]);
        let tail = &rest[start + "{tick_date".len()..];
        let end = tail
            .find('}')
            .ok_or_else(|| format!("{value:?}: {{tick_date… is not closed"))?;
        let days = match &tail[..end] {
            "" => 0,
            offset => offset
                .parse::<i64>()
                .ok()
                .filter(|_| offset.starts_with(['+', '-']))
                .ok_or_else(|| {
                    format!("{value:?}: write {{tick_date}}, {{tick_date-N}} or {{tick_date+N}}")
                })?,
        };
        let shifted = date
            .checked_add_signed(chrono::Duration::days(days))
            .ok_or_else(|| format!("{value:?}: the date is out of range"))?;
        out.push_str(&shifted.format("%Y-%m-%d").to_string());
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn intervals_tick_on_multiples_and_coalesce_what_was_missed() {
        let every = Timing::new(None, Some(5), "UTC").unwrap();
        assert_eq!(
            every.next(at("2026-11-30T10:00:02Z"), 2),
            [at("2026-11-30T10:00:05Z"), at("2026-11-30T10:00:10Z")]
        );
        assert_eq!(
            every.due(at("2026-11-30T10:00:05Z"), at("2026-11-30T10:00:09Z")),
            None
        );
        assert_eq!(
            every.due(at("2026-11-30T10:00:05Z"), at("2026-11-30T10:01:02Z")),
            Some((at("2026-11-30T10:01:00Z"), 11))
        );
    }

    #[test]
    fn cron_ticks_in_its_time_zone() {
        // 06:00 in Oslo is 05:00 UTC in winter.
        let daily = Timing::new(Some("0 6 * * *"), None, "Europe/Oslo").unwrap();
        assert_eq!(
            daily.next(at("2026-11-30T12:00:00Z"), 2),
            [at("2026-12-01T05:00:00Z"), at("2026-12-02T05:00:00Z")]
        );
        // Three days down: three ticks missed, the latest run.
        assert_eq!(
            daily.due(at("2026-11-28T05:00:00Z"), at("2026-12-01T07:00:00Z")),
            Some((at("2026-12-01T05:00:00Z"), 3))
        );
        // 23:30 UTC on the 30th is already the 1st in Tokyo.
        let tokyo = Timing::new(Some("30 8 * * *"), None, "Asia/Tokyo").unwrap();
        let tick = tokyo.next(at("2026-11-30T20:00:00Z"), 1)[0];
        assert_eq!(tick, at("2026-11-30T23:30:00Z"));
        assert_eq!(tokyo.date_of(tick).to_string(), "2026-12-01");
    }

    #[test]
    fn cron_ticks_fall_on_whole_seconds_whatever_the_time_they_follow() {
        let daily = Timing::new(Some("0 6 * * *"), None, "UTC").unwrap();
        let after = at("2026-11-30T12:34:56.789Z");
        assert_eq!(daily.next(after, 1), [at("2026-12-01T06:00:00Z")]);
        assert_eq!(
            daily.due(after, at("2026-12-01T07:00:00Z")),
            Some((at("2026-12-01T06:00:00Z"), 1))
        );
    }

    #[test]
    fn a_tick_is_named_by_its_instant_or_its_date() {
        let daily = Timing::new(Some("0 6 * * *"), None, "Europe/Oslo").unwrap();
        // Summer time in October, winter time in November.
        assert_eq!(daily.tick_named("2026-10-01"), Ok(at("2026-10-01T04:00:00Z")));
        assert_eq!(daily.tick_named("2026-11-15"), Ok(at("2026-11-15T05:00:00Z")));
        assert_eq!(
            daily.tick_named("2026-11-15T06:00:00+01:00"),
            Ok(at("2026-11-15T05:00:00Z"))
        );
        let off = daily.tick_named("2026-11-15T06:30:00+01:00").unwrap_err();
        assert!(
            off.contains("not one of the schedule's ticks") && off.contains("2026-11-16T05:00:00"),
            "{off}"
        );
        assert!(
            daily
                .tick_named("15/11/2026")
                .unwrap_err()
                .contains("neither a date")
        );
        let weekly = Timing::new(Some("0 6 * * 1"), None, "UTC").unwrap();
        let none = weekly.tick_named("2026-12-01").unwrap_err();
        assert!(
            none.contains("no tick on 2026-12-01") && none.contains("2026-12-07T06:00:00"),
            "{none}"
        );
        let every = Timing::new(None, Some(5), "UTC").unwrap();
        assert_eq!(
            every.tick_named("2026-12-01T10:00:05Z"),
            Ok(at("2026-12-01T10:00:05Z"))
        );
        assert!(every.tick_named("2026-12-01T10:00:06Z").is_err());
    }

    #[test]
    fn bad_timings_say_what_is_wrong() {
        let error =
            |cron: Option<&str>, every: Option<i64>, zone: &str| Timing::new(cron, every, zone).unwrap_err();
        assert!(error(Some("* * * * * *"), None, "UTC").contains("6 fields"));
        assert!(error(Some("61 * * * *"), None, "UTC").starts_with("cron:"));
        assert!(error(None, None, "UTC").contains("exactly one"));
        assert!(error(Some("* * * * *"), Some(5), "UTC").contains("exactly one"));
        assert!(error(None, Some(0), "UTC").contains("at least 1 s"));
        assert!(error(None, Some(5), "Mars/Olympus").starts_with("timezone:"));
        assert_eq!(parse_every("15m"), Ok(900));
        assert_eq!(parse_every("5"), Ok(5));
        assert!(parse_every("5 weeks").is_err() && parse_every("0s").is_err() && parse_every("").is_err());
    }

    #[test]
    fn a_tick_gives_its_date_and_days_around_it() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(
            with_tick_date("exports/{tick_date}/{tick_date-1}_{tick_date+30}", date).unwrap(),
            "exports/2026-12-01/2026-11-30_2026-12-31"
        );
        assert_eq!(with_tick_date("no date", date).unwrap(), "no date");
        assert!(with_tick_date("{tick_date*2}", date).is_err());
        assert!(with_tick_date("{tick_date", date).is_err());
    }
}

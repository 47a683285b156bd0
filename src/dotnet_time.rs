//! Date and time text exactly as the .NET side writes it.
//!
//! Upstream stores and returns `DateTime` values whose text form differs by layer:
//! System.Text.Json and Newtonsoft write `2026-11-24T15:33:59.1234567Z` (fraction trimmed of
//! trailing zeros, dropped when zero), EF Core's SQLite provider writes
//! `2026-11-24 15:33:59.1234567` (same trimming, space, no zone). .NET keeps 100 ns ticks, so
//! sub-tick nanoseconds are truncated. Parsing accepts every form either side may have written.

use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The current UTC time truncated to .NET's 100 ns tick.
pub fn now_utc() -> OffsetDateTime {
    truncate_to_tick(OffsetDateTime::now_utc())
}

/// Drops the nanoseconds .NET cannot represent.
pub fn truncate_to_tick(value: OffsetDateTime) -> OffsetDateTime {
    let nanos = value.nanosecond();
    value
        .replace_nanosecond(nanos - nanos % 100)
        .expect("a smaller nanosecond value is always valid")
}

/// `2026-11-24T15:33:59.1234567Z`: the form ASP.NET and Newtonsoft give a UTC `DateTime`.
pub fn format_iso_utc(value: OffsetDateTime) -> String {
    let utc = value.to_offset(UtcOffset::UTC);
    format!("{}T{}Z", format_date(utc.date()), format_time(utc.time()))
}

/// `2026-11-24 15:33:59.1234567`: the form EF Core's SQLite provider stores.
pub fn format_sqlite(value: OffsetDateTime) -> String {
    let utc = value.to_offset(UtcOffset::UTC);
    format!("{} {}", format_date(utc.date()), format_time(utc.time()))
}

fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn format_time(time: Time) -> String {
    let ticks = time.nanosecond() / 100;
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        time.hour(),
        time.minute(),
        time.second()
    );
    if ticks != 0 {
        let fraction = format!("{ticks:07}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

/// Why a date text could not be read.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not a date and time in a form .NET writes")]
pub struct DateParseError {
    text: String,
}

/// Parses `yyyy-MM-dd[T| ]HH:mm:ss[.fraction][Z|±hh:mm]`; no zone means UTC, as upstream
/// writes only UTC values.
pub fn parse(text: &str) -> Result<OffsetDateTime, DateParseError> {
    parse_inner(text.trim()).ok_or_else(|| DateParseError {
        text: text.chars().take(64).collect(),
    })
}

fn parse_inner(text: &str) -> Option<OffsetDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || !matches!(bytes[10], b'T' | b' ') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = i32::try_from(number(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?;
    let day = u8::try_from(number(8..10)?).ok()?;
    let hour = u8::try_from(number(11..13)?).ok()?;
    let minute = u8::try_from(number(14..16)?).ok()?;
    let second = u8::try_from(number(17..19)?).ok()?;

    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Keep at most nine digits (nanoseconds), then truncate to .NET's tick.
        let kept = &after_dot[..digits.min(9)];
        let scale = 10u32.pow(9 - u32::try_from(kept.len()).ok()?);
        nanos = kept.parse::<u32>().ok()? * scale;
        nanos -= nanos % 100;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => UtcOffset::UTC,
        zone => {
            let sign: i8 = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = zone[1..].split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            UtcOffset::from_hms(
                sign * hours.parse::<i8>().ok()?,
                sign * minutes.parse::<i8>().ok()?,
                0,
            )
            .ok()?
        }
    };
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_offset(offset)
            .to_offset(UtcOffset::UTC),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn iso_form_trims_trailing_zeros_like_dotnet() {
        assert_eq!(
            format_iso_utc(datetime!(2026-11-24 15:33:59.1234567 UTC)),
            "2026-11-24T15:33:59.1234567Z"
        );
        assert_eq!(
            format_iso_utc(datetime!(2026-11-24 15:33:59.12 UTC)),
            "2026-11-24T15:33:59.12Z"
        );
        assert_eq!(
            format_iso_utc(datetime!(2026-11-24 15:33:59 UTC)),
            "2026-11-24T15:33:59Z"
        );
    }

    #[test]
    fn sqlite_form_uses_a_space_and_no_zone() {
        assert_eq!(
            format_sqlite(datetime!(2021-08-20 15:59:54.0012 UTC)),
            "2021-08-20 15:59:54.0012"
        );
    }

    #[test]
    fn parses_every_form_dotnet_writes() {
        let expected = datetime!(2021-08-20 15:59:54.1234567 UTC);
        for text in [
            "2021-08-20 15:59:54.1234567",
            "2021-08-20T15:59:54.1234567Z",
            "2021-08-20T15:59:54.1234567+00:00",
            "2021-08-20T17:59:54.1234567+02:00",
            "2021-08-20T15:59:54.123456789Z",
        ] {
            assert_eq!(parse(text).unwrap(), expected, "{text}");
        }
        assert_eq!(
            parse("2021-08-20 15:59:54").unwrap(),
            datetime!(2021-08-20 15:59:54 UTC)
        );
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for text in [
            "",
            "yesterday",
            "2021-13-01 00:00:00",
            "2021-08-20X15:59:54",
            "2021-08-20 15:59:54.",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn round_trips_through_both_forms() {
        let now = now_utc();
        assert_eq!(parse(&format_iso_utc(now)).unwrap(), now);
        assert_eq!(parse(&format_sqlite(now)).unwrap(), now);
    }
}

//! Times in reports and on the command line: RFC 3339 in UTC, read with an
//! offset, written with milliseconds when there are any.

use std::time::{Duration, SystemTime};

/// `2022-09-07T08:18:25.197Z` (no fraction when it is whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let whole = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| Duration::from_secs(d.as_secs())).unwrap_or_default();
    let millis = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    let Ok(dt) = der::DateTime::from_unix_duration(whole) else { return format!("{t:?}") };
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minutes(),
        dt.seconds()
    );
    if millis == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{millis:03}Z")
    }
}

/// An RFC 3339 / xsd:dateTime time (`2022-09-07T08:08:01+00:00`,
/// `2022-09-07T08:18:25.197Z`), and whether it had a fraction of a second.
pub fn parse(text: &str) -> Option<(SystemTime, bool)> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't'])?;
    let (time, offset) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (t, o) = rest.split_at(at);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (h, m) = o[1..].split_once(':')?;
        let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
        if o.len() != 6 || h > 14 || m > 59 || (h == 14 && m > 0) {
            return None;
        }
        (t, sign * (h * 3600 + m * 60))
    };
    let mut d = date.split('-');
    let (year, month, day) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if d.next().is_some() || date.len() != 10 {
        return None;
    }
    let (hms, fraction) = match time.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => (w, Some(f)),
        Some(_) => return None,
        None => (time, None),
    };
    let mut t = hms.split(':');
    let (hour, minute, second) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    if t.next().is_some() || hms.len() != 8 {
        return None;
    }
    let utc = der::DateTime::new(year, month, day, hour, minute, second).ok()?.to_system_time();
    let mut at = if offset >= 0 {
        utc.checked_sub(Duration::from_secs(offset as u64))?
    } else {
        utc.checked_add(Duration::from_secs(offset.unsigned_abs()))?
    };
    if let Some(f) = fraction {
        let nanos: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
        at += Duration::from_nanos(nanos.parse().ok()?);
    }
    Some((at, fraction.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_with_offsets_and_fractions_and_written_in_utc() {
        let (t, fraction) = parse("2022-09-07T08:08:01+00:00").expect("time");
        assert!(!fraction);
        assert_eq!(rfc3339(t), "2022-09-07T08:08:01Z");
        let (t, fraction) = parse("2022-09-07T17:18:25.197+09:00").expect("time");
        assert!(fraction);
        assert_eq!(rfc3339(t), "2022-09-07T08:18:25.197Z");
        assert_eq!(parse("2022-09-07T08:18:25Z").map(|(t, _)| rfc3339(t)).as_deref(), Some("2022-09-07T08:18:25Z"));
        for bad in
            ["2022-09-07", "2022-09-07T08:18Z", "2022-9-7T08:18:25Z", "2022-09-07T08:18:25", "2022-09-07T08:18:25.Z"]
        {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}

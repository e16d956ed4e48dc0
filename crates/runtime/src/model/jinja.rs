//! The helpers transformers adds to its chat-template environment
//! (`utils/chat_template_utils.py`, `_cached_compile_jinja_template`), for minijinja:
//!
//! - `strftime_now(format)`: the current date and time formatted like Python's
//!   `datetime.now().strftime(format)` (Llama 3.1+ templates put "Today Date: 26 Jul 2024" in the
//!   system turn). braid formats UTC (transformers uses the machine's local time zone), from the
//!   system clock or a fixed instant ([`Clock`]).
//! - `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`: Python's
//!   `json.dumps` with those arguments. It replaces minijinja's built-in `tojson`, which writes
//!   compact JSON and escapes `<`, `>`, `&` and `'` for HTML, as Jinja's own filter does and
//!   transformers' override does not.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Where `strftime_now` takes the time from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The system clock, read at each call.
    System,
    /// A fixed instant, seconds since 1970-01-01T00:00:00Z (reproducible renders).
    Fixed(i64),
}

impl Clock {
    /// Seconds since the Unix epoch (negative before 1970).
    pub fn unix_seconds(self) -> i64 {
        match self {
            Clock::Fixed(s) => s,
            Clock::System => match SystemTime::now().duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            },
        }
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A UTC calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
    /// 1..=366
    yday: u32,
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// The proleptic Gregorian UTC date of `secs` seconds after the epoch: days are counted in
/// 400-year eras of 146097 days, each year starting on March 1 so that the leap day is last.
fn utc(secs: i64) -> DateTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as u32;
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let before: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap_shift = u32::from(month > 2 && is_leap(year));
    DateTime {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        weekday,
        yday: before[month as usize - 1] + day + leap_shift,
    }
}

/// `t` formatted by a Python/C `strftime` format: `%Y %y %m %d %e %j %H %I %M %S %p %b %h %B %a
/// %A %F %T %%`, and the glibc `%-X` forms without padding (`%-d`, `%-m`, `%-H`, `%-I`, `%-M`,
/// `%-S`, `%-j`).
///
/// Errors: a sentence naming an unsupported or unfinished directive.
fn strftime(t: DateTime, format: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let pad = spec != Some('-');
        if !pad {
            spec = chars.next();
        }
        let num = |out: &mut String, v: u32, width: usize| {
            if pad {
                let _ = write!(out, "{v:0width$}");
            } else {
                let _ = write!(out, "{v}");
            }
        };
        let hour12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        match spec {
            Some('Y') => {
                let _ = write!(out, "{}", t.year);
            }
            Some('y') => num(&mut out, t.year.rem_euclid(100) as u32, 2),
            Some('m') => num(&mut out, t.month, 2),
            Some('d') => num(&mut out, t.day, 2),
            Some('e') if pad => {
                let _ = write!(out, "{:2}", t.day);
            }
            Some('j') => num(&mut out, t.yday, 3),
            Some('H') => num(&mut out, t.hour, 2),
            Some('I') => num(&mut out, hour12, 2),
            Some('M') => num(&mut out, t.minute, 2),
            Some('S') => num(&mut out, t.second, 2),
            Some('p') if pad => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('b' | 'h') if pad => out.push_str(&MONTHS[t.month as usize - 1][..3]),
            Some('B') if pad => out.push_str(MONTHS[t.month as usize - 1]),
            Some('a') if pad => out.push_str(&WEEKDAYS[t.weekday as usize][..3]),
            Some('A') if pad => out.push_str(WEEKDAYS[t.weekday as usize]),
            Some('F') if pad => {
                let _ = write!(out, "{}-{:02}-{:02}", t.year, t.month, t.day);
            }
            Some('T') if pad => {
                let _ = write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
            }
            Some('%') if pad => out.push('%'),
            Some(other) => {
                let dash = if pad { "" } else { "-" };
                return Err(format!(
                    "strftime_now: unsupported directive %{dash}{other} in {format:?} (supported: \
                     %Y %y %m %d %e %j %H %I %M %S %p %b %h %B %a %A %F %T %%, and %-d %-m %-H \
                     %-I %-M %-S %-j)"
                ));
            }
            None => return Err(format!("strftime_now: {format:?} ends inside a directive")),
        }
    }
    Ok(out)
}

/// `strftime_now(format)` reading `clock`.
pub fn strftime_now(clock: Clock, format: &str) -> Result<Value, Error> {
    strftime(utc(clock.unix_seconds()), format)
        .map(Value::from)
        .map_err(|msg| Error::new(ErrorKind::InvalidOperation, msg))
}

/// transformers' `tojson` filter: `json.dumps(value, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, the keyword arguments as in Python (`indent` an integer
/// or a string; `separators` a pair of strings, defaulting to `", "`/`": "` without indent and
/// `","`/`": "` with it).
///
/// Errors: an unknown keyword, an argument of the wrong type, or a value JSON cannot hold
/// (undefined, bytes, a map key that is not a string, number, bool or none).
pub fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let bad = |msg: String| Error::new(ErrorKind::InvalidOperation, format!("tojson: {msg}"));
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_str(), v.as_i64()) {
            (Some(s), _) => Some(s.to_string()),
            (None, Some(n)) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            _ => {
                return Err(bad(format!(
                    "indent must be an integer or a string, got {v}"
                )))
            }
        },
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        None => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
        Some(v) if v.is_none() => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
        Some(v) => {
            let parts: Vec<String> = v
                .try_iter()
                .map_err(|_| bad(format!("separators must be a pair of strings, got {v}")))?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("separators must be a pair of strings, got {v}")))?;
            match <[String; 2]>::try_from(parts) {
                Ok([a, b]) => (a, b),
                Err(_) => {
                    return Err(bad(format!(
                        "separators must be a pair of strings, got {v}"
                    )))
                }
            }
        }
    };
    kwargs.assert_all_used()?;
    let opts = JsonOptions {
        ensure_ascii,
        sort_keys,
        indent,
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0).map_err(bad)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOptions {
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
}

/// Appends `v` as Python's `json.dumps` writes it, at nesting `depth`.
fn write_json(out: &mut String, v: &Value, o: &JsonOptions, depth: usize) -> Result<(), String> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&json_number(v)?),
        ValueKind::String => write_json_string(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter().map_err(|e| e.to_string())?.collect();
            write_container(out, '[', ']', items.len(), o, depth, |out, i| {
                write_json(out, &items[i], o, depth + 1)
            })?;
        }
        ValueKind::Map | ValueKind::Plain => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in v.try_iter().map_err(|e| e.to_string())? {
                let item = v.get_item(&key).map_err(|e| e.to_string())?;
                entries.push((json_key(&key)?, item));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, '{', '}', entries.len(), o, depth, |out, i| {
                write_json_string(out, &entries[i].0, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, &entries[i].1, o, depth + 1)
            })?;
        }
        ValueKind::Undefined => return Err("an undefined value is not JSON serializable".into()),
        other => return Err(format!("a value of kind {other} is not JSON serializable")),
    }
    Ok(())
}

/// `[a, b]` / `{..}` with Python's layout: items joined by `item_sep`, and with an indent each
/// item on its own line indented `depth + 1` times, the closing bracket on a line indented
/// `depth` times; empty containers are `[]` / `{}`.
fn write_container(
    out: &mut String,
    open: char,
    close: char,
    n: usize,
    o: &JsonOptions,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), String>,
) -> Result<(), String> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        item(out, i)?;
    }
    if let Some(ind) = &o.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A map key as Python's `json.dumps` converts it: strings as they are, numbers, booleans and
/// none by their JSON spelling.
fn json_key(k: &Value) -> Result<String, String> {
    match k.kind() {
        ValueKind::String => Ok(k.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => json_number(k),
        ValueKind::Bool => Ok(if k.is_true() { "true" } else { "false" }.into()),
        ValueKind::None => Ok("null".into()),
        other => Err(format!(
            "keys must be str, int, float, bool or None, not {other}"
        )),
    }
}

/// An integer as its digits; a float as Python's `repr` (`1.0`, `0.1`, `1e-06`, `1e+16`,
/// `Infinity`, `NaN`).
fn json_number(v: &Value) -> Result<String, String> {
    if v.is_integer() {
        return Ok(v.to_string());
    }
    let f = f64::try_from(v.clone()).map_err(|e| e.to_string())?;
    Ok(python_float_repr(f))
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation for
/// exponents -4..16 and `d.ddde±XX` otherwise.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: `1.5e-7`, `1e16`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// A JSON string literal: `"` and `\` escaped, `\n \r \t \b \f` by name, other control
/// characters as `\u00XX`; with `ensure_ascii` every non-ASCII character as `\uXXXX` (UTF-16,
/// surrogate pairs above U+FFFF).
fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_of_known_instants() {
        let t = utc(0);
        assert_eq!(
            (t.year, t.month, t.day, t.weekday, t.yday),
            (1970, 1, 1, 4, 1)
        );
        // 2024-07-26T13:05:09Z, a Friday, day 208 of a leap year.
        let t = utc(1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!((t.year, t.month, t.day), (2024, 7, 26));
        assert_eq!(
            (t.hour, t.minute, t.second, t.weekday, t.yday),
            (13, 5, 9, 5, 208)
        );
        // 2000-02-29 and 1969-12-31 (before the epoch).
        let t = utc(951_782_400);
        assert_eq!((t.year, t.month, t.day, t.yday), (2000, 2, 29, 60));
        let t = utc(-1);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.weekday),
            (1969, 12, 31, 23, 3)
        );
    }

    #[test]
    fn strftime_formats_like_python() {
        let t = utc(1_721_952_000 + 9 * 3600 + 7 * 60); // 2024-07-26 09:07:00
        let f = |fmt: &str| strftime(t, fmt).unwrap();
        assert_eq!(f("%d %b %Y"), "26 Jul 2024");
        assert_eq!(f("%A %B %-d, %y"), "Friday July 26, 24");
        assert_eq!(f("%H:%M:%S %I%p %j %m"), "09:07:00 09AM 208 07");
        assert_eq!(
            f("%-H %-m %e %F %T 100%%"),
            "9 7 26 2024-07-26 09:07:00 100%"
        );
        assert!(strftime(t, "%Q").unwrap_err().contains("%Q"));
        assert!(strftime(t, "50%").unwrap_err().contains("ends inside"));
    }

    #[test]
    fn floats_print_as_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-6, "1e-06"),
            (1e16, "1e+16"),
            (123456.5, "123456.5"),
            (-2.5e-5, "-2.5e-05"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(python_float_repr(f), want);
        }
    }
}

//! The proxy's access lines, formatted without `tracing-subscriber`'s JSON
//! layer: the same line (`timestamp`, `level`, `fields`, `target`), built in
//! a per-thread buffer with a per-second cached date, straight into the
//! log file's batch. The JSON layer (serde, span lookups, a date computed
//! for every line) was about a tenth of the proxy's CPU per request.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::LogFile;

/// Adds each event it sees as one JSON line to the log file's batch; give
/// it a filter for the access target.
pub(super) struct AccessLayer {
    pub(super) log: Arc<LogFile>,
}

thread_local! {
    static LINE: RefCell<Line> = RefCell::new(Line::default());
}

#[derive(Default)]
struct Line {
    buf: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    date: String,
    second: u64,
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let _ = LINE.try_with(|line| {
            let mut line = line.borrow_mut();
            let Line { buf, date, second } = &mut *line;
            buf.clear();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            if now.as_secs() != *second || date.is_empty() {
                *second = now.as_secs();
                date.clear();
                write_date(date, *second);
            }
            let meta = event.metadata();
            buf.extend_from_slice(b"{\"timestamp\":\"");
            buf.extend_from_slice(date.as_bytes());
            buf.push(b'.');
            push_micros(buf, now.subsec_micros());
            buf.extend_from_slice(b"Z\",\"level\":\"");
            buf.extend_from_slice(meta.level().as_str().as_bytes());
            buf.extend_from_slice(b"\",\"fields\":{");
            let mut fields = Fields { buf, first: true };
            event.record(&mut fields);
            buf.extend_from_slice(b"},\"target\":");
            json_str(buf, meta.target());
            buf.extend_from_slice(b"}\n");
            self.log.append(buf);
        });
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in seconds.
fn write_date(out: &mut String, secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        json_str(self.buf, field.name());
        self.buf.push(b':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_str(self.buf, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.buf, "{value}");
        } else {
            self.buf.extend_from_slice(b"null");
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        json_str(self.buf, &format!("{value:?}"));
    }
}

/// `us` (below 1,000,000) as six digits.
fn push_micros(buf: &mut Vec<u8>, us: u32) {
    let mut digits = [b'0'; 6];
    let mut n = us.min(999_999);
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits);
}

/// `s` as a JSON string.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.push(b'"');
    // Almost every string needs no escape: one branch-free pass (which the
    // compiler vectorizes) and one copy.
    let escapes = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escapes {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, b) in bytes.iter().copied().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            let _ = write!(buf, "\\u{b:04x}");
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn dates_are_utc_civil_dates() {
        let date = |secs| {
            let mut s = String::new();
            write_date(&mut s, secs);
            s
        };
        assert_eq!(date(0), "1970-01-01T00:00:00");
        assert_eq!(date(951_868_799), "2000-02-29T23:59:59");
        assert_eq!(date(1_795_930_593), "2026-11-29T05:36:33");
    }

    #[test]
    fn strings_are_escaped() {
        let mut b = Vec::new();
        json_str(&mut b, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(b).unwrap(), r#""a\"b\\c\nd\u0001é""#);
    }

    /// A `MakeWriter` into a shared buffer, for the JSON layer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_match_the_json_layer() {
        let dir = tempfile::tempdir().unwrap();
        let log = super::super::tests::log_in(dir.path());
        let json = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(AccessLayer { log: log.clone() })
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer({
                        let json = json.clone();
                        move || json.clone()
                    }),
            );
        tracing::subscriber::with_default(subscriber, || {
            let error: Option<&str> = None;
            tracing::info!(
                target: "wrenn_proxy::access",
                sandbox_id = Some("sb1"),
                port = 8080u16,
                form = "path",
                path = "/a \"quoted\"\tpath/é",
                status = 200u16,
                bytes_out = 1024u64,
                duration_us = 17u64,
                reused = true,
                delta = -3i64,
                ratio = 0.5f64,
                error,
                debugged = ?std::time::Duration::from_millis(5),
            );
        });
        log.flush();
        let ours = std::fs::read_to_string(dir.path().join("t.log")).unwrap();
        let theirs = String::from_utf8(json.0.lock().unwrap().clone()).unwrap();
        assert_eq!(ours.lines().count(), 1, "{ours}");
        let parse = |s: &str| -> serde_json::Value { serde_json::from_str(s.trim()).unwrap() };
        let (mut a, mut b) = (parse(&ours), parse(&theirs));
        let (ta, tb) = (a["timestamp"].take(), b["timestamp"].take());
        assert_eq!(a, b, "ours: {ours}theirs: {theirs}");
        let (ta, tb) = (ta.as_str().unwrap(), tb.as_str().unwrap());
        assert_eq!(ta.len(), tb.len(), "{ta} / {tb}");
        assert_eq!(ta[..16], tb[..16], "same minute: {ta} / {tb}");
        assert!(ta.ends_with('Z') && ta.as_bytes()[19] == b'.', "{ta}");
    }
}

//! Request heads as `listener.rs` reads them, before either path parses
//! them: where a head ends, whether it breaks a limit, and the little an
//! over-long head must still tell (how to answer, what to log).
//!
//! # Limits
//! A head (request line and header fields, through the blank line) may be
//! [`MAX_REQUEST_HEAD_BYTES`] long and carry [`MAX_REQUEST_HEADER_FIELDS`]
//! fields. Both paths get heads only from the listener, which answers a
//! head over either limit with 431 itself, so the limits are the same for
//! the fast path and for Pingora (whose own are 1 MiB and 256 fields,
//! answered with a bare 400).

use crate::config::{MAX_REQUEST_HEAD_BYTES, MAX_REQUEST_HEADER_FIELDS};
use crate::failure::HeadLimit;

/// Header slots for the early check of an incomplete head.
const EARLY_HEADERS: usize = 64;

/// The length of the complete request head at the start of `buf`, which
/// ends at its first blank line (lines end in CRLF or, as httparse accepts,
/// a bare LF): `Ok(None)` while incomplete, `Err` when it cannot be a
/// request head (the listener then answers 400). The fast path's parse then
/// checks the length it finds.
pub(crate) fn head_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    for p in memchr::memchr_iter(b'\n', buf) {
        match &buf[p + 1..] {
            [b'\n', ..] => return Ok(Some(p + 2)),
            [b'\r', b'\n', ..] => return Ok(Some(p + 3)),
            _ => {}
        }
    }
    // Not complete yet: refuse what is already not a request.
    let mut headers = [httparse::EMPTY_HEADER; EARLY_HEADERS];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        // More fields than this check has room for: keep reading (the
        // field limit is checked on the complete head).
        Err(httparse::Error::TooManyHeaders) => Ok(None),
        // Pingora percent-encodes a request target httparse refuses when
        // the request line looks like one (`<method> <target> HTTP/<v>`):
        // such a head is read to its end here, under the same limits.
        Err(httparse::Error::Token | httparse::Error::Version) if looks_like_request(buf) => {
            Ok(None)
        }
        Err(_) => Err(()),
    }
}

/// Whether the first line of `buf` (complete or not) names an HTTP version.
fn looks_like_request(buf: &[u8]) -> bool {
    let line = match memchr::memchr(b'\n', buf) {
        Some(end) => &buf[..end],
        None => buf,
    };
    memchr::memmem::find(line, b" HTTP/").is_some()
}

/// The limit a head of `len` bytes, or an incomplete one of `len` bytes so
/// far, breaks, if any.
pub(crate) fn over_length(len: usize, complete: bool) -> Option<HeadLimit> {
    let over = if complete {
        len > MAX_REQUEST_HEAD_BYTES
    } else {
        // Still incomplete at the limit: the whole head is longer.
        len >= MAX_REQUEST_HEAD_BYTES
    };
    over.then_some(HeadLimit::Bytes)
}

/// Whether the complete `head` carries more than
/// [`MAX_REQUEST_HEADER_FIELDS`] header fields (one per line between the
/// request line and the blank line; httparse refuses folded lines).
pub(crate) fn too_many_fields(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).count() > MAX_REQUEST_HEADER_FIELDS + 2
}

/// What an over-long (possibly incomplete) head says about its own answer
/// and access-log line, read line by line without a parser.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Partial<'a> {
    /// `Sec-Fetch-Mode: navigate` or an `Accept` naming `text/html`.
    pub html: bool,
    pub head_only: bool,
    /// Empty when the request line is incomplete or not text.
    pub method: &'a str,
    /// The target without its query; empty as `method`.
    pub path: &'a str,
}

impl<'a> Partial<'a> {
    pub(crate) fn read(buf: &'a [u8]) -> Self {
        let mut lines = buf.split(|&b| b == b'\n');
        let mut p = Partial::default();
        // The last piece may be cut anywhere: only whole lines count.
        let whole = memchr::memchr_iter(b'\n', buf).count();
        if let Some(first) = lines.next().filter(|_| whole > 0) {
            let mut parts = first.trim_ascii_end().splitn(3, |&b| b == b' ');
            let method = parts.next().and_then(|m| std::str::from_utf8(m).ok());
            let target = parts.next().and_then(|t| std::str::from_utf8(t).ok());
            if let (Some(method), Some(target)) = (method, target) {
                p.method = method;
                p.path = target.split('?').next().unwrap_or("");
            }
        }
        p.head_only = buf.starts_with(b"HEAD ");
        let (mut accept, mut fetch_mode) = (None, None);
        for line in lines.take(whole.saturating_sub(1)) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"accept") {
                accept = Some(value);
            } else if name.eq_ignore_ascii_case(b"sec-fetch-mode") {
                fetch_mode = Some(value);
            }
        }
        p.html = crate::failure::wants_html(accept, fetch_mode);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_first_blank_line() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_len(get), Ok(Some(get.len())));
        // Pipelined: only the first head.
        let two = [&get[..], &get[..]].concat();
        assert_eq!(head_len(&two), Ok(Some(get.len())));
        // Bare LFs, and a bare-LF head before a CRLF one.
        let lf = b"GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(head_len(&[&lf[..], &get[..]].concat()), Ok(Some(lf.len())));
        let mixed = b"GET / HTTP/1.1\nHost: a\n\r\n";
        assert_eq!(
            head_len(&[&mixed[..], &get[..]].concat()),
            Ok(Some(mixed.len()))
        );
        // The same lengths as httparse.
        for head in [&get[..], &lf[..], &mixed[..]] {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let parsed = httparse::Request::new(&mut headers).parse(head).unwrap();
            assert_eq!(parsed, httparse::Status::Complete(head.len()));
        }
    }

    #[test]
    fn an_unfinished_head_waits_and_garbage_is_refused_early() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), Ok(None));
        assert_eq!(head_len(b"GET"), Ok(None));
        assert_eq!(head_len(b"\x00\x01 binary"), Err(()));
        assert_eq!(
            head_len(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Err(())
        );
    }

    #[test]
    fn heads_pingora_would_read_further_are_read_here_under_the_limits() {
        // More fields than the early check holds.
        let many: Vec<u8> = std::iter::once(&b"GET / HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"X-A: 1\r\n"[..], EARLY_HEADERS + 10))
            .flatten()
            .copied()
            .collect();
        assert_eq!(head_len(&many), Ok(None));
        // A target httparse refuses and Pingora percent-encodes.
        assert_eq!(head_len(b"GET /a\"b HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(head_len(b"GET /a\"b HTTP/1.1"), Ok(None));
        assert_eq!(head_len(b"GET /a\"b HTTX/1.1\r\nHost: a\r\n"), Err(()));
    }

    #[test]
    fn limits() {
        let max = MAX_REQUEST_HEAD_BYTES;
        assert_eq!(over_length(max, true), None);
        assert_eq!(over_length(max + 1, true), Some(HeadLimit::Bytes));
        assert_eq!(over_length(max - 1, false), None);
        assert_eq!(over_length(max, false), Some(HeadLimit::Bytes));
        let head = |fields: usize| {
            let mut h = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..fields {
                h.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        assert!(!too_many_fields(&head(MAX_REQUEST_HEADER_FIELDS)));
        assert!(too_many_fields(&head(MAX_REQUEST_HEADER_FIELDS + 1)));
    }

    #[test]
    fn a_partial_head_tells_how_to_answer_and_what_to_log() {
        let p = Partial::read(
            b"GET /proxy/a/1/x?q=secret HTTP/1.1\r\nSec-Fetch-Mode: navigate\r\nCookie: aaaa",
        );
        assert_eq!(
            p,
            Partial {
                html: true,
                head_only: false,
                method: "GET",
                path: "/proxy/a/1/x",
            }
        );
        let p = Partial::read(b"HEAD / HTTP/1.1\r\naccept: application/json\r\nAccept: text/html");
        assert!(p.head_only && !p.html, "the cut last line does not count");
        assert_eq!((p.method, p.path), ("HEAD", "/"));
        let p = Partial::read(b"GET /only-part-of-a-very-long-target");
        assert_eq!((p.method, p.path, p.html), ("", "", false));
        let p = Partial::read(b"GET / HTTP/1.1\r\nACCEPT:text/html,*/*\r\n");
        assert!(p.html);
    }
}

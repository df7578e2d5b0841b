//! Target `chunked`: the fast path's chunked-body scanner
//! ([`wrenn_proxy::fuzzing::ChunkedScanner`]), which decides where an
//! upstream's chunked body ends and so whether the connection can be reused.
//!
//! Input: one byte choosing how to cut the rest, then the body bytes (and
//! whatever follows them on the connection).
//!
//! Checks:
//! - the scanner's answer (ends after byte `n`, goes on, or malformed)
//!   equals that of [`model`], a whole-buffer reading of the grammar the
//!   scanner documents (hex sizes of 1 to 15 digits, extensions after `;`,
//!   space or tab up to CR, CRLF line ends, trailer lines, no bare LF);
//! - the answer is the same fed in one piece, byte by byte, and in pieces
//!   of the chosen size, and the scanner stops reading where the body ends.

use wrenn_proxy::fuzzing::{ChunkedScanner, Malformed};

pub fn chunked(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let want = model(body);
    let step = usize::from(cut % 32) + 1;
    for step in [body.len().max(1), 1, step] {
        assert_eq!(
            scan(body, step),
            want,
            "in pieces of {step}: {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

/// The scanner's answer for `body` fed in pieces of `step` bytes.
fn scan(body: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
    let mut scanner = ChunkedScanner::default();
    let mut seen = 0;
    for piece in body.chunks(step) {
        if let Some(n) = scanner.feed(piece)? {
            assert!(
                n > 0 && n <= piece.len(),
                "end {n} outside a piece of {}",
                piece.len()
            );
            return Ok(Some(seen + n));
        }
        seen += piece.len();
    }
    Ok(None)
}

/// The chunked grammar read from a whole buffer: `Ok(Some(end))` after the
/// final CRLF, `Ok(None)` when the buffer stops inside the body, `Err` at
/// the first byte the grammar does not allow.
pub(crate) fn model(b: &[u8]) -> Result<Option<usize>, Malformed> {
    let mut r = Reader { b, i: 0 };
    loop {
        let digits = r
            .rest()
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if digits > 15 {
            return Err(Malformed);
        }
        let Some(hex) = r.take(digits) else {
            return Ok(None);
        };
        let Some(&next) = r.rest().first() else {
            return Ok(None);
        };
        if digits == 0 {
            return Err(Malformed);
        }
        let size = u64::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        if matches!(next, b';' | b' ' | b'\t') {
            // An extension: anything but LF, up to CR.
            match r.rest().iter().position(|&c| c == b'\r' || c == b'\n') {
                None => return Ok(None),
                Some(at) if r.rest()[at] == b'\n' => return Err(Malformed),
                Some(at) => r.i += at,
            }
        }
        if !r.crlf()? {
            return Ok(None);
        }
        if size == 0 {
            return trailers(r);
        }
        if ((r.b.len() - r.i) as u64) < size {
            return Ok(None);
        }
        r.i += size as usize;
        if !r.crlf()? {
            return Ok(None);
        }
    }
}

/// Trailer lines after the last chunk, then the final CRLF.
fn trailers(mut r: Reader<'_>) -> Result<Option<usize>, Malformed> {
    loop {
        match r.rest().iter().position(|&c| c == b'\r' || c == b'\n') {
            None => return Ok(None),
            Some(at) if r.rest()[at] == b'\n' => return Err(Malformed),
            Some(at) => {
                let last = at == 0;
                r.i += at;
                if !r.crlf()? {
                    return Ok(None);
                }
                if last {
                    return Ok(Some(r.i));
                }
            }
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.b[self.i..]
    }

    /// The next `n` bytes, unless the buffer stops before.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.rest().get(..n)?;
        self.i += n;
        Some(out)
    }

    /// CRLF next: `Ok(true)` read, `Ok(false)` the buffer stops first.
    fn crlf(&mut self) -> Result<bool, Malformed> {
        for want in [b'\r', b'\n'] {
            match self.rest().first() {
                None => return Ok(false),
                Some(&c) if c == want => self.i += 1,
                Some(_) => return Err(Malformed),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_reads_the_grammar() {
        let ok = b"5\r\nhello\r\n1A;x=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nt: 1\r\n\r\nNEXT";
        assert_eq!(model(ok), Ok(Some(ok.len() - 4)));
        assert_eq!(model(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(model(b"3 \r\nabc\r\n"), Ok(None));
        assert_eq!(model(b"3\r\nab"), Ok(None));
        assert_eq!(model(b""), Ok(None));
        assert_eq!(model(b"fffffffffffffff"), Ok(None));
        for bad in [
            &b"\r\n"[..],
            b"x",
            b"5\nhello",
            b"3\r\nabcX",
            b"0\r\nbad\n",
            b"0\r\n\n",
            b"1234567890abcdef",
            b"1;ext\n",
            b"1\r\nx\r\r",
        ] {
            assert_eq!(
                model(bad),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

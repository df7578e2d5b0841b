//! Finds where a `Transfer-Encoding: chunked` body ends, so the fast path can
//! pass the chunks through byte for byte and still know when the upstream
//! connection is free again.
//!
//! Strict about framing (CRLF line ends, hex sizes of at most 15 digits):
//! a body the scanner cannot follow ends the exchange and both connections
//! close, so a malformed body can never be read as the start of the next
//! response.

/// Where in the chunked framing the bytes seen so far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` read so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// Chunk extensions after the size, up to CR.
    Extension {
        size: u64,
    },
    /// LF after a size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// The body's framing is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub(crate) struct Malformed;

/// Follows a chunked body fed in pieces.
#[derive(Debug, Clone)]
pub(crate) struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl Chunked {
    /// Feeds the next body bytes. `Some(n)`: the body ends after the first
    /// `n` of them (what follows is not part of it); `None`: it goes on.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < data.len() {
            if let State::Data(left) = self.state {
                let take = left.min((data.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size { size, digits }, _) if b.is_ascii_hexdigit() => {
                    if digits == 15 {
                        return Err(Malformed);
                    }
                    let d = (b as char).to_digit(16).ok_or(Malformed)?;
                    State::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                    }
                }
                (State::Size { digits: 0, .. }, _) => return Err(Malformed),
                (State::Size { size, .. }, b'\r') => State::SizeLf { size },
                (State::Size { size, .. }, b';' | b' ' | b'\t') => State::Extension { size },
                (State::Extension { size }, b'\r') => State::SizeLf { size },
                (State::Extension { .. }, b'\n') => return Err(Malformed),
                (s @ State::Extension { .. }, _) => s,
                (State::SizeLf { size: 0 }, b'\n') => State::TrailerStart,
                (State::SizeLf { size }, b'\n') => State::Data(size),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
                (State::TrailerStart, b'\r') => State::FinalLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => return Err(Malformed),
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::FinalLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                _ => return Err(Malformed),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; where the body ends.
    fn end(body: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
        let mut c = Chunked::default();
        let mut seen = 0;
        for piece in body.chunks(step) {
            if let Some(n) = c.feed(piece)? {
                return Ok(Some(seen + n));
            }
            seen += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_in_any_split() {
        let body =
            b"5\r\nhello\r\n1A;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\n";
        let next = b"HTTP/1.1 200 OK\r\n";
        let all = [&body[..], next].concat();
        for step in 1..=all.len() {
            assert_eq!(end(&all, step), Ok(Some(body.len())), "step {step}");
        }
    }

    #[test]
    fn an_empty_body_and_an_unfinished_one() {
        assert_eq!(end(b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(end(b"0\r\n\r\n", 5), Ok(Some(5)));
        assert_eq!(end(b"3\r\nabc\r\n", 2), Ok(None));
        assert_eq!(end(b"3\r\nab", 2), Ok(None));
        // Data may contain CRLF and anything else: only the size counts.
        assert_eq!(end(b"4\r\n\r\n\r\n\r\n0\r\n\r\n", 3), Ok(Some(14)));
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"3\r\nabcX\r\n",
            b"0\r\nbad\n\r\n",
            b"0\r\n\n",
            b"1234567890abcdef\r\n",
        ] {
            assert_eq!(
                end(bad, 1),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

//! Entry points for the fuzz targets (`fuzz/`, `scripts/fuzz`): thin wrappers
//! around parsers that are private to the proxy. Not an API: nothing outside
//! `wrenn-fuzz` uses this module, and it may change with the code it wraps.
//!
//! The routing parser ([`crate::target::parse`]) and the response rewriter
//! ([`crate::rewrite::RewriteCtx`]) are public already and need no wrapper.
//! The chunked scanner is private to `fast` (`mod chunked;` there), so this
//! module compiles the same source file a second time rather than widening
//! the fast path's visibility; its unit tests therefore run twice, once per
//! copy.

#[allow(clippy::duplicate_mod)]
#[path = "fast/chunked.rs"]
mod chunked;

/// The fast path's chunked-body scanner (`fast/chunked.rs`), fed in pieces.
#[derive(Debug, Clone, Default)]
pub struct ChunkedScanner(chunked::Chunked);

/// The scanner refused the body's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl ChunkedScanner {
    /// Feeds the next body bytes: `Ok(Some(n))` when the body ends after the
    /// first `n` of them, `Ok(None)` when it goes on.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, Malformed> {
        self.0.feed(data).map_err(|_| Malformed)
    }
}

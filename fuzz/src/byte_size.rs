//! Target `byte_size`: [`wrenn_types::ByteSize`] from text (config files,
//! CLI flags, sandbox create requests) and back.
//!
//! Input: the text to parse (skipped when not UTF-8: it arrives as a Rust
//! string). The first 8 bytes, read as a number of bytes, are displayed too.
//!
//! Checks:
//! - the text parses exactly when, trimmed, it is decimal digits and then
//!   `G`, `Gi`, `M` or `Mi`, for a size from 1 byte to `u64::MAX` (computed
//!   in 128 bits), and then to that size;
//! - an error carries the text as given;
//! - a parsed size displays as `<n>Gi` or `<n>Mi`, which parses back to it;
//!   any size but 0 (`0Gi`, refused as input) that displays with `Gi` or
//!   `Mi` parses back to itself.

use wrenn_types::ByteSize;

pub fn byte_size(data: &[u8]) {
    if let Some(n) = data.get(..8) {
        let size = ByteSize(u64::from_le_bytes(n.try_into().unwrap()));
        let shown = size.to_string();
        if size.0 > 0 && (shown.ends_with("Gi") || shown.ends_with("Mi")) {
            assert_eq!(shown.parse::<ByteSize>().ok(), Some(size), "{shown}");
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = text.parse::<ByteSize>();
    assert_eq!(parsed.as_ref().ok().copied(), model(text), "{text:?}");
    match parsed {
        Ok(size) => {
            let shown = size.to_string();
            assert!(
                shown.ends_with("Gi") || shown.ends_with("Mi"),
                "{text:?} shows as {shown}"
            );
            assert_eq!(
                shown.parse::<ByteSize>().ok(),
                Some(size),
                "{text:?} shows as {shown}"
            );
        }
        Err(e) => assert_eq!(e.0, text),
    }
}

/// The documented grammar: `<digits><unit>` after trimming, 1 ..= u64::MAX bytes.
fn model(text: &str) -> Option<ByteSize> {
    const MIB: u128 = 1 << 20;
    let t = text.trim();
    let (digits, mult) = [
        ("Gi", 1024 * MIB),
        ("G", 1024 * MIB),
        ("Mi", MIB),
        ("M", MIB),
    ]
    .into_iter()
    .find_map(|(unit, mult)| t.strip_suffix(unit).map(|d| (d, mult)))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.bytes().try_fold(0u128, |n, d| {
        n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })?;
    let bytes = n.checked_mul(mult)?;
    (bytes > 0).then(|| u64::try_from(bytes).ok().map(ByteSize))?
}

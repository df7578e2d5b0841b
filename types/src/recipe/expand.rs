//! Variable expansion (`$VAR`, `${VAR}`; `\$` is a literal `$`) and the
//! durations of `--timeout=` and `--interval=`.

use std::time::Duration;

/// Whether `s` is a variable name: a letter or `_`, then letters, digits
/// and `_`.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `s` with `$VAR` and `${VAR}` replaced by what `lookup` gives (an unset
/// variable expands to nothing, as in a shell) and `\$` by `$`.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['$', '\\']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("\\$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('\\') {
            out.push('\\');
            rest = after;
        } else if let Some(braced) = tail.strip_prefix("${") {
            let Some(end) = braced.find('}') else {
                return Err(format!("`{tail}`: a `${{` is never closed"));
            };
            let name = &braced[..end];
            if !is_name(name) {
                return Err(format!("`${{{name}}}`: not a variable name"));
            }
            out.push_str(&lookup(name).unwrap_or_default());
            rest = &braced[end + 1..];
        } else {
            let after = &tail[1..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                // A lone `$` (or `$1`): kept as it is.
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration written as whole numbers with units, largest first:
/// `500ms`, `30s`, `10m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
    let bad = || format!("`{s}` is not a duration (like 500ms, 30s, 10m or 1h30m)");
    let mut rest = s;
    let mut ms: u64 = 0;
    let mut last_unit = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let tail = &rest[digits..];
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let unit = &tail[..unit_len];
        let i = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if i < last_unit {
            return Err(bad());
        }
        last_unit = i + 1;
        ms = n
            .checked_mul(UNITS[i].1)
            .and_then(|v| ms.checked_add(v))
            .ok_or_else(bad)?;
        rest = &tail[unit_len..];
    }
    if ms == 0 {
        return Err(format!("`{s}`: a duration must be above zero"));
    }
    Ok(Duration::from_millis(ms))
}

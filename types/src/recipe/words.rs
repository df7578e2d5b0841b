//! Arguments split the way a shell splits words: whitespace between them,
//! `'…'` taken literally (its `$` kept as `\$`, never expanded), `"…"` with `\"`, `\\` and `\$` escapes, a `\`
//! outside quotes escaping the next character. `$` is kept: variables are
//! expanded at build time ([`super::expand`]).

/// One argument without its quotes, and the byte where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    /// Byte offset in the logical line.
    pub at: usize,
}

/// The words of `s`, which starts at byte `base` of its line. `Err`: the
/// offset of an unterminated quote and what is wrong.
pub(crate) fn words(s: &str, base: usize) -> Result<Vec<Word>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut text = String::new();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        // Literal: a `$` here is never expanded.
                        Some((_, '$')) => text.push_str("\\$"),
                        Some((_, c)) => text.push(c),
                        None => return Err((base + i, "a `'` is never closed".into())),
                    }
                },
                '"' => loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, e @ ('"' | '\\' | '$'))) => {
                                if e == '$' {
                                    text.push('\\');
                                }
                                text.push(e);
                            }
                            Some((_, other)) => {
                                text.push('\\');
                                text.push(other);
                            }
                            None => return Err((base + i, "a `\"` is never closed".into())),
                        },
                        Some((_, c)) => text.push(c),
                        None => return Err((base + i, "a `\"` is never closed".into())),
                    }
                },
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        if next == '$' {
                            text.push('\\');
                        }
                        text.push(next);
                    }
                }
                c => text.push(c),
            }
        }
        out.push(Word {
            text,
            at: base + start,
        });
    }
    Ok(out)
}

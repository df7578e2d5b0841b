//! The Dockerfile subset: the same steps as a recipe, from Docker's
//! spelling (exec-form JSON arrays, `ADD`, `ARG`, `CMD`/`ENTRYPOINT`).

use super::words::Word;
use super::{Dialect, Parser, Recipe, RecipeError, parse_with};

/// Parses a Dockerfile of the subset wrenn builds; `file` names it in
/// errors.
pub fn parse_dockerfile(file: &str, text: &str) -> Result<Recipe, RecipeError> {
    parse_with(file, text, Dialect::Dockerfile)
}

/// The shell command of `RUN`, `CMD` or `ENTRYPOINT`: the shell form as
/// written, or the exec form (a JSON array) with each argument quoted for
/// `/bin/sh -c`.
pub(super) fn command_line(
    p: &Parser<'_>,
    at: usize,
    rest: &str,
    what: &str,
) -> Result<String, RecipeError> {
    if !rest.trim_start().starts_with('[') {
        return p.command(at, rest, what);
    }
    let args = json_words(p, at, rest, what)?;
    if args.is_empty() {
        return Err(p.err(at, format!("{what} needs a command")));
    }
    Ok(args
        .iter()
        .map(|w| shell_quote(&w.text))
        .collect::<Vec<_>>()
        .join(" "))
}

/// The strings of a JSON array (`["a", "b"]`) that is all of `rest`.
pub(super) fn json_words(
    p: &Parser<'_>,
    at: usize,
    rest: &str,
    what: &str,
) -> Result<Vec<Word>, RecipeError> {
    let bad = |offset: usize, why: &str| {
        p.err(
            at + offset,
            format!("{what}: the exec form must be a JSON array of strings ({why})"),
        )
    };
    let mut out = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    skip_ws(&mut chars);
    if chars.next().map(|(_, c)| c) != Some('[') {
        return Err(bad(0, "no `[`"));
    }
    skip_ws(&mut chars);
    if chars.next_if(|(_, c)| *c == ']').is_none() {
        loop {
            skip_ws(&mut chars);
            let start = match chars.next() {
                Some((start, '"')) => start,
                Some((i, _)) => return Err(bad(i, "expected a string")),
                None => return Err(bad(rest.len(), "expected a string")),
            };
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((i, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('"') => text.push('"'),
                        Some('\\') => text.push('\\'),
                        Some('/') => text.push('/'),
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        _ => return Err(bad(i, "an unknown escape")),
                    },
                    Some((_, c)) => text.push(c),
                    None => return Err(bad(start, "a string is never closed")),
                }
            }
            out.push(Word {
                text,
                at: at + start,
            });
            skip_ws(&mut chars);
            match chars.next() {
                Some((_, ',')) => continue,
                Some((_, ']')) => break,
                Some((i, _)) => return Err(bad(i, "expected `,` or `]`")),
                None => return Err(bad(rest.len(), "no `]`")),
            }
        }
    }
    skip_ws(&mut chars);
    if let Some((i, _)) = chars.next() {
        return Err(bad(i, "text after the `]`"));
    }
    Ok(out)
}

/// `s` as one `/bin/sh` word.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

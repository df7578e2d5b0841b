//! The arguments of one instruction: flags, words, and each instruction's
//! own rules, with errors at the column of what is wrong.

use std::time::Duration;

use super::lines::Line;
use super::words::{Word, words};
use super::{
    DEFAULT_READY_INTERVAL, DEFAULT_READY_TIMEOUT, DEFAULT_RUN_TIMEOUT, Dialect, Instruction,
    RecipeError, dockerfile, error_at, expand, parse_duration,
};

/// A `--name=value` flag and the byte where it starts.
struct Flag {
    name: String,
    value: String,
    at: usize,
}

/// The flags at the start of an instruction's arguments, and what follows
/// them (starting at byte `at` of the line).
struct Flagged<'r> {
    flags: Vec<Flag>,
    at: usize,
    rest: &'r str,
}

/// Parses the arguments of one logical line.
pub(super) struct Parser<'a> {
    pub(super) file: &'a str,
    pub(super) line: &'a Line,
}

impl Parser<'_> {
    pub(super) fn err(&self, offset: usize, message: impl Into<String>) -> RecipeError {
        error_at(self.file, self.line, offset, message)
    }

    /// The words of `rest` (which starts at byte `at` of the line).
    fn words(&self, at: usize, rest: &str) -> Result<Vec<Word>, RecipeError> {
        words(rest, at).map_err(|(offset, message)| self.err(offset, message))
    }

    pub(super) fn from(
        &self,
        at: usize,
        rest: &str,
        dialect: Dialect,
    ) -> Result<String, RecipeError> {
        let w = self.words(at, rest)?;
        if dialect == Dialect::Dockerfile
            && let Some(flag) = w.iter().find(|w| w.text.starts_with("--"))
        {
            return Err(self.err(
                flag.at,
                format!("FROM {}: flags are not supported", flag.text),
            ));
        }
        match w.as_slice() {
            [name] if crate::spec::is_template_name(&name.text) => Ok(name.text.clone()),
            [name] => Err(self.err(
                name.at,
                format!(
                    "FROM {}: not a template name (lower-case letters, digits, `-` and `_`)",
                    name.text
                ),
            )),
            [_, k, ..] if k.text.eq_ignore_ascii_case("as") => Err(self.err(
                k.at,
                "FROM … AS: multi-stage builds are not supported (one FROM, a wrenn template)",
            )),
            [] => Err(self.err(at, "FROM needs a template name")),
            [_, extra, ..] => Err(self.err(extra.at, "FROM takes one template name")),
        }
    }

    /// `--name=value` flags at the start of `rest`, then the rest of it.
    fn flags<'r>(
        &self,
        at: usize,
        rest: &'r str,
        allowed: &[&str],
        what: &str,
    ) -> Result<Flagged<'r>, RecipeError> {
        let mut flags = Vec::new();
        let mut at = at;
        let mut rest = rest;
        while let Some(flag) = rest.strip_prefix("--") {
            let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
            let (name, value) = match flag[..end].split_once('=') {
                Some((n, v)) => (n, v),
                None => (&flag[..end], ""),
            };
            if !allowed.contains(&name) {
                let known = if allowed.is_empty() {
                    "it takes none".to_owned()
                } else {
                    format!(
                        "it takes {}",
                        allowed
                            .iter()
                            .map(|a| format!("--{a}=…"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(self.err(at, format!("{what}: unknown flag --{name} ({known})")));
            }
            if value.is_empty() {
                return Err(self.err(at, format!("{what}: --{name} needs a value (--{name}=…)")));
            }
            flags.push(Flag {
                name: name.to_owned(),
                value: value.to_owned(),
                at,
            });
            let next = &flag[end..];
            let skipped = 2 + end + (next.len() - next.trim_start().len());
            at += skipped;
            rest = next.trim_start();
        }
        Ok(Flagged { flags, at, rest })
    }

    fn duration(
        &self,
        what: &str,
        name: &str,
        value: &str,
        at: usize,
    ) -> Result<Duration, RecipeError> {
        parse_duration(value).map_err(|e| self.err(at, format!("{what} --{name}={value}: {e}")))
    }

    /// A shell command: the rest of the line, which must not be empty.
    pub(super) fn command(&self, at: usize, rest: &str, what: &str) -> Result<String, RecipeError> {
        if rest.trim().is_empty() {
            return Err(self.err(at, format!("{what} needs a command")));
        }
        Ok(rest.trim().to_owned())
    }

    pub(super) fn run(
        &self,
        at: usize,
        rest: &str,
        dialect: Dialect,
    ) -> Result<Instruction, RecipeError> {
        let allowed: &[&str] = if dialect == Dialect::Recipe {
            &["timeout"]
        } else {
            &[]
        };
        let Flagged { flags, at, rest } = self.flags(at, rest, allowed, "RUN")?;
        let mut timeout = DEFAULT_RUN_TIMEOUT;
        for f in flags {
            timeout = self.duration("RUN", &f.name, &f.value, f.at)?;
        }
        let command = if dialect == Dialect::Dockerfile {
            dockerfile::command_line(self, at, rest, "RUN")?
        } else {
            self.command(at, rest, "RUN")?
        };
        Ok(Instruction::Run { command, timeout })
    }

    pub(super) fn ready(&self, at: usize, rest: &str) -> Result<Instruction, RecipeError> {
        let Flagged { flags, at, rest } =
            self.flags(at, rest, &["timeout", "interval"], "READY")?;
        let (mut timeout, mut interval) = (DEFAULT_READY_TIMEOUT, DEFAULT_READY_INTERVAL);
        for f in flags {
            let d = self.duration("READY", &f.name, &f.value, f.at)?;
            if f.name == "timeout" {
                timeout = d;
            } else {
                interval = d;
            }
        }
        let command = self.command(at, rest, "READY")?;
        Ok(Instruction::Ready {
            command,
            timeout,
            interval,
        })
    }

    pub(super) fn env(
        &self,
        at: usize,
        rest: &str,
        dialect: Dialect,
    ) -> Result<Instruction, RecipeError> {
        let w = self.words(at, rest)?;
        if w.is_empty() {
            return Err(self.err(at, "ENV needs KEY=VALUE"));
        }
        // Docker's legacy form: `ENV KEY the rest is the value`.
        if dialect == Dialect::Dockerfile && !w[0].text.contains('=') {
            let key = self.key(&w[0], "ENV")?;
            let Some(value) = w.get(1) else {
                return Err(self.err(w[0].at, format!("ENV {key}: needs a value")));
            };
            let value = rest[value.at - at..].trim().to_owned();
            return Ok(Instruction::Env(vec![(key, value)]));
        }
        let mut vars = Vec::new();
        for word in &w {
            let Some((key, value)) = word.text.split_once('=') else {
                return Err(self.err(word.at, format!("ENV {}: expected KEY=VALUE", word.text)));
            };
            let key = self.key(
                &Word {
                    text: key.to_owned(),
                    at: word.at,
                },
                "ENV",
            )?;
            vars.push((key, value.to_owned()));
        }
        Ok(Instruction::Env(vars))
    }

    pub(super) fn arg(&self, at: usize, rest: &str) -> Result<Instruction, RecipeError> {
        let w = self.words(at, rest)?;
        let [word] = w.as_slice() else {
            return Err(self.err(at, "ARG takes one NAME or NAME=default"));
        };
        let (name, default) = match word.text.split_once('=') {
            Some((n, d)) => (n, Some(d.to_owned())),
            None => (word.text.as_str(), None),
        };
        let name = self.key(
            &Word {
                text: name.to_owned(),
                at: word.at,
            },
            "ARG",
        )?;
        Ok(Instruction::Arg { name, default })
    }

    /// A variable name: a letter or `_`, then letters, digits and `_`.
    fn key(&self, w: &Word, what: &str) -> Result<String, RecipeError> {
        if expand::is_name(&w.text) {
            Ok(w.text.clone())
        } else {
            Err(self.err(
                w.at,
                format!("{what}: `{}` is not a variable name (letters, digits and `_`, not starting with a digit)", w.text),
            ))
        }
    }

    pub(super) fn one(
        &self,
        at: usize,
        rest: &str,
        what: &str,
        thing: &str,
    ) -> Result<String, RecipeError> {
        match self.words(at, rest)?.as_slice() {
            [w] => Ok(w.text.clone()),
            [] => Err(self.err(at, format!("{what} needs {thing}"))),
            [_, extra, ..] => {
                Err(self.err(extra.at, format!("{what} takes one argument ({thing})")))
            }
        }
    }

    pub(super) fn user(&self, at: usize, rest: &str) -> Result<Instruction, RecipeError> {
        let name = self.one(at, rest, "USER", "a user name")?;
        let valid = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            let at = at + rest.find(name.as_str()).unwrap_or(0);
            return Err(self.err(
                at,
                format!("USER {name}: not a user name (lower-case letters, digits, `_` and `-`, at most 32, starting with a letter or `_`)"),
            ));
        }
        Ok(Instruction::User(name))
    }

    pub(super) fn copy(
        &self,
        at: usize,
        rest: &str,
        extract: bool,
        dialect: Dialect,
    ) -> Result<Instruction, RecipeError> {
        let what = if extract { "ADD" } else { "COPY" };
        let Flagged { at, rest, .. } = self.flags(at, rest, &[], what)?;
        let mut w = if dialect == Dialect::Dockerfile && rest.starts_with('[') {
            dockerfile::json_words(self, at, rest, what)?
        } else {
            self.words(at, rest)?
        };
        if w.len() < 2 {
            return Err(self.err(at, format!("{what} needs a source and a destination")));
        }
        let dest = w.pop().expect("two or more");
        if w.len() > 1 && !dest.text.ends_with('/') {
            return Err(self.err(
                dest.at,
                format!("{what}: with several sources the destination must be a directory ending in `/` (got `{}`)", dest.text),
            ));
        }
        for src in &w {
            if extract && src.text.contains("://") {
                return Err(self.err(
                    src.at,
                    format!(
                        "ADD {}: URLs are not supported (local files and archives only)",
                        src.text
                    ),
                ));
            }
            if src.text.starts_with('/') {
                return Err(self.err(
                    src.at,
                    format!(
                        "{what} {}: an absolute source is outside the build context",
                        src.text
                    ),
                ));
            }
            if src.text.split('/').any(|c| c == "..") {
                return Err(self.err(
                    src.at,
                    format!("{what} {}: `..` leaves the build context", src.text),
                ));
            }
            if src.text.is_empty() {
                return Err(self.err(src.at, format!("{what}: an empty source")));
            }
        }
        Ok(Instruction::Copy {
            sources: w.into_iter().map(|w| w.text).collect(),
            dest: dest.text,
            extract,
        })
    }
}

//! Template recipes: wrenn's recipe language and the Dockerfile subset it
//! accepts, parsed into one list of [`Step`]s that a template build runs.
//!
//! # Language
//! One instruction per line, `#` comment lines, `\` joining a line with the
//! next; keywords in any case. Every error names the file, line and column
//! ([`RecipeError`]).
//!
//! | instruction | meaning |
//! |---|---|
//! | `FROM <template>` | the template to start from; first instruction only (else `--from`, else `base`) |
//! | `RUN [--timeout=<dur>] <shell command>` | runs under `/bin/sh -c`; default timeout 10 min; exit code ≠ 0 fails the build |
//! | `ENV K=V [K2=V2…]` | sets variables; `$VAR` and `${VAR}` expand against the build's environment ([`expand`]) |
//! | `WORKDIR <path>` | created; a relative path resolves against the current one |
//! | `USER <name>` | created with a home and passwordless sudo if missing; sets `HOME` |
//! | `COPY <src>… <dest>` | from the build context; several sources need a destination ending in `/` |
//! | `START <command>` | started in the background in every sandbox from the template |
//! | `READY [--timeout=<dur>] [--interval=<dur>] <command>` | polled until it exits 0: then such a sandbox is ready |
//!
//! Sources of `COPY` must stay inside the build context: absolute paths and
//! `..` components are refused here, symlinks pointing out by whoever reads
//! the context (it sees the files).
//!
//! A Dockerfile ([`parse_dockerfile`]) may use `FROM` (a wrenn template),
//! `RUN`, `COPY`, `ADD` (local files and archives), `ENV`, `ARG`,
//! `WORKDIR`, `USER`, `CMD` and `ENTRYPOINT` (→ `START`); any other
//! instruction is refused with its line.

pub mod context;
mod dockerfile;
mod expand;
mod lines;
mod words;

pub use context::{Context, ContextError, collect};
pub use dockerfile::parse_dockerfile;
pub use expand::{expand, parse_duration};

use std::fmt;
use std::time::Duration;

use lines::{Line, logical_lines};
use words::{Word, words};

/// `RUN`'s timeout unless it gives one.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// `READY`'s timeout unless it gives one.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `READY` is polled unless it says.
pub const DEFAULT_READY_INTERVAL: Duration = Duration::from_millis(200);

/// A parsed recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// `FROM`, if the recipe names its template.
    pub from: Option<String>,
    pub steps: Vec<Step>,
}

/// One instruction and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub column: usize,
    /// The instruction as written (continuations joined): what a build
    /// shows, and with the sources' digest what its cache is keyed on.
    pub text: String,
    pub instruction: Instruction,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run {
        command: String,
        timeout: Duration,
    },
    /// Variables set for the rest of the build and, as defaults, in the
    /// template's sandboxes (values not yet expanded).
    Env(Vec<(String, String)>),
    /// A Dockerfile `ARG`: a variable of the build only, with its default.
    Arg {
        name: String,
        default: Option<String>,
    },
    Workdir(String),
    User(String),
    Copy {
        sources: Vec<String>,
        dest: String,
        /// `ADD`: local archives are extracted.
        extract: bool,
    },
    Start(String),
    Ready {
        command: String,
        timeout: Duration,
        interval: Duration,
    },
}

/// A recipe that cannot be parsed: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RecipeError {}

/// Parses a wrenn recipe; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Recipe, RecipeError> {
    parse_with(file, text, Dialect::Recipe)
}

/// Which language a text is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Recipe,
    Dockerfile,
}

/// An error at byte `offset` of `line`.
fn error_at(file: &str, line: &Line, offset: usize, message: impl Into<String>) -> RecipeError {
    let (l, c) = line.pos(offset);
    RecipeError {
        file: file.to_owned(),
        line: l,
        column: c,
        message: message.into(),
    }
}

fn parse_with(file: &str, text: &str, dialect: Dialect) -> Result<Recipe, RecipeError> {
    let lines = logical_lines(text).map_err(|(line, column)| RecipeError {
        file: file.to_owned(),
        line,
        column,
        message: "the line ends in `\\` but no line follows".into(),
    })?;
    let mut recipe = Recipe {
        from: None,
        steps: Vec::new(),
    };
    let mut cmd: Option<(Step, String)> = None;
    let mut entrypoint: Option<(Step, String)> = None;
    for (index, line) in lines.iter().enumerate() {
        let p = Parser { file, line };
        let keyword_end = line
            .text
            .find(char::is_whitespace)
            .unwrap_or(line.text.len());
        let keyword = line.text[..keyword_end].to_ascii_uppercase();
        let rest_at = keyword_end + line.text[keyword_end..].len()
            - line.text[keyword_end..].trim_start().len();
        let rest = &line.text[rest_at..];
        let (l, c) = line.start();
        let step = |instruction| Step {
            line: l,
            column: c,
            text: line.text.clone(),
            instruction,
        };
        let instruction = match (keyword.as_str(), dialect) {
            ("FROM", _) => {
                if index != 0 {
                    return Err(p.err(0, "FROM must be the first instruction"));
                }
                recipe.from = Some(p.from(rest_at, rest, dialect)?);
                continue;
            }
            ("RUN", _) => p.run(rest_at, rest, dialect)?,
            ("ENV", _) => p.env(rest_at, rest, dialect)?,
            ("ARG", Dialect::Dockerfile) => p.arg(rest_at, rest)?,
            ("WORKDIR", _) => Instruction::Workdir(p.one(rest_at, rest, "WORKDIR", "a path")?),
            ("USER", _) => p.user(rest_at, rest)?,
            ("COPY", _) => p.copy(rest_at, rest, false, dialect)?,
            ("ADD", Dialect::Dockerfile) => p.copy(rest_at, rest, true, dialect)?,
            ("START", Dialect::Recipe) => Instruction::Start(p.command(rest_at, rest, "START")?),
            ("READY", Dialect::Recipe) => p.ready(rest_at, rest)?,
            ("CMD" | "ENTRYPOINT", Dialect::Dockerfile) => {
                let command = dockerfile::command_line(&p, rest_at, rest, &keyword)?;
                let slot = if keyword == "CMD" {
                    &mut cmd
                } else {
                    &mut entrypoint
                };
                *slot = Some((step(Instruction::Start(String::new())), command));
                continue;
            }
            (other, Dialect::Recipe) => {
                return Err(p.err(
                    0,
                    format!(
                        "unknown instruction `{other}` (a recipe has FROM, RUN, ENV, WORKDIR, USER, COPY, START and READY)"
                    ),
                ));
            }
            (other, Dialect::Dockerfile) => {
                return Err(p.err(
                    0,
                    format!(
                        "the Dockerfile instruction `{other}` is not supported (wrenn takes FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, CMD and ENTRYPOINT)"
                    ),
                ));
            }
        };
        recipe.steps.push(step(instruction));
    }
    // Docker's rule: ENTRYPOINT runs with CMD as its arguments.
    let start = match (entrypoint, cmd) {
        (Some((step, e)), Some((_, c))) => Some((step, format!("{e} {c}"))),
        (Some(s), None) | (None, Some(s)) => Some(s),
        (None, None) => None,
    };
    if let Some((mut step, command)) = start {
        step.instruction = Instruction::Start(command);
        recipe.steps.push(step);
    }
    Ok(recipe)
}

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
pub(crate) struct Parser<'a> {
    file: &'a str,
    line: &'a Line,
}

impl Parser<'_> {
    fn err(&self, offset: usize, message: impl Into<String>) -> RecipeError {
        error_at(self.file, self.line, offset, message)
    }

    /// The words of `rest` (which starts at byte `at` of the line).
    fn words(&self, at: usize, rest: &str) -> Result<Vec<Word>, RecipeError> {
        words(rest, at).map_err(|(offset, message)| self.err(offset, message))
    }

    fn from(&self, at: usize, rest: &str, dialect: Dialect) -> Result<String, RecipeError> {
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
    fn command(&self, at: usize, rest: &str, what: &str) -> Result<String, RecipeError> {
        if rest.trim().is_empty() {
            return Err(self.err(at, format!("{what} needs a command")));
        }
        Ok(rest.trim().to_owned())
    }

    fn run(&self, at: usize, rest: &str, dialect: Dialect) -> Result<Instruction, RecipeError> {
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

    fn ready(&self, at: usize, rest: &str) -> Result<Instruction, RecipeError> {
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

    fn env(&self, at: usize, rest: &str, dialect: Dialect) -> Result<Instruction, RecipeError> {
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

    fn arg(&self, at: usize, rest: &str) -> Result<Instruction, RecipeError> {
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

    fn one(&self, at: usize, rest: &str, what: &str, thing: &str) -> Result<String, RecipeError> {
        match self.words(at, rest)?.as_slice() {
            [w] => Ok(w.text.clone()),
            [] => Err(self.err(at, format!("{what} needs {thing}"))),
            [_, extra, ..] => {
                Err(self.err(extra.at, format!("{what} takes one argument ({thing})")))
            }
        }
    }

    fn user(&self, at: usize, rest: &str) -> Result<Instruction, RecipeError> {
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

    fn copy(
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

#[cfg(test)]
mod tests;

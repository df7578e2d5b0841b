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
mod parse;
mod words;

pub use context::{Context, ContextError, collect};
pub use dockerfile::parse_dockerfile;
pub use expand::{expand, parse_duration};

use std::fmt;
use std::time::Duration;

use lines::{Line, logical_lines};
use parse::Parser;

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
pub(super) enum Dialect {
    Recipe,
    Dockerfile,
}

/// An error at byte `offset` of `line`.
pub(super) fn error_at(
    file: &str,
    line: &Line,
    offset: usize,
    message: impl Into<String>,
) -> RecipeError {
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
    let mut cmd: Option<Step> = None;
    let mut entrypoint: Option<Step> = None;
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
                *slot = Some(step(Instruction::Start(command)));
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
        (Some(mut e), Some(c)) => {
            if let (Instruction::Start(e), Instruction::Start(c)) =
                (&mut e.instruction, c.instruction)
            {
                e.push(' ');
                e.push_str(&c);
            }
            Some(e)
        }
        (e, c) => e.or(c),
    };
    recipe.steps.extend(start);
    Ok(recipe)
}

#[cfg(test)]
mod tests;

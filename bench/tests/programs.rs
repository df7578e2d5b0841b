//! Every program the workspace runs is installed by `scripts/setup`.
//!
//! A green CI once hid a missing install step: `wrk` was on the CI machine by
//! hand, never in `scripts/setup`, so the README's test command failed on
//! every fresh machine. This test looks at the code, not at the machine, so it
//! fails on a machine that has everything installed:
//!
//! - Rust: every `Command::new(…)` of the workspace. The program is the
//!   string literal, or the string of the `const` named there, or what a
//!   `// runs: <program>…[; why]` note on that line or the three above
//!   names (`// runs: -; why` for a program no package gives: the
//!   workspace's own binaries, programs inside a sandbox, a path a test
//!   makes);
//! - shell: the command words of `scripts/*` and `.ci/run`;
//!
//! and each must be a program of a row of `scripts/packages`, the table
//! `scripts/setup` installs from. Each row with programs must in turn give a
//! program something here runs (tier `build` excepted: the build runs those).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A program some code runs, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    program: String,
    at: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// One row of `scripts/packages`.
#[derive(Debug)]
struct Row {
    package: String,
    tier: String,
    programs: Vec<String>,
}

fn table(text: &str) -> Vec<Row> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_owned);
            let package = words.next().expect("a row starts with its package");
            let tier = words.next().unwrap_or_default();
            assert!(
                ["build", "run", "tests"].contains(&tier.as_str()),
                "scripts/packages: row {package:?} has tier {tier:?} (build, run or tests)"
            );
            Row {
                package,
                tier,
                programs: words.collect(),
            }
        })
        .collect()
}

/// A program's name as the code names it: a path's last component.
fn base(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

// ---- Rust ----------------------------------------------------------------

/// Every `.rs` file of the workspace but this one, `target/` and the
/// patched third-party crates.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    let me = Path::new(file!()).file_name().unwrap();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if p.is_dir() {
                if !["target", "third_party", "node_modules", ".git"].contains(&name.as_ref()) {
                    stack.push(p);
                }
            } else if name.ends_with(".rs")
                && !(p.parent().unwrap().ends_with("bench/tests") && name == me.to_string_lossy())
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `const NAME: &str = "value";` of every file, by name.
fn string_consts<'a>(files: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for text in files {
        for line in text.lines() {
            let Some(rest) = line.trim_start().split("const ").nth(1) else {
                continue;
            };
            let Some((name, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            if let Some((value, _)) = value.split_once('"') {
                out.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }
    out
}

/// The programs the `Command::new` calls of one file run, or an error for
/// a call whose program cannot be named.
fn rust_uses(
    file: &str,
    text: &str,
    consts: &BTreeMap<String, String>,
) -> Result<Vec<Use>, String> {
    const CALL: &str = "Command::new(";
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(CALL) {
        let at = from + i;
        from = at + CALL.len();
        let line_no = text[..at].matches('\n').count();
        let line = lines[line_no];
        let col = at - text[..at].rfind('\n').map_or(0, |n| n + 1);
        if line[..col].contains("//") {
            continue; // a comment
        }
        let here = format!("{file}:{}", line_no + 1);
        let note = lines[line_no.saturating_sub(3)..=line_no]
            .iter()
            .rev()
            .find_map(|l| l.split_once("// runs:").map(|(_, r)| r.trim()));
        if let Some(note) = note {
            if note.is_empty() {
                return Err(format!(
                    "{here}: `// runs:` names no program (`-` for none)"
                ));
            }
            if !note.starts_with('-') {
                let names = note.split(';').next().unwrap_or_default();
                out.extend(names.split_whitespace().map(|p| Use {
                    program: p.to_owned(),
                    at: here.clone(),
                }));
            }
            continue;
        }
        let arg = text[from..].trim_start();
        if let Some(lit) = arg.strip_prefix('"') {
            let end = lit
                .find('"')
                .ok_or_else(|| format!("{here}: unterminated string"))?;
            out.push(Use {
                program: base(&lit[..end]).to_owned(),
                at: here,
            });
            continue;
        }
        let path: String = arg
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let name = path.rsplit("::").next().unwrap_or_default();
        let after = arg[path.len()..].trim_start();
        match consts.get(name) {
            Some(value) if !name.is_empty() && after.starts_with(')') => out.push(Use {
                program: base(value).to_owned(),
                at: here,
            }),
            _ => {
                let shown: String = arg.chars().take_while(|c| *c != '\n').take(40).collect();
                return Err(format!(
                    "{here}: Command::new({shown}…) runs a program this check cannot name: \
                     note it on that line or above with `// runs: <program>` (or `// runs: -` \
                     and why, for one no package gives)"
                ));
            }
        }
    }
    Ok(out)
}

// ---- shell ---------------------------------------------------------------

const BUILTINS: &[&str] = &[
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "cd",
    "command",
    "compgen",
    "complete",
    "continue",
    "declare",
    "dirs",
    "disown",
    "echo",
    "enable",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fg",
    "getopts",
    "hash",
    "help",
    "jobs",
    "kill",
    "let",
    "local",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "shopt",
    "source",
    "test",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
    "[",
    "[[",
    "]]",
    ":",
    ".",
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "while",
    "until",
    "do",
    "done",
    "time",
    "{",
    "}",
    "!",
    "esac",
    "in",
];

/// Shell text with quoted parts replaced by `Q`, `${…}` and `$((…))` by `V`,
/// and every command substitution (`$(…)`, `` `…` ``, `<(…)`) replaced by `V`
/// and returned separately, to be read as commands of its own.
fn flatten(src: &str, subs: &mut Vec<String>) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    // Reads a `$(…)` body starting after its `(`; returns the index after `)`.
    fn body(b: &[char], mut i: usize, subs: &mut Vec<String>) -> usize {
        let (start, mut depth, mut quote) = (i, 1, None::<char>);
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c == '(' => depth += 1,
                None if c == ')' => {
                    depth -= 1;
                    if depth == 0 {
                        subs.push(b[start..i].iter().collect());
                        return i + 1;
                    }
                }
                None => {}
            }
            i += 1;
        }
        subs.push(b[start..].iter().collect());
        b.len()
    }
    let mut dq = false;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            '\\' => {
                out.push('Q');
                i += 2;
                continue;
            }
            '$' if next == Some('(') && b.get(i + 2) == Some(&'(') => {
                // Arithmetic: its inner `$(…)` are still commands.
                let mut j = i + 3;
                let mut depth = 2;
                while j < b.len() && depth > 0 {
                    if b[j] == '$' && b.get(j + 1) == Some(&'(') {
                        j = body(&b, j + 2, subs);
                        continue;
                    }
                    match b[j] {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                out.push('V');
                i = j;
                continue;
            }
            '$' | '<' if next == Some('(') => {
                i = body(&b, i + 2, subs);
                out.push('V');
                continue;
            }
            '`' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .map_or(b.len(), |p| i + 1 + p);
                subs.push(b[i + 1..end].iter().collect());
                out.push('V');
                i = end + 1;
                continue;
            }
            '$' if next == Some('{') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map_or(b.len(), |p| i + p);
                out.push('V');
                i = end + 1;
                continue;
            }
            '"' => {
                dq = !dq;
                out.push('Q');
            }
            _ if dq => out.push('Q'),
            '\'' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(b.len(), |p| i + 1 + p);
                out.push('Q');
                i = end + 1;
                continue;
            }
            '#' if out.is_empty() || out.ends_with(|c: char| c.is_whitespace() || c == ';') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Splits flattened shell text into words and operators.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if c.is_whitespace() && c != '\n' {
            flush(&mut word, &mut out);
        } else if ["&&", "||", ";;"].contains(&two.as_str()) {
            flush(&mut word, &mut out);
            out.push(two);
            i += 1;
        } else if ['\n', ';', '|', '&', '(', ')'].contains(&c) {
            if c == '&' && (word.ends_with('>') || chars.get(i + 1) == Some(&'>')) {
                word.push(c); // 2>&1, &>file
            } else {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            }
        } else {
            word.push(c);
        }
        i += 1;
    }
    flush(&mut word, &mut out);
    out
}

/// The command words of a shell script (and of its command substitutions),
/// its interpreter, and what `# runs: <program>…` comments name (for a
/// program the script runs by a path it computes).
fn shell_uses(file: &str, text: &str) -> Vec<Use> {
    let mut out: Vec<Use> = Vec::new();
    let named = |p: &str| Use {
        program: base(p).to_owned(),
        at: file.to_owned(),
    };
    if let Some(shebang) = text.lines().next().and_then(|l| l.strip_prefix("#!")) {
        out.extend(
            shebang
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .map(named),
        );
    }
    for line in text.lines() {
        if let Some((_, names)) = line.trim_start().split_once("# runs:") {
            out.extend(
                names
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(named),
            );
        }
    }
    let joined = text.replace("\\\n", " ");
    let functions: BTreeSet<String> = joined
        .lines()
        .filter_map(|l| l.trim().split_once("()").map(|(n, _)| n.trim().to_owned()))
        .filter(|n| {
            n.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
        .collect();
    let mut pending = vec![joined];
    while let Some(src) = pending.pop() {
        let mut subs = Vec::new();
        let toks = tokens(&flatten(&src, &mut subs));
        pending.extend(subs);
        #[derive(PartialEq)]
        enum At {
            Command,
            Args,
            CaseSubject,
            CasePattern,
        }
        let mut at = At::Command;
        let mut cases = 0usize;
        for (k, t) in toks.iter().enumerate() {
            let op = ["\n", ";", "|", "&", "&&", "||", "(", ")"].contains(&t.as_str());
            match at {
                At::CaseSubject => {
                    if t == "in" {
                        at = At::CasePattern;
                    }
                    continue;
                }
                At::CasePattern => {
                    if t == "esac" {
                        cases -= 1;
                        at = At::Args;
                    } else if t == ")" {
                        at = At::Command;
                    }
                    continue;
                }
                _ => {}
            }
            if t == ";;" {
                at = if cases > 0 {
                    At::CasePattern
                } else {
                    At::Command
                };
                continue;
            }
            if op {
                at = At::Command;
                continue;
            }
            if at == At::Args {
                continue;
            }
            // At a command word.
            let word = t.as_str();
            let is_assignment = word.split_once('=').is_some_and(|(n, _)| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '+')
            });
            if is_assignment
                || [
                    "if", "then", "else", "elif", "while", "until", "do", "!", "time", "exec", "{",
                ]
                .contains(&word)
            {
                continue; // the next word is a command too
            }
            if word == "case" {
                cases += 1;
                at = At::CaseSubject;
                continue;
            }
            at = At::Args;
            if word == "for" || word == "select" || word == "function" {
                continue;
            }
            let ours = word.starts_with("scripts/")
                || word.starts_with("target/")
                || word.starts_with("./");
            let skip = BUILTINS.contains(&word)
                || functions.contains(word)
                || ours
                || word.starts_with(['Q', 'V', '-', '>', '<', '*', '@'])
                || word.chars().next().is_some_and(|c| c.is_ascii_digit())
                || toks.get(k + 1).is_some_and(|n| n == "(");
            if !skip {
                out.push(named(word));
            }
        }
    }
    out
}

fn shell_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("scripts"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p)
                .is_ok_and(|t| t.starts_with("#!/usr/bin/env bash") || t.starts_with("#!/bin/sh"))
        })
        .collect();
    out.push(root.join(".ci/run"));
    out.sort();
    out
}

// ---- the checks ----------------------------------------------------------

/// Every program the workspace runs, with where.
fn all_uses(root: &Path) -> (Vec<Use>, Vec<String>) {
    let files: Vec<(String, String)> = rust_files(root)
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let consts = string_consts(files.iter().map(|(_, t)| t.as_str()));
    let (mut uses, mut errors) = (Vec::new(), Vec::new());
    for (name, text) in &files {
        match rust_uses(name, text, &consts) {
            Ok(u) => uses.extend(u),
            Err(e) => errors.push(e),
        }
    }
    for p in shell_files(root) {
        let name = p.strip_prefix(root).unwrap().display().to_string();
        uses.extend(shell_uses(&name, &std::fs::read_to_string(&p).unwrap()));
    }
    (uses, errors)
}

#[test]
fn every_program_the_workspace_runs_is_installed_by_scripts_setup() {
    let root = workspace();
    let rows = table(&std::fs::read_to_string(root.join("scripts/packages")).unwrap());
    let given: BTreeMap<&str, &str> = rows
        .iter()
        .flat_map(|r| r.programs.iter().map(|p| (base(p), r.package.as_str())))
        .collect();
    let (uses, errors) = all_uses(&root);
    assert!(
        errors.is_empty(),
        "unnamed programs:\n  {}",
        errors.join("\n  ")
    );
    assert!(
        uses.len() > 20,
        "the scan found only {} uses: {uses:?}",
        uses.len()
    );
    let mut missing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for u in &uses {
        if !given.contains_key(u.program.as_str()) {
            missing.entry(&u.program).or_default().insert(&u.at);
        }
    }
    assert!(
        missing.is_empty(),
        "programs the workspace runs that no row of scripts/packages gives, so scripts/setup \
         never installs them:\n{}",
        missing
            .iter()
            .map(|(p, at)| format!(
                "  {p}: {}",
                at.iter().copied().collect::<Vec<_>>().join(", ")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_row_of_scripts_packages_gives_a_program_something_runs() {
    let root = workspace();
    let rows = table(&std::fs::read_to_string(root.join("scripts/packages")).unwrap());
    let (uses, _) = all_uses(&root);
    let used: BTreeSet<&str> = uses.iter().map(|u| u.program.as_str()).collect();
    let stale: Vec<String> = rows
        .iter()
        .filter(|r| r.tier != "build")
        .filter(|r| !r.programs.iter().any(|p| used.contains(base(p))))
        .map(|r| format!("{} ({})", r.package, r.programs.join(" ")))
        .collect();
    assert!(
        stale.is_empty(),
        "rows of scripts/packages whose programs nothing runs (drop them, or the code lost a \
         `// runs:` note): {stale:?}"
    );
}

// ---- the scanners themselves ----------------------------------------------

fn programs(uses: &[Use]) -> Vec<&str> {
    uses.iter().map(|u| u.program.as_str()).collect()
}

#[test]
fn rust_scan_names_literals_consts_and_notes_and_refuses_the_rest() {
    let consts = string_consts(["pub const NFT: &str = \"nft\";"]);
    let text = "let a = Command::new(\"wrk\");\n\
                let b = std::process::Command::new(\n    \"/usr/sbin/nginx\",\n);\n\
                let c = Command::new(firewall::NFT).arg(\"-f\");\n\
                // runs: node chromium; the script starts chromium\n\
                let d = Command::new(&node_bin);\n\
                let e = Command::new(&own); // runs: - the workspace's own binary\n\
                // Command::new(in a comment) is no call\n";
    let uses = rust_uses("x.rs", text, &consts).unwrap();
    assert_eq!(programs(&uses), ["wrk", "nginx", "nft", "node", "chromium"]);
    assert_eq!(uses[1].at, "x.rs:2");

    let e = rust_uses("y.rs", "\n\nlet x = Command::new(bin);\n", &consts).unwrap_err();
    assert!(e.starts_with("y.rs:3: Command::new(bin);"), "{e}");
    let e = rust_uses("z.rs", "let x = Command::new(NOT_A_CONST);\n", &consts).unwrap_err();
    assert!(e.contains("cannot name"), "{e}");
}

#[test]
fn shell_scan_finds_command_words_and_skips_the_rest() {
    let script = r#"#!/usr/bin/env bash
set -euo pipefail  # comment mentioning ls
say() { echo "x (y)" >&2; }
cd "$(dirname "$0")/.."
start=$(date +%s)
n=$(( $(tr -d x < f | wc -l) + 1 ))
if ! grep -q foo bar 2>&1; then say hi; fi
X=1 rustup target list | awk '{print $1}' && scripts/setup
for p in $progs; do has "$p" || apt-get install "$p"; done
case "$1" in
    start) start ;;
    --x|stop) nft list tables ;;
    *) losetup -a ;;
esac
mapfile -t a < <(pgrep wrenn)
exec target/release/wrenn up "$@"
"#;
    let mut got = programs(&shell_uses("s", script))
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(
        got,
        [
            "apt-get", "awk", "bash", "date", "dirname", "env", "grep", "has", "losetup", "nft",
            "pgrep", "rustup", "start", "tr", "wc"
        ]
    );
}

use std::time::Duration;

use super::*;

fn error(text: &str) -> String {
    parse("Recipe", text).unwrap_err().to_string()
}

fn docker_error(text: &str) -> String {
    parse_dockerfile("Dockerfile", text)
        .unwrap_err()
        .to_string()
}

#[test]
fn every_instruction() {
    let r = parse(
        "Recipe",
        "# a data-science image\n\
         FROM base\n\
         RUN apt-get update && \\\n\
         \x20   apt-get install -y python3\n\
         RUN --timeout=30m pip install jupyterlab\n\
         env A=1 B=\"two words\" C='$HOME' D=${A}x\n\
         WORKDIR app\n\
         USER wrenn-user\n\
         COPY a.txt b/ ./dest/\n\
         COPY one two\n\
         START jupyter lab --port 8888\n\
         READY --timeout=1m --interval=500ms curl -fs localhost:8888/api\n",
    )
    .unwrap();
    assert_eq!(r.from.as_deref(), Some("base"));
    let got: Vec<_> = r
        .steps
        .iter()
        .map(|s| (s.line, s.column, s.instruction.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                3,
                1,
                Instruction::Run {
                    command: "apt-get update && apt-get install -y python3".into(),
                    timeout: DEFAULT_RUN_TIMEOUT,
                }
            ),
            (
                5,
                1,
                Instruction::Run {
                    command: "pip install jupyterlab".into(),
                    timeout: Duration::from_secs(1800),
                }
            ),
            (
                6,
                1,
                Instruction::Env(vec![
                    ("A".into(), "1".into()),
                    ("B".into(), "two words".into()),
                    ("C".into(), "\\$HOME".into()),
                    ("D".into(), "${A}x".into()),
                ])
            ),
            (7, 1, Instruction::Workdir("app".into())),
            (8, 1, Instruction::User("wrenn-user".into())),
            (
                9,
                1,
                Instruction::Copy {
                    sources: vec!["a.txt".into(), "b/".into()],
                    dest: "./dest/".into(),
                    extract: false,
                }
            ),
            (
                10,
                1,
                Instruction::Copy {
                    sources: vec!["one".into()],
                    dest: "two".into(),
                    extract: false,
                }
            ),
            (11, 1, Instruction::Start("jupyter lab --port 8888".into())),
            (
                12,
                1,
                Instruction::Ready {
                    command: "curl -fs localhost:8888/api".into(),
                    timeout: Duration::from_secs(60),
                    interval: Duration::from_millis(500),
                }
            ),
        ]
    );
    assert_eq!(
        r.steps[0].text,
        "RUN apt-get update && apt-get install -y python3"
    );
}

#[test]
fn without_from_the_build_chooses() {
    let r = parse("Recipe", "RUN true").unwrap();
    assert_eq!(r.from, None);
    assert_eq!(r.steps.len(), 1);
    assert_eq!(parse("Recipe", "# nothing\n\n").unwrap().steps, []);
}

#[test]
fn every_error_names_file_line_and_column() {
    for (text, want) in [
        ("BUILD x", "Recipe:1:1: unknown instruction `BUILD`"),
        (
            "RUN true\nFROM base",
            "Recipe:2:1: FROM must be the first instruction",
        ),
        ("FROM Base", "Recipe:1:6: FROM Base: not a template name"),
        ("FROM", "Recipe:1:5: FROM needs a template name"),
        ("FROM a b", "Recipe:1:8: FROM takes one template name"),
        (
            "FROM a AS b",
            "Recipe:1:8: FROM … AS: multi-stage builds are not supported",
        ),
        ("RUN", "Recipe:1:4: RUN needs a command"),
        (
            "RUN   --timeout=10x true",
            "Recipe:1:7: RUN --timeout=10x: `10x` is not a duration",
        ),
        (
            "RUN --timeout true",
            "Recipe:1:5: RUN: --timeout needs a value",
        ),
        (
            "RUN --user=root true",
            "Recipe:1:5: RUN: unknown flag --user (it takes --timeout=…)",
        ),
        (
            "RUN --timeout=0s true",
            "Recipe:1:5: RUN --timeout=0s: `0s`: a duration must be above zero",
        ),
        ("ENV", "Recipe:1:4: ENV needs KEY=VALUE"),
        ("ENV A=1 B", "Recipe:1:9: ENV B: expected KEY=VALUE"),
        ("ENV 1A=x", "Recipe:1:5: ENV: `1A` is not a variable name"),
        ("ENV A=\"open", "Recipe:1:7: a `\"` is never closed"),
        ("WORKDIR", "Recipe:1:8: WORKDIR needs a path"),
        ("WORKDIR a b", "Recipe:1:11: WORKDIR takes one argument"),
        ("USER Root", "Recipe:1:6: USER Root: not a user name"),
        (
            "COPY a",
            "Recipe:1:6: COPY needs a source and a destination",
        ),
        (
            "COPY a b c",
            "Recipe:1:10: COPY: with several sources the destination must be a directory ending in `/` (got `c`)",
        ),
        (
            "COPY /etc/passwd x",
            "Recipe:1:6: COPY /etc/passwd: an absolute source is outside the build context",
        ),
        (
            "COPY ok ../up x/",
            "Recipe:1:9: COPY ../up: `..` leaves the build context",
        ),
        (
            "COPY a/../../b x",
            "Recipe:1:6: COPY a/../../b: `..` leaves the build context",
        ),
        (
            "COPY --chown=x a b",
            "Recipe:1:6: COPY: unknown flag --chown (it takes none)",
        ),
        ("START", "Recipe:1:6: START needs a command"),
        (
            "READY --every=1s true",
            "Recipe:1:7: READY: unknown flag --every",
        ),
        ("ARG X", "Recipe:1:1: unknown instruction `ARG`"),
        (
            "RUN a \\",
            "Recipe:1:7: the line ends in `\\` but no line follows",
        ),
    ] {
        let got = error(text);
        assert!(
            got.starts_with(want),
            "{text:?}: got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn positions_follow_continuations_and_indentation() {
    // The bad duration sits on the third physical line, indented.
    let e = error("# c\n  RUN \\\n      --timeout=1x true\nRUN x");
    assert!(e.starts_with("Recipe:3:7: RUN --timeout=1x:"), "{e}");
    let e = error("ENV A=1 \\\n   B=2 \\\n   C\n");
    assert!(
        e.starts_with("Recipe:3:4: ENV C: expected KEY=VALUE"),
        "{e}"
    );
    let e = error("\n\n    COPY a b \\\n  # comment inside\n    c\n");
    assert!(
        e.starts_with("Recipe:5:5: COPY: with several sources"),
        "{e}"
    );
}

#[test]
fn dockerfile_subset() {
    let r = parse_dockerfile(
        "Dockerfile",
        "FROM base\n\
         ARG VERSION=1.2\n\
         ENV PATH=/opt/bin:$PATH\n\
         ENV GREETING hello world\n\
         RUN [\"sh\", \"-c\", \"echo it's $VERSION\"]\n\
         ADD app.tar.gz /opt/\n\
         COPY [\"a b\", \"c\", \"/dst/\"]\n\
         WORKDIR /opt/app\n\
         USER node\n\
         ENTRYPOINT [\"node\"]\n\
         CMD server.js --port 3000\n",
    )
    .unwrap();
    let got: Vec<_> = r.steps.into_iter().map(|s| s.instruction).collect();
    assert_eq!(
        got,
        [
            Instruction::Arg {
                name: "VERSION".into(),
                default: Some("1.2".into())
            },
            Instruction::Env(vec![("PATH".into(), "/opt/bin:$PATH".into())]),
            Instruction::Env(vec![("GREETING".into(), "hello world".into())]),
            Instruction::Run {
                command: r"sh -c 'echo it'\''s $VERSION'".into(),
                timeout: DEFAULT_RUN_TIMEOUT,
            },
            Instruction::Copy {
                sources: vec!["app.tar.gz".into()],
                dest: "/opt/".into(),
                extract: true,
            },
            Instruction::Copy {
                sources: vec!["a b".into(), "c".into()],
                dest: "/dst/".into(),
                extract: false,
            },
            Instruction::Workdir("/opt/app".into()),
            Instruction::User("node".into()),
            Instruction::Start("node server.js --port 3000".into()),
        ]
    );
    for (text, want) in [
        (
            "EXPOSE 80",
            "Dockerfile:1:1: the Dockerfile instruction `EXPOSE` is not supported",
        ),
        (
            "FROM base\nHEALTHCHECK NONE",
            "Dockerfile:2:1: the Dockerfile instruction `HEALTHCHECK`",
        ),
        (
            "FROM --platform=linux/amd64 base",
            "Dockerfile:1:6: FROM --platform=linux/amd64: flags are not supported",
        ),
        (
            "ADD https://example.com/x.tgz /x/",
            "Dockerfile:1:5: ADD https://example.com/x.tgz: URLs are not supported",
        ),
        (
            "RUN [\"a\", b]",
            "Dockerfile:1:11: RUN: the exec form must be a JSON array of strings (expected a string)",
        ),
        (
            "CMD [\"a\"] x",
            "Dockerfile:1:11: CMD: the exec form must be a JSON array of strings (text after the `]`)",
        ),
        (
            "START x",
            "Dockerfile:1:1: the Dockerfile instruction `START` is not supported",
        ),
        (
            "RUN --mount=type=cache,target=/x true",
            "Dockerfile:1:5: RUN: unknown flag --mount (it takes none)",
        ),
    ] {
        let got = docker_error(text);
        assert!(
            got.starts_with(want),
            "{text:?}: got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn expansion() {
    let env = |k: &str| match k {
        "HOME" => Some("/home/u".to_owned()),
        "A" => Some("1".to_owned()),
        _ => None,
    };
    for (s, want) in [
        ("$HOME/bin", "/home/u/bin"),
        ("${HOME}x", "/home/ux"),
        ("a${A}b$A", "a1b1"),
        ("$UNSET.", "."),
        ("\\$HOME", "$HOME"),
        ("cost: $5 and $", "cost: $5 and $"),
        ("C:\\dir", "C:\\dir"),
    ] {
        assert_eq!(expand(s, env).unwrap(), want, "{s}");
    }
    assert!(expand("${HOME", env).unwrap_err().contains("never closed"));
    assert!(
        expand("${1x}", env)
            .unwrap_err()
            .contains("not a variable name")
    );
}

#[test]
fn durations() {
    for (s, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("10m", 600_000),
        ("1h30m", 5_400_000),
        ("2m30s", 150_000),
    ] {
        assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
    }
    for s in ["", "10", "s", "1x", "30s1m", "1m1m", "-1s", "0s", "1.5s"] {
        assert!(parse_duration(s).is_err(), "{s}");
    }
}

mod context {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::super::context::{EntryKind, Problem};
    use super::super::{collect, parse};

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("app/lib")).unwrap();
        fs::write(r.join("app/main.py"), "print(1)\n").unwrap();
        fs::write(r.join("app/lib/util.py"), "x = 1\n").unwrap();
        fs::write(r.join("README"), "hi\n").unwrap();
        symlink("main.py", r.join("app/entry.py")).unwrap();
        d
    }

    fn digests(root: &Path, recipe: &str) -> Vec<String> {
        let r = parse("Recipe", recipe).unwrap();
        collect("Recipe", &r, root)
            .unwrap()
            .steps
            .into_iter()
            .map(|s| s.digest)
            .collect()
    }

    #[test]
    fn sources_are_walked_with_inner_symlinks_kept() {
        let d = tree();
        let r = parse("Recipe", "RUN true\nCOPY app README ./dst/\n").unwrap();
        let c = collect("Recipe", &r, d.path()).unwrap();
        assert_eq!(c.steps.len(), 1);
        assert_eq!(c.steps[0].step, 1);
        let paths: Vec<_> = c.steps[0]
            .entries
            .iter()
            .map(|e| e.path.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "README",
                "app",
                "app/entry.py",
                "app/lib",
                "app/lib/util.py",
                "app/main.py"
            ]
        );
        let link = &c.steps[0].entries[2];
        assert_eq!(
            link.kind,
            EntryKind::Symlink {
                target: "main.py".into()
            }
        );
    }

    #[test]
    fn the_digest_follows_what_a_step_reads_and_nothing_else() {
        let d = tree();
        let recipe = "COPY app/lib /l/\nCOPY README /r\n";
        let before = digests(d.path(), recipe);
        fs::write(d.path().join("app/main.py"), "print(2)\n").unwrap();
        assert_eq!(digests(d.path(), recipe), before, "an unread file changed");
        fs::write(d.path().join("app/lib/util.py"), "x = 2\n").unwrap();
        let after = digests(d.path(), recipe);
        assert_ne!(after[0], before[0], "a read file changed");
        assert_eq!(after[1], before[1]);
        let f = d.path().join("README");
        let mut p = fs::metadata(&f).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
        fs::set_permissions(&f, p).unwrap();
        assert_ne!(digests(d.path(), recipe)[1], after[1], "a mode changed");
    }

    #[test]
    fn nothing_leads_out_of_the_context() {
        let d = tree();
        let r = d.path();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), r.join("out")).unwrap();
        symlink("../../../etc/passwd", r.join("app/lib/passwd")).unwrap();
        symlink("/etc/shadow", r.join("abs")).unwrap();
        for (recipe, source, problem) in [
            ("COPY out/secret /x", "out/secret", "Escapes"),
            ("COPY out /x/", "out", "Escapes"),
            ("COPY app /x/", "app", "Escapes"),
            ("COPY abs /x", "abs", "Escapes"),
            ("RUN true\n  COPY nope /x", "nope", "Missing"),
            ("COPY app/*.py /x/", "app/*.py", "Pattern"),
            ("COPY $SRC /x", "$SRC", "Pattern"),
        ] {
            let parsed = parse("Recipe", recipe).unwrap();
            let e = collect("Recipe", &parsed, r).unwrap_err();
            assert_eq!(e.source_name, source, "{recipe}");
            let got = match e.problem {
                Problem::Escapes { .. } => "Escapes",
                Problem::Missing(_) => "Missing",
                Problem::Pattern => "Pattern",
                _ => "other",
            };
            assert_eq!(got, problem, "{recipe}: {e}");
            assert!(e.to_string().contains(&format!("`{source}`")), "{e}");
        }
        let parsed = parse("Recipe", "RUN true\n  COPY nope /x").unwrap();
        let e = collect("Recipe", &parsed, r).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "Recipe:2:3: source `nope`: no such file or directory in the build context"
            ),
            "{e}"
        );
    }
}

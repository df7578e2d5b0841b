use super::*;

fn parse_ok(text: &str) -> Template {
    parse(Path::new("/t.json"), text).unwrap_or_else(|e| panic!("{}", crate::wire::chain(&e)))
}

fn parse_err(text: &str) -> String {
    crate::wire::chain(&parse(Path::new("/t.json"), text).unwrap_err())
}

#[test]
fn a_full_file_is_read() {
    let t = parse_ok(
        r#"{
            "user": "wrenn-user",
            "workdir": "/home/wrenn-user//app/",
            "env": {"X": "1", "PATH": "/opt/bin:/usr/bin"},
            "start": "python3 -m http.server 8000",
            "ready": {"command": "curl -sf localhost:8000", "timeout_ms": 5000, "interval_ms": 50},
            "from_a_newer_build": {"ignored": true}
        }"#,
    );
    assert_eq!(t.user.as_deref(), Some("wrenn-user"));
    assert_eq!(t.workdir, Some(PathBuf::from("/home/wrenn-user/app")));
    assert_eq!(
        t.env,
        BTreeMap::from([
            ("PATH".to_owned(), "/opt/bin:/usr/bin".to_owned()),
            ("X".to_owned(), "1".to_owned()),
        ])
    );
    assert_eq!(t.start.as_deref(), Some("python3 -m http.server 8000"));
    assert_eq!(
        t.ready,
        Some(Ready {
            command: "curl -sf localhost:8000".into(),
            timeout: Duration::from_secs(5),
            interval: Duration::from_millis(50),
        })
    );
}

#[test]
fn every_field_is_optional() {
    assert_eq!(parse_ok("{}"), Template::default());
    let t = parse_ok(r#"{"ready": {"command": "true"}, "user": "", "start": null}"#);
    assert_eq!(
        t,
        Template {
            ready: Some(Ready {
                command: "true".into(),
                timeout: DEFAULT_READY_TIMEOUT,
                interval: DEFAULT_READY_INTERVAL,
            }),
            ..Template::default()
        }
    );
    assert_eq!(DEFAULT_READY_TIMEOUT, Duration::from_secs(120));
    assert_eq!(DEFAULT_READY_INTERVAL, Duration::from_millis(200));
    // A READY without a command checks nothing.
    assert_eq!(parse_ok(r#"{"ready": {"timeout_ms": 1}}"#).ready, None);
    assert_eq!(parse_ok(r#"{"env": {"A": ""}}"#).env["A"], "");
}

#[test]
fn malformed_files_name_the_file_and_the_problem() {
    let cases = [
        ("", "parsing the template file /t.json: EOF while parsing"),
        ("{\"user\": ", "parsing the template file /t.json: EOF"),
        ("[1]", "parsing the template file /t.json: invalid type"),
        (
            r#"{"user": 7}"#,
            "invalid type: integer `7`, expected a string",
        ),
        (r#"{"env": {"A": 1}}"#, "invalid type: integer `1`"),
        (
            r#"{"ready": {"command": "x", "timeout_ms": -1}}"#,
            "invalid value: integer `-1`",
        ),
        (
            r#"{"workdir": "app"}"#,
            "the template file /t.json: workdir: path \"app\" is not absolute",
        ),
        (r#"{"workdir": "/a/../b"}"#, "contains a `..` component"),
        (
            r#"{"env": {"A=B": "1"}}"#,
            "the template file /t.json: env: invalid variable name \"A=B\"",
        ),
        (r#"{"env": {"": "1"}}"#, "env: invalid variable name \"\""),
        (
            r#"{"env": {"A": "x\u0000"}}"#,
            "env[\"A\"] contains a NUL byte",
        ),
        (r#"{"start": "a\u0000b"}"#, "start contains a NUL byte"),
        (
            r#"{"ready": {"command": "true", "interval_ms": 0}}"#,
            "ready.interval_ms must be at least 1",
        ),
    ];
    for (text, needle) in cases {
        let err = parse_err(text);
        assert!(err.contains(needle), "{text}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn a_missing_file_means_no_defaults_and_others_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.json");
    assert_eq!(load(&path).unwrap(), None);
    assert_eq!(load_or_none(&path), Template::default());

    std::fs::write(&path, r#"{"user": "app", "start": "serve"}"#).unwrap();
    let t = load(&path).unwrap().unwrap();
    assert_eq!(t.user.as_deref(), Some("app"));
    assert_eq!(load_or_none(&path), t);

    std::fs::write(&path, "{not json").unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err, TemplateError::Parse { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(load_or_none(&path), Template::default());

    // A directory where the file should be: unreadable, not missing.
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, TemplateError::Read { .. }), "{err}");
    assert_eq!(load_or_none(dir.path()), Template::default());
}

#[test]
fn the_request_user_wins_then_the_template_then_root() {
    let none = Template::default();
    let app = Template {
        user: Some("app".into()),
        ..Template::default()
    };
    assert_eq!(none.user(None), "root");
    assert_eq!(none.user(Some("")), "root");
    assert_eq!(none.user(Some("alice")), "alice");
    assert_eq!(app.user(None), "app");
    assert_eq!(app.user(Some("")), "app");
    assert_eq!(app.user(Some("alice")), "alice");
}

#[test]
fn the_request_cwd_wins_then_the_template_workdir() {
    let none = Template::default();
    let app = Template {
        workdir: Some("/srv/app".into()),
        ..Template::default()
    };
    assert_eq!(none.workdir(None), None);
    assert_eq!(none.workdir(Some("")), None);
    assert_eq!(none.workdir(Some("/tmp")), Some(Requested::Request("/tmp")));
    assert_eq!(
        app.workdir(None),
        Some(Requested::Template(Path::new("/srv/app")))
    );
    assert_eq!(
        app.workdir(Some("")),
        Some(Requested::Template(Path::new("/srv/app")))
    );
    assert_eq!(app.workdir(Some("tmp")), Some(Requested::Request("tmp")));
}

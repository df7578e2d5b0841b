//! Start-up failures are clear, name what was wrong, and leak nothing.

use wrenn_control::{Chain, Error, Options, StoreConfig};

fn options(dir: &std::path::Path) -> Options {
    Options::new(dir).with_listen("127.0.0.1:0".parse().unwrap())
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path()).with_store(StoreConfig::Url(
        "postgres://wrenn:s3cret@127.0.0.1:1/wrenn".into(),
    ));
    let err = wrenn_control::start(opts).await.unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    let msg = Chain(&err).to_string();
    assert!(
        msg.starts_with("cannot open the store postgres://wrenn:***@127.0.0.1:1/wrenn"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(!dir.path().join("admin.key").exists());
}

#[tokio::test]
async fn a_taken_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = wrenn_control::start(options(dir.path()).with_listen(addr))
        .await
        .unwrap_err();
    let msg = Chain(&err).to_string();
    assert!(
        msg.starts_with(&format!("cannot listen on {addr}: ")),
        "{msg}"
    );
}

#[tokio::test]
async fn a_bad_agent_address_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = wrenn_control::start(options(dir.path()).with_agent("127.0.0.1:7801"))
        .await
        .unwrap_err();
    assert_eq!(
        Chain(&err).to_string(),
        "host local: invalid agent address \"127.0.0.1:7801\" (expected http://HOST:PORT): only http:// addresses are supported"
    );
    let mut opts = options(dir.path());
    opts.hosts.clear();
    let err = wrenn_control::start(opts).await.unwrap_err();
    assert!(matches!(err, Error::NoHosts), "{err:?}");
}

#[tokio::test]
async fn an_unwritable_key_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A file where $WRENN_DIR should be a directory; the store lives elsewhere.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let opts = Options::new(&not_a_dir)
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_store(StoreConfig::Sqlite(dir.path().join("db").join("wrenn.db")));
    let err = wrenn_control::start(opts).await.unwrap_err();
    let msg = Chain(&err).to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot set up API keys in {}",
            not_a_dir.display()
        )),
        "{msg}"
    );
}

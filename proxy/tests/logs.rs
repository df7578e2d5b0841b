//! Logging: one structured access-log line per request, and Pingora's own
//! `log` output arriving in `tracing`. Its own test binary, because it
//! installs a process-wide subscriber.

#[path = "it/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use common::*;

#[derive(Debug, Clone)]
struct Event {
    target: String,
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Event {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        // Events bridged from `log` carry their target in a `log.target` field.
        let target = fields
            .iter()
            .find(|(k, _)| k == "log.target")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| event.metadata().target().to_owned());
        self.0.lock().unwrap().push(Event {
            target,
            level: *event.metadata().level(),
            fields,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_and_pingora_logs_reach_tracing() {
    let capture = Capture::default();
    // `set_global_default`, not `init()`: init would install the log bridge
    // itself, and this test is about the proxy installing it.
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let h = Harness::start().await;
    let up = Upstream::http().await;
    let broken = Upstream::broken().await;
    h.running("sblog", 1).await;
    let r = get(
        h.addr(),
        &format!("/proxy/sblog/{}/x?secret=1", up.port()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    // A POST: Pingora's path, so Pingora's own error line too (a GET takes
    // the fast path, which logs an access line like this one).
    let mut c = Conn::open(h.addr()).await;
    let r = c
        .send("POST", &format!("/proxy/sblog/{}/", broken.port()), &[])
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_error");

    let events = capture.0.clone();
    wait_until("two access lines", Duration::from_secs(5), || {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.target == "wrenn_proxy::access")
            .count()
            >= 2
    })
    .await;
    let events = events.lock().unwrap().clone();
    let access: Vec<_> = events
        .iter()
        .filter(|e| e.target == "wrenn_proxy::access")
        .collect();
    assert_eq!(access.len(), 2, "one line per request: {access:#?}");
    let ok = access[0];
    assert_eq!(ok.field("sandbox_id"), Some("sblog"));
    assert_eq!(ok.field("port"), Some(up.port().to_string().as_str()));
    assert_eq!(ok.field("form"), Some("path"));
    assert_eq!(ok.field("status"), Some("200"));
    assert_eq!(ok.field("attempts"), Some("1"));
    assert_eq!(ok.field("reused"), Some("false"));
    assert_eq!(
        ok.field("path"),
        Some(format!("/proxy/sblog/{}/x", up.port()).as_str()),
        "no query in the log"
    );
    assert!(ok.field("bytes_out").unwrap().parse::<u64>().unwrap() > 0);
    assert!(ok.field("duration_us").is_some() && ok.field("bytes_in") == Some("0"));
    assert_eq!(access[1].field("error"), Some("upstream_error"));
    assert_eq!(access[1].field("status"), Some("502"));

    let pingora: Vec<_> = events
        .iter()
        .filter(|e| e.target.starts_with("pingora"))
        .collect();
    assert!(
        pingora.iter().any(|e| e.level == tracing::Level::ERROR
            && e.field("message")
                .is_some_and(|m| m.contains("Fail to proxy"))),
        "Pingora's error line for the broken upstream is bridged: {events:#?}"
    );
}

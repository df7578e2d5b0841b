//! Many streams at once on one channel.

use std::collections::HashMap;

use crate::common::*;

#[tokio::test]
async fn two_hundred_concurrent_exec_streams_do_not_cross() {
    let agent = Agent::start().await;
    let runs = (0..200).map(|id| {
        let mut req = sh("i=1; while [ $i -le 50 ]; do echo \"stream-$ID-line-$i\"; i=$((i+1)); done; echo \"err-$ID\" >&2; exit $((ID % 7))");
        req.process.as_mut().unwrap().envs = HashMap::from([("ID".to_owned(), id.to_string())]);
        let agent = &agent;
        async move { (id, run(agent, req).await) }
    });
    let results = futures::future::join_all(runs).await;
    assert_eq!(results.len(), 200);
    for (id, out) in results {
        let expected: String = (1..=50)
            .map(|i| format!("stream-{id}-line-{i}\n"))
            .collect();
        assert_eq!(
            out.stdout_str(),
            expected,
            "stream {id} got someone else's output"
        );
        assert_eq!(out.stderr, format!("err-{id}\n").into_bytes());
        assert_eq!(out.end().exit_code, id % 7);
    }
}

//! The client against an in-test HTTP server on a Unix socket that checks
//! every request's method, path and exact JSON body.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::*;
use crate::firecracker::config::*;
use crate::firecracker::{VmPlan, configure, guest_mac};

/// One expected exchange: the request the server must see and its answer.
#[derive(Clone)]
struct Exchange {
    method: &'static str,
    path: &'static str,
    json: String,
    status: u16,
    answer: &'static str,
}

/// Serves `script` in order; records every mismatch.
fn serve(
    listener: UnixListener,
    script: Vec<Exchange>,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let p = problems.clone();
    let task = tokio::spawn(async move {
        let mut script = script.into_iter().peekable();
        while let Some(want) = script.peek().cloned() {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let (head, body) = loop {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 && buf.is_empty() {
                    break (String::new(), String::new()); // a readiness probe
                }
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            if head.is_empty() {
                continue;
            }
            script.next();
            let line = head.lines().next().unwrap_or_default().to_owned();
            let expect_line = format!("{} {} HTTP/1.1", want.method, want.path);
            if line != expect_line {
                p.lock()
                    .unwrap()
                    .push(format!("request line {line:?}, want {expect_line:?}"));
            }
            if !head.contains("Content-Type: application/json") {
                p.lock()
                    .unwrap()
                    .push(format!("{line}: no JSON content type"));
            }
            if body != want.json {
                p.lock()
                    .unwrap()
                    .push(format!("{line}: body {body}, want {}", want.json));
            }
            let reason = if want.status < 300 {
                "OK"
            } else {
                "Bad Request"
            };
            let resp = format!(
                "HTTP/1.1 {} {reason}\r\nServer: Firecracker API\r\nContent-Length: {}\r\n\r\n{}",
                want.status,
                want.answer.len(),
                want.answer
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    (task, problems)
}

fn ok(method: &'static str, path: &'static str, json: &str) -> Exchange {
    Exchange {
        method,
        path,
        json: json.to_owned(),
        status: 204,
        answer: "",
    }
}

#[tokio::test]
async fn configure_sends_each_resource_with_exact_json_then_starts() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let plan = VmPlan {
        kernel: "/k/vmlinux".into(),
        boot_args: "console=ttyS0 ip=169.254.0.21::169.254.0.22:255.255.255.252:abc:eth0:off"
            .into(),
        rootfs: "/w/sandboxes/abc/rootfs.ext4".into(),
        mac: guest_mac(crate::slot::Slot::new(1001).unwrap()),
        vcpus: 2,
        memory_mb: 512,
    };
    assert_eq!(plan.mac, "06:00:0a:d2:07:d3");
    let script = vec![
        ok(
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path":"/k/vmlinux","boot_args":"console=ttyS0 ip=169.254.0.21::169.254.0.22:255.255.255.252:abc:eth0:off"}"#,
        ),
        ok(
            "PUT",
            "/drives/rootfs",
            r#"{"drive_id":"rootfs","path_on_host":"/w/sandboxes/abc/rootfs.ext4","is_root_device":true,"is_read_only":false}"#,
        ),
        ok(
            "PUT",
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:0a:d2:07:d3","tx_rate_limiter":{"bandwidth":{"size":209715200,"one_time_burst":104857600,"refill_time":1000}}}"#,
        ),
        ok(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":2,"mem_size_mib":512,"smt":false}"#,
        ),
        ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#),
        ok("PATCH", "/vm", r#"{"state":"Paused"}"#),
        ok("PATCH", "/vm", r#"{"state":"Resumed"}"#),
        ok("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#),
    ];
    let (server, problems) = serve(listener, script);
    let api = ApiClient::new(&sock);
    api.wait_ready(Duration::from_secs(5)).await.unwrap();
    configure(&api, &plan).await.unwrap();
    api.vm_state(VmStateValue::Paused).await.unwrap();
    api.vm_state(VmStateValue::Resumed).await.unwrap();
    api.action(ActionType::SendCtrlAltDel).await.unwrap();
    server.await.unwrap();
    let problems = problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn an_error_status_carries_method_path_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let script = vec![Exchange {
        method: "PUT",
        path: "/machine-config",
        json: r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false}"#.into(),
        status: 400,
        answer: r#"{"fault_message":"vcpu count out of range"}"#,
    }];
    let (server, problems) = serve(listener, script);
    let api = ApiClient::new(&sock);
    let err = api
        .machine_config(&MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
        })
        .await
        .unwrap_err();
    server.await.unwrap();
    assert!(problems.lock().unwrap().is_empty());
    match &err {
        ApiError::Status {
            method,
            path,
            status,
            body,
        } => {
            assert_eq!(
                (*method, path.as_str(), *status),
                ("PUT", "/machine-config", 400)
            );
            assert!(body.contains("vcpu count out of range"));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("PUT /machine-config")
            && text.contains("400")
            && text.contains("fault_message"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_an_io_error_naming_it() {
    let api = ApiClient::new("/nonexistent/firecracker.sock");
    let err = api
        .action(ActionType::InstanceStart)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/firecracker.sock") && err.contains("PUT /actions"),
        "{err}"
    );
    let err = api
        .wait_ready(Duration::from_millis(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/firecracker.sock"), "{err}");
}

//! The function binaries under a Lambda Runtime API (served here, as Lambda serves it): the
//! task input goes in, the step's JSON comes out, and a failure is posted with the step
//! error's stable name as `errorType` — the name the state machine's Retry and Catch match.

use std::{
    collections::VecDeque,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_tests::{bed_var, fresh_store, unique, workspace_bin};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// What the function posted back for one invocation.
#[derive(Debug, Clone)]
struct Posted {
    request_id: String,
    kind: String,
    body: serde_json::Value,
}

struct RuntimeApi {
    addr: String,
    posted: Arc<Mutex<Vec<Posted>>>,
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            while buf.len() < i + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let mut first = head.lines().next().unwrap_or("").split_whitespace();
            let method = first.next().unwrap_or("").to_string();
            let path = first.next().unwrap_or("").to_string();
            return Some((method, path, buf[i + 4..].to_vec()));
        }
    }
}

impl RuntimeApi {
    /// Serves `events` one per `next`, then holds further `next` calls open.
    async fn start(events: Vec<serde_json::Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let queue = Arc::new(Mutex::new(VecDeque::from(events)));
        let posted = Arc::new(Mutex::new(Vec::new()));
        let p = posted.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (queue, p) = (queue.clone(), p.clone());
                n += 1;
                let seq = n;
                tokio::spawn(async move {
                    while let Some((method, path, body)) = read_request(&mut sock).await {
                        let reply = if method == "GET" && path.ends_with("/invocation/next") {
                            let next = queue.lock().expect("queue").pop_front();
                            let Some(event) = next else {
                                // No more work: hold the long poll open, as Lambda does.
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            };
                            let body = event.to_string();
                            let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: req-{seq}-{}\r\nlambda-runtime-deadline-ms: {deadline}\r\nlambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:test\r\nlambda-runtime-trace-id: Root=1-0-0\r\ncontent-length: {}\r\n\r\n{body}",
                                uuid_like(),
                                body.len()
                            )
                        } else {
                            let parts: Vec<&str> = path.split('/').collect();
                            // /2018-06-01/runtime/invocation/<id>/<response|error>
                            if parts.len() >= 6 {
                                p.lock().expect("posted").push(Posted {
                                    request_id: parts[4].to_string(),
                                    kind: parts[5].to_string(),
                                    body: serde_json::from_slice(&body)
                                        .unwrap_or(serde_json::Value::Null),
                                });
                            } else {
                                p.lock().expect("posted").push(Posted {
                                    request_id: String::new(),
                                    kind: path.clone(),
                                    body: serde_json::from_slice(&body)
                                        .unwrap_or(serde_json::Value::Null),
                                });
                            }
                            "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_string()
                        };
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, posted }
    }

    async fn wait_posted(&self, n: usize) -> Vec<Posted> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.posted.lock().expect("posted").clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} answers: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn uuid_like() -> String {
    unique("")
}

fn run_function(name: &str, api: &RuntimeApi, table: &str) -> Child {
    Command::new(workspace_bin(name))
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("FERRY_STATE_TABLE", table)
        .env("FERRY_LINK_SECRET_PARAM", "/ferry/test/link-secret")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the function")
}

#[tokio::test]
async fn a_function_answers_with_the_step_output_or_the_stable_error_name() {
    bed_var("AWS_ENDPOINT_URL");
    let store = fresh_store().await;
    let missing = unique("mig-");
    let api = RuntimeApi::start(vec![
        // A migration that does not exist: the store's NotFound.
        serde_json::json!({ "migration_id": missing }),
        // Not what the state machine sends.
        serde_json::json!({ "migration": 42 }),
    ])
    .await;
    let mut child = run_function("ferry-config-sync", &api, store.table());
    let posted = api.wait_posted(2).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(posted.iter().all(|p| p.kind == "error"), "{posted:?}");
    assert_eq!(
        posted[0].body["errorType"], "Ferry.Failed.NotFound",
        "{posted:?}"
    );
    assert!(
        posted[0].body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains(&missing)),
        "{posted:?}"
    );
    assert_eq!(
        posted[1].body["errorType"], "Ferry.Failed.Input",
        "{posted:?}"
    );
    assert_ne!(posted[0].request_id, posted[1].request_id);

    // A success: the rollback of a migration whose preflight never created it does nothing
    // and says so.
    let api = RuntimeApi::start(vec![serde_json::json!({
        "migration_id": missing,
        "execution_arn": "arn:aws:states:us-east-1:123456789012:execution:ferry:x",
        "error": {"Error": "Ferry.Blocked.LockHeld", "Cause": "another migration holds the app"}
    })])
    .await;
    let mut child = run_function("ferry-rollback", &api, store.table());
    let posted = api.wait_posted(1).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(posted[0].body["undone"], serde_json::json!([]));
    assert_eq!(posted[0].body["error"]["Error"], "Ferry.Blocked.LockHeld");
}

#[tokio::test]
async fn a_function_without_its_settings_reports_an_init_error() {
    let api = RuntimeApi::start(vec![]).await;
    let mut child = Command::new(workspace_bin("ferry-cutover"))
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "ferry-cutover")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env_remove("FERRY_STATE_TABLE")
        .env_remove("FERRY_LINK_SECRET_PARAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the function did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "a function missing its settings must not start"
    );
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(
        err.contains("FERRY_LINK_SECRET_PARAM") || err.contains("FERRY_STATE_TABLE"),
        "{err}"
    );
}

//! `choreo up`'s access flags end to end, through the built binary
//! (ARCHITECTURE.md §14.4): GIVEN `--auth jwt --jwks FILE` with a key the
//! test made, THEN the API refuses a missing token (401) and an order for
//! another customer (403), and `choreo order create|show --token` acts as
//! the token's customer only; `--auth jwt` without `--jwks` refuses to
//! start; listening beyond loopback with the API open is warned about.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use shared::testkit::jwt::TestIssuer;
use shared::testkit::order_body;

/// A `choreo up` this test started, killed when dropped.
struct Up {
    child: Child,
    /// Where its API answers.
    url: String,
    /// Its stderr lines, as they come.
    stderr: mpsc::Receiver<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(args: &[&str], dir: &tempfile::TempDir) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_choreo"))
        .args(["up", "--port", "0", "--db"])
        .arg(dir.path().join("choreo.db"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the choreo binary starts");
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (ready, banner) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("choreo is up: ") {
                let _ = ready.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let (errors, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = errors.send(line);
        }
    });
    let url = banner.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|error| {
        let said: Vec<String> = lines.try_iter().collect();
        panic!("choreo up did not print its address ({error}): {said:#?}")
    });
    Up { child, url, stderr: lines }
}

fn choreo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_choreo")).args(args).env("RUST_LOG", "warn").output().expect("choreo runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_jwt_each_customer_acts_only_as_themselves() {
    // GIVEN choreo up checking tokens against a JWK set the test made
    let dir = tempfile::tempdir().expect("a temporary directory");
    let issuer = TestIssuer::new("up-key");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks().to_string()).expect("write the JWK set");
    let up = up(&["--auth", "jwt", "--jwks", jwks.to_str().expect("a UTF-8 path")], &dir);
    let (a, b) = (issuer.token("customer-a", 600), issuer.token("customer-b", 600));
    let http = reqwest::Client::new();

    // THEN no token: 401; A ordering for B: 403; the metrics stay open
    let anonymous = http.get(format!("{}/orders/{}", up.url, uuid::Uuid::now_v7())).send().await.expect("answers");
    assert_eq!(anonymous.status().as_u16(), 401);
    let mut for_b = order_body("WIDGET-1", 1, "FR");
    for_b["customer_id"] = "customer-b".into();
    let forbidden = http.post(format!("{}/orders", up.url)).bearer_auth(&a).json(&for_b).send().await.expect("answers");
    assert_eq!(forbidden.status().as_u16(), 403);
    assert_eq!(http.get(format!("{}/metrics", up.url)).send().await.expect("answers").status().as_u16(), 200);

    // AND choreo order create|show --token act as the token's customer
    let created = choreo(&[
        "order",
        "create",
        "--item",
        "WIDGET-1:1",
        "--customer",
        "customer-a",
        "--url",
        &up.url,
        "--token",
        &a,
    ]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let order_id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let shown = choreo(&["order", "show", &order_id, "--timeline", "--url", &up.url, "--token", &a]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("order.created"));
    let not_yours = choreo(&["order", "show", &order_id, "--url", &up.url, "--token", &b]);
    assert!(!not_yours.status.success());
    assert!(
        String::from_utf8_lossy(&not_yours.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&not_yours.stderr)
    );
}

#[test]
fn auth_jwt_without_a_jwk_set_refuses_to_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("choreo.db");
    let refused = choreo(&["up", "--auth", "jwt", "--port", "0", "--db", db.to_str().expect("a UTF-8 path")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--jwks"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn an_open_api_beyond_loopback_is_warned_about() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let up = up(&["--host", "0.0.0.0"], &dir);
    let warned = up.stderr.recv_timeout(Duration::from_secs(10)).expect("a line on stderr");
    assert!(warned.contains("no authorization"), "{warned}");
}

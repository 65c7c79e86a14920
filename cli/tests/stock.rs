//! `choreo stock import|list` and `choreo up` on each store: SQLite on a
//! temporary file, DynamoDB on moto at `MOTO_URL` (default
//! `http://127.0.0.1:5000`; `scripts/with-moto` starts it), in tables of the
//! test's own prefix. An import is idempotent, keeps stock conserved, and
//! shows through `GET /inventory/{sku}` of the API router.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shared::bus::NoBroker;
use shared::store::dynamodb::{DynamoStore, TABLES};
use shared::store::sqlite::SqliteStore;
use shared::store::{ImportReport, Store};
use shared::testkit::aws::{local_sdk_config, moto_url};
use tower::ServiceExt;

// ---------------------------------------------------------------- fixtures

fn table_prefix() -> String {
    format!("s{}-", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn moto_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&local_sdk_config(&moto_url()).await)
}

async fn drop_tables(client: &aws_sdk_dynamodb::Client, prefix: &str) {
    for table in &TABLES {
        let _ = client.delete_table().table_name(table.name(prefix)).send().await;
    }
}

fn write_file(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the stock file");
    path
}

/// `GET /inventory/{sku}` through the router `choreo up` serves.
async fn inventory(store: &Arc<dyn Store>, sku: &str) -> (StatusCode, Value) {
    let router = choreo::up::app_router(Arc::clone(store), Arc::new(NoBroker));
    let request = Request::get(format!("/inventory/{sku}")).body(Body::empty()).expect("a request");
    let response = router.oneshot(request).await.expect("the router answers");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("the body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

const FILE: &str = r#"[
  {"sku": "WIDGET-1", "available": 40, "max_replenish": 500},
  {"sku": "NEW-5", "available": 7, "max_replenish": 3}
]"#;

/// GIVEN a store seeded with WIDGET-1 (100), WHEN the file is imported twice,
/// THEN the first import adds NEW-5 and sets WIDGET-1 to 40, the second
/// changes nothing, and the API shows the imported units.
async fn import_is_idempotent_and_visible_through_the_api(store: Arc<dyn Store>) {
    let seeded = shared::store::SeedStock {
        sku: shared::contract::domain::Sku::parse("WIDGET-1").expect("a SKU"),
        available: 100,
        max_replenish: 500,
    };
    assert_eq!(store.seed_if_empty(&[seeded]).await.expect("seed"), 1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = write_file(dir.path(), "stock.json", FILE);

    let first = choreo::stock::import_file(&*store, &file).await.expect("the first import");
    assert_eq!(first, ImportReport { added: 1, updated: 1, unchanged: 0 });
    let before = store.all_stock().await.expect("read the stock");
    let second = choreo::stock::import_file(&*store, &file).await.expect("the second import");
    assert_eq!(second, ImportReport { added: 0, updated: 0, unchanged: 2 });
    assert_eq!(store.all_stock().await.expect("read the stock"), before, "the second import changed something");

    let (status, widget) = inventory(&store, "WIDGET-1").await;
    assert_eq!(status, StatusCode::OK, "{widget}");
    assert_eq!(widget, json!({"sku": "WIDGET-1", "available": 40, "reserved": 0, "shipped": 0, "replenished": 0}));
    let (status, new) = inventory(&store, "NEW-5").await;
    assert_eq!(status, StatusCode::OK, "{new}");
    assert_eq!(new["available"], 7);
    assert!(before.iter().all(|level| level.is_conserved()), "{before:?}");
}

/// WHEN a file is bad (not JSON, a bad SKU, a SKU twice), THEN the error names
/// the file and nothing changes.
async fn a_bad_file_is_refused_naming_it_and_changes_nothing(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bad = [
        ("truncated.json", r#"[{"sku": "A-1", "available": 1"#),
        (
            "bad-sku.json",
            r#"[{"sku": "A-1", "available": 1, "max_replenish": 1}, {"sku": "lower", "available": 1, "max_replenish": 1}]"#,
        ),
        (
            "twice.json",
            r#"[{"sku": "A-1", "available": 1, "max_replenish": 1}, {"sku": "A-1", "available": 2, "max_replenish": 1}]"#,
        ),
        ("negative.json", r#"[{"sku": "A-1", "available": -1, "max_replenish": 1}]"#),
    ];
    for (name, contents) in bad {
        let file = write_file(dir.path(), name, contents);
        let error = choreo::stock::import_file(&*store, &file).await.expect_err("a bad file is refused");
        let message = error.to_string();
        assert!(message.contains(name), "the error does not name the file: {message}");
        assert!(message.contains("nothing was imported"), "{message}");
    }
    assert_eq!(store.all_stock().await.expect("read the stock"), vec![]);
}

// ---------------------------------------------------------------- the library, per store

#[tokio::test]
async fn sqlite_import_is_idempotent_and_visible_through_the_api() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("choreo.db")).expect("open");
    import_is_idempotent_and_visible_through_the_api(Arc::new(store)).await;
}

#[tokio::test]
async fn sqlite_refuses_a_bad_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("choreo.db")).expect("open");
    a_bad_file_is_refused_naming_it_and_changes_nothing(Arc::new(store)).await;
}

#[tokio::test]
async fn dynamodb_import_is_idempotent_and_visible_through_the_api() {
    let (client, prefix) = (moto_client().await, table_prefix());
    let store = DynamoStore::new(client.clone(), prefix.clone());
    store.create_tables().await.unwrap_or_else(|error| panic!("tables on moto (scripts/with-moto): {error}"));
    import_is_idempotent_and_visible_through_the_api(Arc::new(store)).await;
    drop_tables(&client, &prefix).await;
}

#[tokio::test]
async fn dynamodb_refuses_a_bad_file() {
    let (client, prefix) = (moto_client().await, table_prefix());
    let store = DynamoStore::new(client.clone(), prefix.clone());
    store.create_tables().await.unwrap_or_else(|error| panic!("tables on moto (scripts/with-moto): {error}"));
    a_bad_file_is_refused_naming_it_and_changes_nothing(Arc::new(store)).await;
    drop_tables(&client, &prefix).await;
}

// ---------------------------------------------------------------- the binary

/// `choreo` with the environment of a DynamoDB store on moto (or none).
fn choreo(dynamodb_prefix: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_choreo"));
    command.env("RUST_LOG", "warn").stdin(Stdio::null());
    for name in ["CHOREO_STORE", "CHOREO_DB", "CHOREO_TABLE_PREFIX", "CHOREO_INVENTORY", "AMQP_URL"] {
        command.env_remove(name);
    }
    if let Some(prefix) = dynamodb_prefix {
        command
            .env("CHOREO_STORE", "dynamodb")
            .env("CHOREO_TABLE_PREFIX", prefix)
            .env("AWS_ENDPOINT_URL", moto_url())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
    }
    command
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the choreo binary runs");
    assert!(output.status.success(), "choreo failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_stock_commands_import_and_list_on_sqlite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("choreo.db");
    let file = write_file(dir.path(), "stock.json", FILE);

    let imported: Value =
        serde_json::from_str(&run(choreo(None).args(["stock", "import"]).arg(&file).arg("--db").arg(&db)))
            .expect("one JSON object");
    assert_eq!((imported["added"].as_u64(), imported["updated"].as_u64()), (Some(2), Some(0)), "{imported}");
    let again: Value =
        serde_json::from_str(&run(choreo(None).args(["stock", "import"]).arg(&file).env("CHOREO_DB", &db)))
            .expect("one JSON object");
    assert_eq!(again["unchanged"].as_u64(), Some(2), "{again}");

    let listed = run(choreo(None).args(["stock", "list", "--db"]).arg(&db));
    let lines: Vec<Value> = listed.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    let skus: Vec<(&str, u64)> = lines
        .iter()
        .map(|level| (level["sku"].as_str().unwrap_or_default(), level["available"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(skus, [("NEW-5", 7), ("WIDGET-1", 40)]);

    let bad = write_file(dir.path(), "bad.json", "{}");
    let output = choreo(None).args(["stock", "import"]).arg(&bad).arg("--db").arg(&db).output().expect("runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("bad.json"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `choreo up`, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `choreo up --port 0` and answers it with the banner it printed.
fn up(mut command: Command) -> (Up, String) {
    let mut child = command
        .args(["up", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("choreo up starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let up = Up(child);
    let (ready, banner) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("choreo is up: ") {
                let _ = ready.send(line);
            }
        }
    });
    let line = banner.recv_timeout(Duration::from_secs(60)).expect("choreo up prints its banner (its stderr is above)");
    (up, line)
}

#[tokio::test]
async fn choreo_up_on_dynamodb_creates_the_tables_seeds_them_and_sees_an_import() {
    let prefix = table_prefix();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = write_file(dir.path(), "stock.json", FILE);

    // WHEN choreo up starts with CHOREO_STORE=dynamodb on tables that do not exist
    let (running, banner) = up(choreo(Some(&prefix)));

    // THEN it says which store it uses, and serves the built-in catalog from DynamoDB
    assert!(banner.contains(&format!("store DynamoDB tables {prefix}*")), "{banner}");
    let url = banner.trim_start_matches("choreo is up: ").split_whitespace().next().unwrap_or_default().to_owned();
    let get = |sku: &'static str| {
        let url = url.clone();
        async move {
            let response = reqwest::get(format!("{url}/inventory/{sku}")).await.expect("GET /inventory");
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            response.json::<Value>().await.expect("a JSON body")
        }
    };
    assert_eq!(get("WIDGET-1").await["available"], 100);

    // WHEN the stock file is imported into the same tables by the command
    let imported: Value = serde_json::from_str(&run(choreo(Some(&prefix)).args(["stock", "import"]).arg(&file)))
        .expect("one JSON object");
    assert_eq!((imported["added"].as_u64(), imported["updated"].as_u64()), (Some(1), Some(1)), "{imported}");

    // THEN the running system's API shows it
    assert_eq!(get("WIDGET-1").await["available"], 40);
    assert_eq!(get("NEW-5").await["available"], 7);
    drop(running);

    // AND a restart does not seed over it (the stock table is not empty)
    let (running, _) = up(choreo(Some(&prefix)));
    let listed = run(choreo(Some(&prefix)).args(["stock", "list"]));
    assert!(listed.lines().any(|line| line.contains("\"WIDGET-1\"") && line.contains("\"available\":40")), "{listed}");
    drop(running);
    drop_tables(&moto_client().await, &prefix).await;
}

//! `amqps://` as managed brokers (Amazon MQ, CloudAMQP) require it: every
//! path of the saga through `choreo up --amqp amqps://…` with `AMQP_CA_FILE`,
//! against a TLS terminator in front of the test broker whose CA the test
//! made; and each way TLS can be misconfigured failing within a bound, with a
//! message that says which way, and never the password.
//!
//! `AMQP_CA_FILE` is read when a link is made, so each test sets it under
//! `ENV` just around starting the system (tests may share a process).

mod common;

use std::mem::ManuallyDrop;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use choreo::up::{AmqpSystem, UpConfig};
use common::{
    InProcess, SagaPath, Scratch, Vhost, assert_conserved, assert_function_queues_empty, assert_saga_ends, broker_base,
    default_catalog, test_settings,
};
use shared::bus::amqp::{AmqpLink, CA_FILE_VAR, ConnectError, connect_error};
use shared::config::StoreSettings;
use shared::step::ShipCountries;
use shared::testkit::tls::TlsTerminator;
use tokio::sync::Mutex;

/// Guards `AMQP_CA_FILE` while a test sets it and makes its links.
static ENV: Mutex<()> = Mutex::const_new(());

/// A password the failing cases put in their URLs, to look for in the messages.
const SECRET: &str = "s3cr3t-pa55";

/// How long a failing start may take before the test calls it a hang (the
/// link's own connect bound is 5 s; nothing asserts a speed).
const FAILURE_BOUND: Duration = Duration::from_secs(30);

/// `host:port` of the test broker, where the terminator forwards to.
fn upstream() -> SocketAddr {
    let base = broker_base();
    let authority = base.rsplit('@').next().unwrap_or(&base);
    let authority = authority.split("://").last().unwrap_or(authority);
    authority
        .to_socket_addrs()
        .unwrap_or_else(|error| panic!("the broker address {authority}: {error}"))
        .next()
        .unwrap_or_else(|| panic!("{authority} resolves"))
}

/// `user:password` of the test broker.
fn credentials() -> String {
    let base = broker_base();
    let after_scheme = base.split("://").last().unwrap_or(&base);
    match after_scheme.rsplit_once('@') {
        Some((credentials, _)) => credentials.to_owned(),
        None => "guest:guest".to_owned(),
    }
}

/// Sets (or clears) `AMQP_CA_FILE` for the links made while `_guard` is held.
fn set_ca_file(_guard: &tokio::sync::MutexGuard<'_, ()>, path: Option<&Path>) {
    // SAFETY: every test of this binary changes the environment only here,
    // under ENV, and reads it (through AmqpLink::new) under the same guard.
    unsafe {
        match path {
            Some(path) => std::env::set_var(CA_FILE_VAR, path),
            None => std::env::remove_var(CA_FILE_VAR),
        }
    }
}

/// One order through `choreo up --amqp amqps://…` (trusting the terminator's
/// CA through `AMQP_CA_FILE`), checked as `amqp_paths` checks the plain one.
async fn run_path(path: SagaPath) {
    let (body, expected) = path.order();
    // GIVEN a TLS endpoint in front of the broker, and a fresh vhost
    let terminator = TlsTerminator::start(upstream());
    let vhost = Vhost::new(&format!("tls-{}", path.label()));
    // The same vhost seen through TLS; the guard above deletes it, once.
    let through_tls =
        ManuallyDrop::new(Vhost { name: vhost.name.clone(), url: terminator.url(&credentials(), &vhost.name) });
    assert!(through_tls.url.starts_with("amqps://"), "{}", through_tls.url);
    let scratch = Scratch::new();
    let catalog = default_catalog();
    let settings = test_settings();

    // AND choreo up --amqp amqps://… with AMQP_CA_FILE
    let system = {
        let guard = ENV.lock().await;
        set_ca_file(&guard, Some(&terminator.ca_file));
        InProcess::start(&through_tls, &scratch.db(), &catalog, settings.clone()).await
    };
    let client = system.client.clone();

    // WHEN an order is placed
    let order_id = client.create_order(&body, None).await.expect("the order is accepted");

    // THEN its saga ends as expected, with the stock at exactly these levels
    assert_saga_ends(&client, &order_id, &expected).await;
    assert_conserved(&*system.store, &catalog).await;

    // AND it all went through TLS
    assert!(terminator.handshakes() >= 1, "no TLS handshake reached the terminator");

    // AND once stopped, no work, retry or dead-letter queue holds anything
    system.shutdown().await;
    let link = AmqpLink::new(&vhost.url, "test-inspect");
    assert_function_queues_empty(&link, &settings).await;
    link.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_an_order_in_stock_ships() {
    run_path(SagaPath::Ships).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_an_order_short_of_stock_is_replenished_then_ships() {
    run_path(SagaPath::Replenished).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_an_order_whose_replenishment_fails_is_cancelled_out_of_stock() {
    run_path(SagaPath::OutOfStock).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_a_shipment_to_antarctica_fails_and_releases_the_stock() {
    run_path(SagaPath::ShipmentFailed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_an_unknown_sku_cancels_the_order() {
    run_path(SagaPath::UnknownSku).await;
}

// ------------------------------------------------------------- failures

/// Starts `choreo up --amqp url` with `AMQP_CA_FILE` = `ca_file`; it must
/// fail within the bound. Answers its message, checked free of the password.
async fn start_must_fail(url: &str, ca_file: Option<&Path>) -> String {
    let scratch = Scratch::new();
    let config = UpConfig {
        store: StoreSettings::sqlite(scratch.db()),
        catalog: default_catalog(),
        ship_countries: ShipCountries::default(),
        delivery: test_settings(),
        observer: None,
        store_counts: None,
    };
    let guard = ENV.lock().await;
    set_ca_file(&guard, ca_file);
    let started = tokio::time::timeout(FAILURE_BOUND, AmqpSystem::start(config, url)).await.unwrap_or_else(|_| {
        panic!("choreo up --amqp {} neither started nor failed within {FAILURE_BOUND:?}", url.replace(SECRET, "***"))
    });
    let Err(error) = started else { panic!("choreo up --amqp must not start here") };
    let message = error.to_string();
    assert!(!message.contains(SECRET), "the password leaked: {message}");
    assert!(!message.contains("within"), "a timeout instead of a clear failure: {message}");
    message
}

/// The same failure seen through a link: the kind a caller can branch on.
async fn link_error(url: &str, ca_file: Option<&Path>) -> lapin::Error {
    let link = {
        let guard = ENV.lock().await;
        set_ca_file(&guard, ca_file);
        AmqpLink::new(url, "test-tls")
    };
    let channel = tokio::time::timeout(FAILURE_BOUND, link.channel()).await.expect("the link answers within the bound");
    let Err(error) = channel else { panic!("the link must not connect here") };
    assert!(!format!("{error} {error:?}").contains(SECRET), "the password leaked: {error:?}");
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused_with_a_message_naming_it() {
    let terminator = TlsTerminator::start(upstream());
    let vhost = Vhost::new("tls-untrusted");
    let url = terminator.url(&format!("guest:{SECRET}"), &vhost.name);
    let unrelated = terminator.unrelated_ca_file();

    let message = start_must_fail(&url, Some(&unrelated)).await;
    assert!(message.contains("not trusted"), "{message}");
    assert!(message.contains("AMQP_CA_FILE"), "the message says what to do: {message}");

    let error = link_error(&url, Some(&unrelated)).await;
    assert!(matches!(connect_error(&error), Some(ConnectError::UntrustedCertificate { .. })), "{error:?}");
    // The system's roots alone do not trust a private CA either.
    let error = link_error(&url, None).await;
    assert!(matches!(connect_error(&error), Some(ConnectError::UntrustedCertificate { .. })), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_host_is_refused_with_a_message_naming_it() {
    let terminator = TlsTerminator::start_wrong_host(upstream());
    let vhost = Vhost::new("tls-wrong-host");
    let url = terminator.url(&format!("guest:{SECRET}"), &vhost.name);

    let message = start_must_fail(&url, Some(&terminator.ca_file)).await;
    assert!(message.contains("not valid for the host name localhost"), "{message}");

    let error = link_error(&url, Some(&terminator.ca_file)).await;
    assert!(matches!(connect_error(&error), Some(ConnectError::WrongHostName { .. })), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_amqp_to_a_tls_port_is_refused_with_a_message_saying_use_amqps() {
    let terminator = TlsTerminator::start(upstream());
    let vhost = Vhost::new("tls-plain-to-tls");
    let url = format!("amqp://guest:{SECRET}@localhost:{}/{}", terminator.port, vhost.name);

    let message = start_must_fail(&url, None).await;
    assert!(message.contains("speaks TLS") && message.contains("amqps://"), "{message}");

    let error = link_error(&url, None).await;
    assert!(matches!(connect_error(&error), Some(ConnectError::TlsPortWithPlainUrl { .. })), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_to_a_plain_port_is_refused_with_a_message_saying_so() {
    let terminator = TlsTerminator::start(upstream());
    let vhost = Vhost::new("tls-tls-to-plain");
    let plain = upstream();
    let url = format!("amqps://guest:{SECRET}@localhost:{}/{}", plain.port(), vhost.name);

    let message = start_must_fail(&url, Some(&terminator.ca_file)).await;
    assert!(message.contains("did not answer the TLS handshake"), "{message}");

    let error = link_error(&url, Some(&terminator.ca_file)).await;
    assert!(matches!(connect_error(&error), Some(ConnectError::PlainPortWithTlsUrl { .. })), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_ca_file_is_a_configuration_error_naming_the_file() {
    let terminator = TlsTerminator::start(upstream());
    let vhost = Vhost::new("tls-bad-ca");
    let url = terminator.url(&format!("guest:{SECRET}"), &vhost.name);

    let missing = terminator.dir().join("no-such-ca.pem");
    let message = start_must_fail(&url, Some(&missing)).await;
    assert!(message.contains(&format!("AMQP_CA_FILE {}: cannot read it", missing.display())), "{message}");

    let garbage = terminator.dir().join("not-a-ca.pem");
    std::fs::write(&garbage, "this is no certificate\n").expect("write a bad CA file");
    let message = start_must_fail(&url, Some(&garbage)).await;
    assert!(message.contains(&format!("AMQP_CA_FILE {}", garbage.display())), "{message}");
    assert!(message.contains("no PEM certificate"), "{message}");

    let error = link_error(&url, Some(&garbage)).await;
    assert!(matches!(connect_error(&error), Some(ConnectError::CaFile { .. })), "{error:?}");
}

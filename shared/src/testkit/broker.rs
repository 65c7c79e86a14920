//! A RabbitMQ virtual host of a test's own, on the broker named by `AMQP_URL`
//! (default [`DEFAULT_AMQP_URL`]), created with `rabbitmqctl` and deleted
//! when its guard drops, also when the test panics; and `rabbitmqctl` itself,
//! for the tests that inspect or restart the broker.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::bus::amqp::{AmqpLink, DEFAULT_AMQP_URL};

/// How long vhost set-up keeps retrying a failing `rabbitmqctl`: another
/// test may be restarting the broker (`stop_app` / `start_app`).
const SETUP_RETRY: Duration = Duration::from_secs(30);

/// Runs `rabbitmqctl` on the local node once; answers its stdout or what went wrong.
pub fn try_rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl").args(args).stdin(Stdio::null()).output().map_err(|error| {
        format!("cannot run rabbitmqctl (is RabbitMQ installed? see scripts/ensure-rabbitmq): {error}")
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Runs `rabbitmqctl` once; panics with what went wrong if it fails.
#[track_caller]
pub fn rabbitmqctl(args: &[&str]) -> String {
    try_rabbitmqctl(args).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `rabbitmqctl`, trying again for a while as long as it fails.
#[track_caller]
fn rabbitmqctl_retrying(args: &[&str]) -> String {
    let deadline = Instant::now() + SETUP_RETRY;
    loop {
        match try_rabbitmqctl(args) {
            Ok(stdout) => return stdout,
            Err(error) if Instant::now() >= deadline => panic!("{error} (still failing after {SETUP_RETRY:?})"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The parts of `AMQP_URL` a test vhost keeps: `scheme://user:password@host:port`
/// (no vhost, no query), and the user to grant permissions to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerBase {
    /// `scheme://credentials@host:port`.
    pub server: String,
    /// The user of the URL (`guest` when it names none).
    pub user: String,
}

impl BrokerBase {
    /// From `AMQP_URL`, or [`DEFAULT_AMQP_URL`] when unset or empty.
    pub fn from_env() -> Self {
        let url = std::env::var("AMQP_URL").ok().filter(|url| !url.is_empty());
        Self::parse(url.as_deref().unwrap_or(DEFAULT_AMQP_URL))
    }

    /// From an `amqp://` or `amqps://` URL.
    pub fn parse(url: &str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap_or_else(|| panic!("AMQP_URL '{url}' has no scheme"));
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let user = match authority.rsplit_once('@') {
            Some((credentials, _)) => credentials.split(':').next().unwrap_or("guest"),
            None => "guest",
        };
        Self { server: format!("{scheme}://{authority}"), user: user.to_owned() }
    }
}

/// A fresh virtual host, deleted when dropped (also when the test panics).
pub struct Vhost {
    /// Its name, `choreo-test-<label>-<random>`.
    pub name: String,
    /// `AMQP_URL` pointed at this vhost.
    pub url: String,
}

impl Vhost {
    /// Creates `choreo-test-<label>-<random>` and lets the URL's user do anything in it.
    #[track_caller]
    pub fn new(label: &str) -> Self {
        let base = BrokerBase::from_env();
        let name = format!("choreo-test-{label}-{}", Uuid::new_v4().simple());
        rabbitmqctl_retrying(&["-q", "add_vhost", &name]);
        // From here on the guard exists, so a failure below still deletes the vhost.
        let vhost = Self { url: format!("{}/{name}", base.server), name };
        rabbitmqctl_retrying(&["-q", "set_permissions", "-p", &vhost.name, &base.user, ".*", ".*", ".*"]);
        vhost
    }

    /// A link (one connection, made on first use) to this vhost.
    pub fn link(&self, name: &str) -> Arc<AmqpLink> {
        AmqpLink::new(&self.url, name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(error) = try_rabbitmqctl(&["-q", "delete_vhost", &self.name]) {
            eprintln!("could not delete the test vhost {}: {error}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BrokerBase;

    #[test]
    fn the_base_keeps_scheme_credentials_and_host_only() {
        let base = BrokerBase::parse("amqps://alice:secret@broker.local:5671/%2f?heartbeat=10");
        assert_eq!(base, BrokerBase { server: "amqps://alice:secret@broker.local:5671".into(), user: "alice".into() });
        let bare = BrokerBase::parse("amqp://127.0.0.1:5672");
        assert_eq!(bare, BrokerBase { server: "amqp://127.0.0.1:5672".into(), user: "guest".into() });
    }
}

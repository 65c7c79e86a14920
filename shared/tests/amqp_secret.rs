//! `AMQP_SECRET_ARN`: a deployed function reads its broker URL from Secrets
//! Manager at the first connection. Secrets Manager is served locally by moto
//! (started by scripts/with-moto); RabbitMQ is the real broker at AMQP_URL.
//! One test in its own binary, because it sets process environment variables.

use shared::bus::DeliverySettings;
use shared::bus::amqp::{AmqpLink, Topology};

#[tokio::test]
async fn the_broker_url_is_read_from_the_secret_at_first_use() {
    let moto = std::env::var("MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    // A vhost of its own (made from AMQP_URL before it is unset below): the
    // default one may hold queues an older choreo declared otherwise.
    let vhost = shared::testkit::broker::Vhost::new("secret");
    let broker = vhost.url.clone();
    // SAFETY: this binary's only test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &moto);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::remove_var("AMQP_URL");
    }
    let config = shared::config::aws_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let name = format!("choreo-amqp-{}", uuid::Uuid::new_v4());
    let created = secrets
        .create_secret()
        .name(&name)
        .secret_string(format!("{broker}\n"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("moto at {moto} must serve Secrets Manager (scripts/with-moto): {error:?}"));
    let arn = created.arn().expect("moto returns the secret's ARN").to_owned();

    // GIVEN only AMQP_SECRET_ARN: the link exists, and nothing is read yet.
    unsafe { std::env::set_var("AMQP_SECRET_ARN", &arn) };
    let link = AmqpLink::from_env("secret-test").expect("AMQP_SECRET_ARN is enough to configure the broker");
    assert!(!link.is_connected().await);

    // WHEN it is first used THEN it connects with the URL from the secret.
    link.declare(&Topology::derive(&DeliverySettings::default())).await.expect("connects with the secret's URL");
    assert!(link.is_connected().await);
    link.close().await;

    // AND a secret that does not exist is a connection error, not a panic.
    unsafe { std::env::set_var("AMQP_SECRET_ARN", format!("{arn}-missing")) };
    let missing = AmqpLink::from_env("secret-test").expect("configured");
    assert!(missing.declare(&Topology::derive(&DeliverySettings::default())).await.is_err());
}

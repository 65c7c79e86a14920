//! Local stand-ins for AWS in tests: moto's server (`scripts/with-moto`) for
//! DynamoDB, SQS and Secrets Manager, and any other local endpoint (`cargo
//! lambda watch`'s Invoke API).

use aws_sdk_dynamodb::config::Credentials;

/// The moto server the tests share: `MOTO_URL`, or `scripts/with-moto`'s default.
pub fn moto_url() -> String {
    std::env::var("MOTO_URL").ok().filter(|url| !url.is_empty()).unwrap_or_else(|| "http://127.0.0.1:5000".to_owned())
}

/// The AWS configuration of a test client for a local endpoint: dummy
/// credentials, region us-east-1, the HTTP client every choreo client uses.
pub async fn local_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let credentials = Credentials::new("test", "test", None, None, "choreo-test");
    crate::config::with_http_client(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Whether the server at `url` is the serialized moto of `scripts/with-moto`
/// (its responses carry `x-choreo-moto: serialized`): a plain `moto_server`
/// applies concurrent transactions non-atomically, which checks of
/// concurrency must refuse.
pub async fn moto_serializes_requests(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
    let Ok(mut stream) = tokio::net::TcpStream::connect(&authority).await else { return false };
    let request = format!("GET /moto-api/config HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    let mut response = Vec::new();
    if stream.write_all(request.as_bytes()).await.is_err() || stream.read_to_end(&mut response).await.is_err() {
        return false;
    }
    String::from_utf8_lossy(&response).to_ascii_lowercase().contains("x-choreo-moto: serialized")
}

/// An endpoint that accepts connections and never answers: what a hung AWS
/// service looks like to a client. Answers its URL; it lives as long as the runtime.
pub async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free local port");
    let url = format!("http://{}", listener.local_addr().expect("the bound address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection); // kept open, never read or answered
        }
    });
    url
}

//! A small HTTP client for the choreo API (`choreo order`, `choreo bench`).

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {error}")]
    Connect { url: String, error: reqwest::Error },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: Value },
    #[error("order {0} did not finish within {1:?}")]
    Timeout(String, Duration),
}

#[derive(Clone)]
pub struct Client {
    /// One connection pool for every request.
    http: reqwest::Client,
    /// The API's base URL, without a trailing slash.
    base: String,
    /// Sent as `Authorization: Bearer` when the API checks callers.
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned(), token: None }
    }

    /// The same client, calling with `token` (`choreo up --auth jwt`, or API Gateway's JWT authorizer).
    pub fn with_token(self, token: Option<String>) -> Self {
        Self { token, ..self }
    }

    /// The API's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: String) -> Result<(u16, Value), ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|error| ClientError::Connect { url: url.clone(), error })?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `POST /orders`; answers the order id.
    pub async fn create_order(&self, order: &Value, idempotency_key: Option<&str>) -> Result<String, ClientError> {
        let url = format!("{}/orders", self.base);
        let mut request = self.http.post(&url).json(order);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        match self.send(request, url.clone()).await? {
            (202, body) => Ok(body["order_id"].as_str().unwrap_or_default().to_owned()),
            (status, body) => Err(ClientError::Status { url, status, body }),
        }
    }

    /// `GET /orders/{id}`.
    pub async fn order(&self, order_id: &str) -> Result<Value, ClientError> {
        let url = format!("{}/orders/{order_id}", self.base);
        match self.send(self.http.get(&url), url.clone()).await? {
            (200, body) => Ok(body),
            (status, body) => Err(ClientError::Status { url, status, body }),
        }
    }

    /// `GET /orders/{id}/timeline`: the saga hop by hop (ARCHITECTURE.md §14.3).
    pub async fn timeline(&self, order_id: &str) -> Result<Value, ClientError> {
        let url = format!("{}/orders/{order_id}/timeline", self.base);
        match self.send(self.http.get(&url), url.clone()).await? {
            (200, body) => Ok(body),
            (status, body) => Err(ClientError::Status { url, status, body }),
        }
    }

    /// `GET /inventory/{sku}`.
    pub async fn inventory(&self, sku: &str) -> Result<Value, ClientError> {
        let url = format!("{}/inventory/{sku}", self.base);
        match self.send(self.http.get(&url), url.clone()).await? {
            (200, body) => Ok(body),
            (status, body) => Err(ClientError::Status { url, status, body }),
        }
    }

    /// Polls an order until it is `SHIPPED` or `CANCELLED`.
    pub async fn wait_terminal(&self, order_id: &str, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            let order = self.order(order_id).await?;
            if matches!(order["status"].as_str(), Some("SHIPPED" | "CANCELLED")) {
                return Ok(order);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout(order_id.to_owned(), timeout));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

//! Who calls the HTTP API, and so what they may see (ARCHITECTURE.md §14.4).
//!
//! - `Open` (local `choreo up` by default): anyone, any customer.
//! - `Jwt`: the customer is a claim of the caller's token (`sub` unless
//!   `CHOREO_CUSTOMER_CLAIM` says otherwise). On AWS, API Gateway's JWT
//!   authorizer has checked the token and the claims arrive in the request
//!   context; locally `choreo up --auth jwt --jwks FILE` checks it itself.
//!   A customer places orders only for themselves (403 otherwise) and sees
//!   only their own orders (404 for anyone else's, so ids leak nothing).
//! - `Iam` (SigV4, checked by API Gateway): the caller's ARN is recorded with
//!   the order it places.
//!
//! `with_auth` resolves the caller once per request and hands it to the
//! handlers as a [`Caller`]; a refused caller gets a 401 problem and never
//! reaches them.

mod jwks;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde_json::Value;

pub use self::jwks::{JwksError, JwksVerifier, TokenError};
use super::http::Problem;
use crate::contract::domain::CustomerId;

/// How the deployed HTTP functions authorize (`IAM` | `JWT`; unset: open).
pub const API_AUTH_VAR: &str = "CHOREO_API_AUTH";
/// The JWT claim naming the customer.
pub const CUSTOMER_CLAIM_VAR: &str = "CHOREO_CUSTOMER_CLAIM";
/// The claim used when none is configured.
pub const DEFAULT_CUSTOMER_CLAIM: &str = "sub";

/// How the API authorizes its callers.
#[derive(Clone, Debug)]
pub enum ApiAuth {
    /// Nobody is checked: any caller acts for any customer.
    Open,
    /// The customer is the token's `claim`.
    Jwt {
        /// The claim naming the customer (`sub` by default).
        claim: String,
        /// Checks tokens here (local); `None`: API Gateway checked them.
        verifier: Option<Arc<JwksVerifier>>,
    },
    /// API Gateway checked a SigV4 signature; the caller is recorded.
    Iam,
}

/// `CHOREO_API_AUTH` names no mode this build knows.
#[derive(Debug, thiserror::Error)]
#[error("{API_AUTH_VAR}='{0}' is not one of IAM, JWT, open")]
pub struct UnknownAuthMode(String);

impl ApiAuth {
    /// The mode of a deployed HTTP function, from its environment (the
    /// template sets `CHOREO_API_AUTH` from the stack's `ApiAuth`).
    pub fn from_env() -> Result<Self, UnknownAuthMode> {
        let claim = std::env::var(CUSTOMER_CLAIM_VAR).unwrap_or_else(|_| DEFAULT_CUSTOMER_CLAIM.to_owned());
        match std::env::var(API_AUTH_VAR).unwrap_or_default().to_ascii_lowercase().as_str() {
            "" | "open" => Ok(Self::Open),
            "jwt" => Ok(Self::Jwt { claim, verifier: None }),
            "iam" => Ok(Self::Iam),
            other => Err(UnknownAuthMode(other.to_owned())),
        }
    }

    /// Whether callers are checked at all.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    /// The caller of a request with `headers` and `extensions` (where
    /// `lambda_http` puts API Gateway's request context).
    pub fn caller(&self, headers: &HeaderMap, extensions: &Extensions) -> Result<Caller, Problem> {
        let authorizer = match extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(context)) => context.authorizer.as_ref(),
            _ => None,
        };
        match self {
            Self::Open => Ok(Caller::Anyone),
            Self::Jwt { claim, verifier } => {
                if let Some(claims) = authorizer.and_then(|authorizer| authorizer.jwt.as_ref()) {
                    return customer_of(claims.claims.get(claim).map(String::as_str), claim);
                }
                let verifier =
                    verifier.as_ref().ok_or_else(|| unauthorized("no verified token claims reached the API"))?;
                let token = bearer(headers)?;
                let claims: HashMap<String, Value> =
                    verifier.verify(token).map_err(|error| unauthorized(&error.to_string()))?;
                customer_of(claims.get(claim).and_then(Value::as_str), claim)
            }
            Self::Iam => {
                let iam = authorizer.and_then(|authorizer| authorizer.iam.as_ref());
                let identity = iam.and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()));
                identity.map(Caller::Iam).ok_or_else(|| unauthorized("no IAM identity reached the API"))
            }
        }
    }
}

/// Who is calling, as the handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Nobody checked (open API).
    Anyone,
    /// A customer, from a verified token.
    Customer(String),
    /// An IAM principal (its ARN).
    Iam(String),
}

impl Caller {
    /// Whether this caller may see an order of `customer`.
    pub fn may_see(&self, customer: &CustomerId) -> bool {
        match self {
            Self::Customer(me) => me == customer.as_str(),
            Self::Anyone | Self::Iam(_) => true,
        }
    }

    /// What is recorded with an order this caller places.
    pub fn placed_by(&self) -> Option<String> {
        match self {
            Self::Iam(arn) => Some(arn.clone()),
            Self::Customer(customer) => Some(format!("customer:{customer}")),
            Self::Anyone => None,
        }
    }

    /// Makes an order body the caller's own: a customer's token names the
    /// customer (filled in when the body leaves it out); a body naming
    /// another is refused (403) before anything is stored.
    pub fn own_order(&self, body: &mut Value) -> Result<(), Problem> {
        let Self::Customer(me) = self else { return Ok(()) };
        let Some(fields) = body.as_object_mut() else { return Ok(()) }; // the 422 of parsing says why
        match fields.get("customer_id") {
            None | Some(Value::Null) => {
                fields.insert("customer_id".into(), Value::String(me.clone()));
                Ok(())
            }
            Some(Value::String(named)) if named == me => Ok(()),
            Some(_) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "customer_id names another customer than your token; leave it out or send your own",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // `with_auth` inserts it for every route it wraps; without it no caller is trusted.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| Problem::internal("no authorization on this route"))
    }
}

/// Wraps every route of `router` so that its handlers get the [`Caller`].
pub fn with_auth(router: Router, auth: Arc<ApiAuth>) -> Router {
    router.layer(from_fn_with_state(auth, authorize))
}

async fn authorize(State(auth): State<Arc<ApiAuth>>, mut request: Request, next: Next) -> Response {
    match auth.caller(request.headers(), request.extensions()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(problem) => {
            let mut response = problem.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", format!("{detail}; send a valid token"))
}

fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let token = value.and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")));
    token.map(str::trim).filter(|token| !token.is_empty()).ok_or_else(|| unauthorized("no Authorization: Bearer token"))
}

fn customer_of(value: Option<&str>, claim: &str) -> Result<Caller, Problem> {
    match value {
        Some(customer) if CustomerId::parse(customer).is_ok() => Ok(Caller::Customer(customer.to_owned())),
        Some(_) => Err(unauthorized(&format!("the token's {claim} claim is not a customer id (1 to 64 characters)"))),
        None => Err(unauthorized(&format!("the token has no {claim} claim"))),
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
        ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
    };

    use super::*;

    fn gateway(authorizer: ApiGatewayRequestAuthorizer) -> Extensions {
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.authorizer = Some(authorizer);
        let mut extensions = Extensions::new();
        extensions.insert(RequestContext::ApiGatewayV2(context));
        extensions
    }

    #[test]
    fn on_lambda_the_customer_is_the_authorizers_claim() {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims.insert("sub".into(), "customer-7".into());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        let auth = ApiAuth::Jwt { claim: "sub".into(), verifier: None };
        let caller = auth.caller(&HeaderMap::new(), &gateway(authorizer)).unwrap();
        assert_eq!(caller, Caller::Customer("customer-7".into()));
        // No context and no verifier: nobody is trusted.
        assert_eq!(auth.caller(&HeaderMap::new(), &Extensions::new()).unwrap_err().status, 401);
    }

    #[test]
    fn with_iam_the_callers_arn_is_recorded() {
        let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
        iam.user_arn = Some("arn:aws:iam::123456789012:user/ada".into());
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.iam = Some(iam);
        let caller = ApiAuth::Iam.caller(&HeaderMap::new(), &gateway(authorizer)).unwrap();
        assert_eq!(caller.placed_by().as_deref(), Some("arn:aws:iam::123456789012:user/ada"));
    }

    #[test]
    fn a_customer_orders_only_for_themselves() {
        let me = Caller::Customer("customer-a".into());
        let mut body = serde_json::json!({"items": []});
        me.own_order(&mut body).unwrap();
        assert_eq!(body["customer_id"], "customer-a");
        let mut other = serde_json::json!({"customer_id": "customer-b"});
        assert_eq!(me.own_order(&mut other).unwrap_err().status, 403);
        assert!(!me.may_see(&CustomerId::parse("customer-b").unwrap()));
        assert!(Caller::Anyone.may_see(&CustomerId::parse("customer-b").unwrap()));
    }
}

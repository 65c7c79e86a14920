//! JWT checks of `choreo up --auth jwt --jwks FILE` (ARCHITECTURE.md §14.4):
//! the signature against a key of the JWK set (by `kid`, or its only key),
//! `exp` (required), and the issuer and audience when configured. On AWS,
//! API Gateway's JWT authorizer does the same and hands over the claims.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

/// Why a JWK set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWK set {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the JWK set is not valid JSON of the JWK Set format (RFC 7517): {0}")]
    Format(#[from] serde_json::Error),
    #[error("the JWK set has no key")]
    Empty,
    #[error("key {kid:?} of the JWK set is unusable: {reason}")]
    Key { kid: Option<String>, reason: String },
}

/// Why a token is refused; each answers 401.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("no key of the JWK set signs tokens with kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("the token is refused: {0}")]
    Refused(jsonwebtoken::errors::Error),
}

/// One public key of the set.
struct Key {
    /// Its `kid`, which a token's header names.
    kid: Option<String>,
    /// The key, ready to verify.
    key: DecodingKey,
}

/// Verifies tokens against a JWK set.
pub struct JwksVerifier {
    /// The set's public keys.
    keys: Vec<Key>,
    /// `iss` a token must have, when set.
    issuer: Option<String>,
    /// `aud` a token must name, when set.
    audience: Option<String>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|key| key.kid.as_deref()).collect();
        f.debug_struct("JwksVerifier").field("kids", &kids).field("issuer", &self.issuer).finish()
    }
}

impl JwksVerifier {
    /// Reads a JWK set file.
    pub fn from_file(path: &Path) -> Result<Self, JwksError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| JwksError::Read { path: path.display().to_string(), error })?;
        Self::from_json(&text)
    }

    /// A JWK set as JSON (`{"keys": [...]}`). Symmetric (`oct`) keys are
    /// refused: a key anyone can read must not be one that signs.
    pub fn from_json(text: &str) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_str(text)?;
        if set.keys.is_empty() {
            return Err(JwksError::Empty);
        }
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err(JwksError::Key { kid, reason: "a symmetric key cannot be published".into() });
            }
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|error| JwksError::Key { kid: kid.clone(), reason: error.to_string() })?;
            keys.push(Key { kid, key });
        }
        Ok(Self { keys, issuer: None, audience: None })
    }

    /// Also require this `iss` and this `aud`.
    pub fn expecting(self, issuer: Option<String>, audience: Option<String>) -> Self {
        Self { issuer, audience, ..self }
    }

    /// The token's claims, once its signature, expiry, issuer and audience hold.
    pub fn verify(&self, token: &str) -> Result<HashMap<String, Value>, TokenError> {
        let header = decode_header(token).map_err(|error| TokenError::Malformed(error.to_string()))?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid.as_str())),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        };
        let key = key.ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
        // The algorithm must also fit the key's type, which `decode` checks.
        let mut validation = Validation::new(header.alg);
        validation.leeway = 5;
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        decode::<HashMap<String, Value>>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(TokenError::Refused)
    }
}

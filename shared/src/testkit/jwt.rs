//! Test tokens: a signing key made for the test (ES256 on P-256), its JWK
//! set as `choreo up --jwks` reads it, and tokens for any claims. Nothing
//! here is fetched: every key is generated in the test process.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// A signing key and the `kid` it is published under.
pub struct TestIssuer {
    /// The key's id in the JWK set and in each token's header.
    pub kid: String,
    /// PKCS#8 DER of the private key.
    der: Vec<u8>,
    /// Uncompressed public point: 0x04, then x and y (32 bytes each).
    public: Vec<u8>,
}

impl TestIssuer {
    /// A fresh P-256 key published as `kid`.
    pub fn new(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|error| panic!("generate a test key: {error}"));
        Self { kid: kid.to_owned(), der: key.serialize_der(), public: key.public_key_raw().to_vec() }
    }

    /// The JWK set that publishes this key.
    pub fn jwks(&self) -> Value {
        assert_eq!(self.public.len(), 65, "an uncompressed P-256 point");
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..]),
        }]})
    }

    /// A token for `subject` expiring `expires_in_secs` from now (negative: expired).
    pub fn token(&self, subject: &str, expires_in_secs: i64) -> String {
        let exp = chrono::Utc::now().timestamp() + expires_in_secs;
        self.sign(&json!({"sub": subject, "exp": exp, "iat": exp - 3600}))
    }

    /// A token with exactly these claims.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &EncodingKey::from_ec_der(&self.der)).unwrap_or_else(|error| panic!("sign: {error}"))
    }
}

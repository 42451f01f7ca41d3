//! JWT authentication: HS256 with a configured secret, `exp` and `sub`
//! required, the algorithm pinned (so `alg: none` or an RSA/HMAC confusion
//! is refused).

use crate::error::{Error, Result};
use crate::ids::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The secret used when none is configured. Anyone can mint tokens with it,
/// so servers log a loud warning when they fall back to it.
pub const DEV_SECRET: &str = "dev-secret-do-not-use-in-production";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Verifies (and, for dev tools and tests, mints) tokens.
#[derive(Clone)]
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(HS256)")
    }
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.is_empty() {
            return Err(Error::BadRequest("the JWT secret must not be empty".into()));
        }
        let bad = |e: jsonwebtoken::errors::Error| Error::BadRequest(format!("JWT secret: {e}"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Ok(Authenticator {
            decoding: DecodingKey::from_secret(secret).map_err(bad)?,
            encoding: EncodingKey::from_secret(secret).map_err(bad)?,
            validation,
        })
    }

    /// The user a token names, or `unauthorized` saying why not.
    pub fn verify(&self, token: &str) -> Result<UserId> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthorized(format!("invalid token: {e}")))?;
        UserId::parse(&data.claims.sub)
            .map_err(|_| Error::Unauthorized("token `sub` is not a valid user id".into()))
    }

    /// Mints a token for `user` valid for `ttl_secs` (dev tools and tests).
    pub fn mint(&self, user: &str, ttl_secs: i64) -> Result<String> {
        let now = now_secs();
        let exp = (now as i64 + ttl_secs).max(0) as u64;
        let claims = Claims {
            sub: user.to_string(),
            exp,
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Store(format!("minting a token: {e}")))
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_tokens_and_refuses_others() {
        let auth = Authenticator::new(b"s3cret").unwrap();
        let t = auth.mint("alice", 60).unwrap();
        assert_eq!(auth.verify(&t).unwrap().as_str(), "alice");

        let other = Authenticator::new(b"another").unwrap();
        assert!(matches!(other.verify(&t), Err(Error::Unauthorized(_))));
        assert!(auth.verify("garbage").is_err());
        assert!(
            auth.verify(&auth.mint("alice", -3600).unwrap()).is_err(),
            "expired"
        );
        assert!(
            auth.verify(&auth.mint("not valid!", 60).unwrap()).is_err(),
            "bad sub"
        );
    }

    #[test]
    fn refuses_alg_none() {
        use base64_like::encode;
        let auth = Authenticator::new(b"s3cret").unwrap();
        let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = encode(br#"{"sub":"alice","exp":99999999999}"#);
        assert!(auth.verify(&format!("{header}.{body}.")).is_err());
    }

    #[test]
    fn refuses_a_token_without_exp() {
        let auth = Authenticator::new(b"s3cret").unwrap();
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp {
                sub: "alice".into(),
            },
            &EncodingKey::from_secret(b"s3cret").unwrap(),
        )
        .unwrap();
        assert!(auth.verify(&t).is_err());
    }

    /// Minimal base64url (no padding) so the test needs no extra crate.
    mod base64_like {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(data: &[u8]) -> String {
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
                for i in 0..=chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }
}

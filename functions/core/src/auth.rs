//! JWT authentication: HS256 with a configured secret of at least 32
//! bytes; `exp` and `sub` required, `nbf` checked, a lifetime of at most
//! 24 h by default, `iss`/`aud` pinned when configured; the algorithm
//! pinned (so `alg: none` or an RSA/HMAC confusion is refused).

use crate::error::{Error, Result};
use crate::ids::{DeviceId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The public development secret: anyone can mint tokens with it, so a
/// server uses it only when started with `--dev`.
pub const DEV_SECRET: &str = "dev-secret-do-not-use-in-production";

/// The shortest secret accepted (HS256 wants a key at least as long as the
/// hash: 32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// How far a token's `iat` may be ahead of this server's clock (clocks
/// drift), and its `exp` beyond the longest lifetime from now.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The longest token lifetime accepted by default (`exp - iat`, or
/// `exp - now` without `iat`).
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// The install the token was issued to (optional): when present it is
    /// the connection's device, whatever `?device=` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
}

/// Who a token speaks for: the user, and the device if the token names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub device: Option<DeviceId>,
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// Longest accepted lifetime, in seconds.
    pub max_lifetime_secs: u64,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must equal it.
    pub audience: Option<String>,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            issuer: None,
            audience: None,
        }
    }
}

/// Verifies (and, for dev tools and tests, mints) tokens.
#[derive(Clone)]
pub struct Authenticator {
    decoding: DecodingKey,
    /// The secret being rotated out: tokens it signed are still accepted
    /// (docs/security.md, "Rotating the secret").
    previous: Option<DecodingKey>,
    encoding: EncodingKey,
    validation: Validation,
    rules: TokenRules,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(HS256)")
    }
}

impl Authenticator {
    /// With the default rules. The secret must be at least 32 bytes.
    pub fn new(secret: &[u8]) -> Result<Self> {
        Self::with_rules(secret, TokenRules::default())
    }

    /// With the public development secret (`--dev` only).
    pub fn dev() -> Self {
        Self::new(DEV_SECRET.as_bytes()).expect("the dev secret is 35 bytes")
    }

    pub fn with_rules(secret: &[u8], rules: TokenRules) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::BadRequest(format!(
                "the JWT secret must be at least {MIN_SECRET_BYTES} bytes (it is {}); \
                 generate one with `openssl rand -hex 32`",
                secret.len()
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        if rules.issuer.is_some() {
            required.push("iss");
        }
        if rules.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = 30;
        validation.validate_nbf = true;
        if let Some(iss) = &rules.issuer {
            validation.set_issuer(&[iss]);
        }
        match &rules.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let bad = |e: jsonwebtoken::errors::Error| Error::BadRequest(format!("JWT secret: {e}"));
        Ok(Authenticator {
            decoding: DecodingKey::from_secret(secret).map_err(bad)?,
            previous: None,
            encoding: EncodingKey::from_secret(secret).map_err(bad)?,
            validation,
            rules,
        })
    }

    /// Also accepts tokens signed with `secret`, the one being rotated out
    /// (at least 32 bytes too); new tokens are minted with the current one.
    pub fn with_previous(mut self, secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::BadRequest(format!(
                "the previous JWT secret must be at least {MIN_SECRET_BYTES} bytes too"
            )));
        }
        self.previous = Some(
            DecodingKey::from_secret(secret)
                .map_err(|e| Error::BadRequest(format!("previous JWT secret: {e}")))?,
        );
        Ok(self)
    }

    /// The user a token names, or `unauthorized` saying why not.
    pub fn verify(&self, token: &str) -> Result<UserId> {
        self.verify_identity(token).map(|i| i.user)
    }

    /// The user a token names and its `device` claim, if any, or
    /// `unauthorized` saying why not (a `device` claim that is not a valid
    /// device id is refused, not ignored).
    pub fn verify_identity(&self, token: &str) -> Result<Identity> {
        let mut decoded = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation);
        if let (Err(e), Some(previous)) = (&decoded, &self.previous) {
            if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) {
                decoded = jsonwebtoken::decode::<Claims>(token, previous, &self.validation);
            }
        }
        let data =
            decoded.map_err(|e| Error::Unauthorized(format!("invalid token: {}", why(&e))))?;
        let c = data.claims;
        let now = now_secs();
        // An `iat` in the future would let `exp - iat` stay short while the
        // token lives for years: refused, and the time left is capped too.
        if c.iat.is_some_and(|iat| iat > now + CLOCK_SKEW_SECS) {
            return Err(Error::Unauthorized("token `iat` is in the future".into()));
        }
        let start = c.iat.unwrap_or(now);
        let max = self.rules.max_lifetime_secs;
        if c.exp.saturating_sub(start) > max || c.exp.saturating_sub(now) > max + CLOCK_SKEW_SECS {
            return Err(Error::Unauthorized(format!(
                "token lifetime exceeds {max} s"
            )));
        }
        let user = UserId::parse(&c.sub)
            .map_err(|_| Error::Unauthorized("token `sub` is not a valid user id".into()))?;
        let device = c
            .device
            .map(|d| DeviceId::parse(&d))
            .transpose()
            .map_err(|_| Error::Unauthorized("token `device` is not a valid device id".into()))?;
        Ok(Identity { user, device })
    }

    /// Who `token` names and the connection's device: the token's `device`
    /// claim wins over `query_device` (`?device=`, already parsed). Both
    /// the conn-tier upgrade and the Lambda authorizer decide with it.
    pub fn identify(&self, token: &str, query_device: Option<DeviceId>) -> Result<Identity> {
        let mut identity = self.verify_identity(token)?;
        identity.device = identity.device.or(query_device);
        Ok(identity)
    }

    /// Mints a token for `user` valid for `ttl_secs` (dev tools and tests),
    /// with the configured `iss` and `aud`.
    pub fn mint(&self, user: &str, ttl_secs: i64) -> Result<String> {
        self.mint_claims(user, None, ttl_secs)
    }

    /// Mints a token for `user` that names its device (`device` claim).
    pub fn mint_for_device(&self, user: &str, device: &str, ttl_secs: i64) -> Result<String> {
        self.mint_claims(user, Some(device), ttl_secs)
    }

    fn mint_claims(&self, user: &str, device: Option<&str>, ttl_secs: i64) -> Result<String> {
        let now = now_secs();
        self.sign_claims(&Claims {
            sub: user.to_string(),
            exp: (now as i64 + ttl_secs).max(0) as u64,
            iat: Some(now),
            nbf: None,
            iss: self.rules.issuer.clone(),
            aud: self.rules.audience.clone(),
            device: device.map(str::to_string),
        })
    }

    /// Signs claims: this authenticator's own, or any shape a test or tool
    /// needs (a future `iat`, a bad `device`).
    pub fn sign_claims<T: serde::Serialize>(&self, claims: &T) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| Error::Store(format!("signing a token: {e}")))
    }
}

/// A fixed reason for a refused token. The library's own message can
/// quote the token's contents (a JSON error names the offending value),
/// and the reason reaches logs: attacker text must not.
fn why(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not valid yet (nbf)",
        K::InvalidSignature => "bad signature",
        K::InvalidIssuer => "wrong issuer (iss)",
        K::InvalidAudience => "wrong audience (aud)",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "wrong algorithm",
        K::MissingRequiredClaim(_) => "a required claim is missing",
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => "malformed",
        _ => "not accepted",
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

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn encode(claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn accepts_its_own_tokens_and_refuses_others() {
        let auth = Authenticator::new(SECRET).unwrap();
        let t = auth.mint("alice", 60).unwrap();
        assert_eq!(auth.verify(&t).unwrap().as_str(), "alice");

        let other = Authenticator::new(b"another-secret-of-at-least-32-bytes!").unwrap();
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
    fn while_rotating_tokens_of_the_previous_secret_are_accepted_and_no_others() {
        let old = Authenticator::new(SECRET).unwrap();
        let new_secret = b"the-new-secret-of-at-least-32-bytes!";
        let rotating = Authenticator::new(new_secret)
            .unwrap()
            .with_previous(SECRET)
            .unwrap();
        let by_old = old.mint("alice", 60).unwrap();
        assert_eq!(rotating.verify(&by_old).unwrap().as_str(), "alice");
        let by_new = rotating.mint("bob", 60).unwrap();
        assert_eq!(rotating.verify(&by_new).unwrap().as_str(), "bob");
        assert!(old.verify(&by_new).is_err(), "minted with the new secret");
        let stranger = Authenticator::new(b"a-third-secret-of-at-least-32-bytes").unwrap();
        assert!(rotating.verify(&stranger.mint("eve", 60).unwrap()).is_err());
        // The old secret's tokens still obey the rules: an expired one is refused.
        assert!(rotating.verify(&old.mint("alice", -3600).unwrap()).is_err());
        assert!(Authenticator::new(new_secret)
            .unwrap()
            .with_previous(b"short")
            .is_err());
        // Without the previous secret, the old tokens are refused.
        assert!(Authenticator::new(new_secret)
            .unwrap()
            .verify(&by_old)
            .is_err());
    }

    #[test]
    fn a_refusal_never_quotes_the_token() {
        let auth = Authenticator::new(SECRET).unwrap();
        // Claims whose JSON error would quote the value, signed properly.
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        let evil = serde_json::json!({"sub": "alice", "exp": "\nFAKE LOG LINE"});
        let t = jsonwebtoken::encode(&header, &evil, &EncodingKey::from_secret(SECRET).unwrap())
            .unwrap();
        let reason = auth.verify(&t).unwrap_err().to_string();
        assert!(!reason.contains("FAKE"), "{reason}");
        assert!(reason.contains("malformed"), "{reason}");
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused() {
        let err = Authenticator::new(b"short").unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(Authenticator::new(&[0u8; 31]).is_err());
        assert!(Authenticator::new(&[0u8; 32]).is_ok());
        assert!(Authenticator::new(b"").is_err());
    }

    #[test]
    fn a_token_not_yet_valid_or_living_too_long_is_refused() {
        let auth = Authenticator::new(SECRET).unwrap();
        let now = now_secs();
        let early = encode(
            serde_json::json!({"sub":"alice","exp":now + 600,"nbf":now + 300}),
            SECRET,
        );
        assert!(auth.verify(&early).is_err(), "nbf in the future");
        let started = encode(
            serde_json::json!({"sub":"alice","exp":now + 600,"nbf":now - 10}),
            SECRET,
        );
        assert!(auth.verify(&started).is_ok());
        let long = encode(
            serde_json::json!({"sub":"alice","exp":now + 25 * 3600,"iat":now}),
            SECRET,
        );
        assert!(auth.verify(&long).is_err(), "25 h lifetime");
        let no_iat = encode(
            serde_json::json!({"sub":"alice","exp":now + 30 * 3600}),
            SECRET,
        );
        assert!(auth.verify(&no_iat).is_err(), "exp 30 h away, no iat");
        assert!(auth.verify(&auth.mint("alice", 24 * 3600).unwrap()).is_ok());
    }

    #[test]
    fn a_device_claim_names_the_device_and_a_bad_one_is_refused() {
        let auth = Authenticator::new(SECRET).unwrap();
        let id = auth
            .verify_identity(&auth.mint_for_device("alice", "phone-1", 60).unwrap())
            .unwrap();
        assert_eq!(id.user.as_str(), "alice");
        assert_eq!(id.device.unwrap().as_str(), "phone-1");
        let plain = auth.verify_identity(&auth.mint("alice", 60).unwrap());
        assert_eq!(plain.unwrap().device, None);
        let now = now_secs();
        let bad = encode(
            serde_json::json!({"sub":"alice","exp":now + 60,"device":"no spaces!"}),
            SECRET,
        );
        let err = auth.verify_identity(&bad).unwrap_err();
        assert!(matches!(err, Error::Unauthorized(_)), "{err}");
        assert!(auth.verify(&bad).is_err());
    }

    #[test]
    fn a_future_iat_does_not_stretch_the_lifetime_cap() {
        let auth = Authenticator::new(SECRET).unwrap();
        let now = now_secs();
        let ten_years = now + 10 * 365 * 24 * 3600;
        let forged_iat = encode(
            serde_json::json!({"sub":"alice","exp":ten_years,"iat":ten_years - 60}),
            SECRET,
        );
        let err = auth.verify(&forged_iat).unwrap_err().to_string();
        assert!(err.contains("iat"), "{err}");
        let slightly_ahead = encode(
            serde_json::json!({"sub":"alice","exp":now + 600,"iat":now + 30}),
            SECRET,
        );
        assert!(
            auth.verify(&slightly_ahead).is_ok(),
            "within the clock skew"
        );
    }

    #[test]
    fn issuer_and_audience_are_pinned_when_configured() {
        let rules = TokenRules {
            issuer: Some("https://id.example".into()),
            audience: Some("chat".into()),
            ..TokenRules::default()
        };
        let auth = Authenticator::with_rules(SECRET, rules).unwrap();
        assert!(auth.verify(&auth.mint("alice", 60).unwrap()).is_ok());
        let now = now_secs();
        let wrong_iss = encode(
            serde_json::json!({"sub":"a","exp":now+60,"iss":"https://evil","aud":"chat"}),
            SECRET,
        );
        assert!(auth.verify(&wrong_iss).is_err());
        let no_aud = encode(
            serde_json::json!({"sub":"a","exp":now+60,"iss":"https://id.example"}),
            SECRET,
        );
        assert!(auth.verify(&no_aud).is_err());
        // Without pinning, any iss/aud passes.
        let plain = Authenticator::new(SECRET).unwrap();
        assert!(plain.verify(&wrong_iss).is_ok());
    }

    #[test]
    fn refuses_alg_none_and_tokens_without_exp() {
        use base64_like::encode as b64;
        let auth = Authenticator::new(SECRET).unwrap();
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(br#"{"sub":"alice","exp":99999999999}"#);
        assert!(auth.verify(&format!("{header}.{body}.")).is_err());
        let no_exp = encode(serde_json::json!({"sub":"alice"}), SECRET);
        assert!(auth.verify(&no_exp).is_err());
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

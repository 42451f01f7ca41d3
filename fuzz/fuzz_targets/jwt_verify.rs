//! JWT verification: any token string is a user or `unauthorized` with a
//! fixed reason (never text from the token), never a panic.
#![no_main]
use chat_core::auth::{Authenticator, TokenRules};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn auth() -> &'static Authenticator {
    static A: OnceLock<Authenticator> = OnceLock::new();
    A.get_or_init(|| {
        Authenticator::with_rules(
            b"fuzz-secret-of-at-least-32-bytes!!",
            TokenRules {
                issuer: Some("chat".into()),
                audience: Some("clients".into()),
                ..TokenRules::default()
            },
        )
        .unwrap()
        .with_previous(b"the-previous-secret-of-32-bytes!!!")
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    match auth().verify(&token) {
        Ok(user) => assert!(!user.as_str().is_empty()),
        Err(e) => {
            let reason = e.to_string();
            // Reasons are fixed phrases: the token's bytes never reach logs.
            assert!(reason.len() < 200, "{reason}");
        }
    }
});

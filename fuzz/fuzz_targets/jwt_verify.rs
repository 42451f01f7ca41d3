//! JWT verification: any token string is a user or `unauthorized` with a
//! fixed reason (never text from the token), never a panic; a token the
//! target did not sign is never accepted, and one it signed, then altered,
//! is accepted only as the identity it signed.
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
    // The first byte picks: 0 a token the target signs itself and then
    // alters (at most one byte), else the bytes as a token, unsigned by
    // anyone here.
    match data.split_first() {
        Some((0, rest)) if !rest.is_empty() => signed_then_altered(rest),
        _ => {
            let token = String::from_utf8_lossy(data);
            match auth().verify_identity(&token) {
                // Nothing here signed it: accepting it is a forgery.
                Ok(id) => panic!("an unsigned token was accepted: {id:?} from {token:?}"),
                Err(e) => {
                    let reason = e.to_string();
                    // Reasons are fixed phrases: the token's bytes never reach logs.
                    assert!(reason.len() < 200, "{reason}");
                }
            }
        }
    }
});

/// Mints a token (a user and device from the input), changes the byte the
/// input names to the value it names, and verifies: accepted only with
/// the identity that was signed (a change the signature still covers,
/// such as a base64 padding bit, changes nothing).
fn signed_then_altered(rest: &[u8]) {
    let name: String = rest
        .iter()
        .take(8)
        .map(|b| (b'a' + b % 26) as char)
        .collect();
    let user = format!("u{name}");
    let token = if rest[0] % 2 == 0 {
        auth().mint(&user, 600).unwrap()
    } else {
        auth().mint_for_device(&user, "d1", 600).unwrap()
    };
    let mut bytes = token.into_bytes();
    if rest.len() > 2 {
        let at = rest[1] as usize % bytes.len();
        bytes[at] = rest[2];
    }
    let altered = String::from_utf8_lossy(&bytes);
    if let Ok(id) = auth().verify_identity(&altered) {
        assert_eq!(id.user.as_str(), user, "an altered token named another user");
        let device = id.device.as_ref().map(|d| d.as_str());
        assert!(device.is_none() || device == Some("d1"), "{device:?}");
    }
}

//! The management API's request check: SigV4 verification of any method,
//! path, query, headers and body (and the Authorization header parser) is
//! accepted or rejected, never a panic; a request signed by the real
//! signer with the right credential is always accepted, and one the target
//! did not sign (or signed over another body) never is.
#![no_main]
use arbitrary::Arbitrary;
use chat_management::sigv4::{
    amz_date, parse_authorization, sign_headers, verify_at, Credential, Request,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    authorization: String,
    sign: bool,
}

const NOW: u64 = 1_795_947_300;

fuzz_target!(|input: Input| {
    let cred = Credential {
        key_id: "cluster".into(),
        secret: "cluster-secret".into(),
    };
    let _ = parse_authorization(&input.authorization);
    let mut headers = input.headers.clone();
    headers.push(("authorization".into(), input.authorization.clone()));
    let r = Request {
        method: &input.method,
        path: &input.path,
        query: input.query.as_deref(),
        headers: &headers,
        body: &input.body,
    };
    // Nothing here signed it: accepting it is a forgery.
    assert!(
        verify_at(&r, &cred, NOW).is_err(),
        "an unsigned request was accepted: {input:?}"
    );
    // Signed properly (a path the router would route, no query): accepted.
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~/@".contains(c);
    if input.sign && input.path.starts_with('/') && input.path.chars().all(plain) {
        let signed = sign_headers(&cred, "POST", "node:8081", &input.path, &input.body, &amz_date(NOW), "us-east-1");
        let r = Request {
            method: "POST",
            path: &input.path,
            query: None,
            headers: &signed,
            body: &input.body,
        };
        assert_eq!(verify_at(&r, &cred, NOW), Ok(()), "{:?}", input.path);
        // The same signature over another body: refused.
        let mut other = input.body.clone();
        other.push(b'!');
        let r = Request { body: &other, ..r };
        assert!(verify_at(&r, &cred, NOW).is_err(), "a body the signature does not cover");
    }
});

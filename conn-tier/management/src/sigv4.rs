//! AWS Signature Version 4, verified: API Gateway's `@connections` API is
//! called with IAM-signed requests, and so is ours. A request passes only
//! if it is signed by the configured credential, with a date within five
//! minutes of now, and its body matches the signed hash.
//!
//! Parsing is written for hostile input: every header and field is
//! bounded, nothing panics, and a failure says which rule it broke (for the
//! log; the client only gets 403).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far a request's `x-amz-date` may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Longest Authorization header accepted.
const MAX_AUTH_HEADER: usize = 4096;

/// A key id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, secret hidden)", self.key_id)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no Authorization header")]
    Missing,
    #[error("the Authorization header is not AWS4-HMAC-SHA256 with Credential, SignedHeaders and Signature")]
    Malformed,
    #[error("unknown access key id")]
    UnknownKey,
    #[error("no valid x-amz-date")]
    NoDate,
    #[error("x-amz-date is more than 5 minutes from now")]
    Stale,
    #[error("the credential scope does not match the request date")]
    Scope,
    #[error("host and x-amz-date must be signed")]
    Unsigned,
    #[error("the body does not match x-amz-content-sha256")]
    BodyHash,
    #[error("the signature does not match")]
    Signature,
}

/// What verification needs of a request.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as received (percent-encoded as it was sent).
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// Header names (any case) and values.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The parts of an Authorization header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
pub fn parse_authorization(h: &str) -> Result<Authorization<'_>, Rejected> {
    if h.len() > MAX_AUTH_HEADER {
        return Err(Rejected::Malformed);
    }
    let rest = h
        .strip_prefix("AWS4-HMAC-SHA256")
        .ok_or(Rejected::Malformed)?
        .trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(Rejected::Malformed)?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(Rejected::Malformed),
        }
    }
    let credential = credential.ok_or(Rejected::Malformed)?;
    let mut scope = credential.split('/');
    let (key_id, date, region, service, terminal) = (
        scope.next().ok_or(Rejected::Malformed)?,
        scope.next().ok_or(Rejected::Malformed)?,
        scope.next().ok_or(Rejected::Malformed)?,
        scope.next().ok_or(Rejected::Malformed)?,
        scope.next().ok_or(Rejected::Malformed)?,
    );
    if terminal != "aws4_request" || scope.next().is_some() || date.len() != 8 {
        return Err(Rejected::Malformed);
    }
    let signature = signature.ok_or(Rejected::Malformed)?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Rejected::Malformed);
    }
    let signed_headers: Vec<&str> = signed.ok_or(Rejected::Malformed)?.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty()) || signed_headers.len() > 64 {
        return Err(Rejected::Malformed);
    }
    Ok(Authorization {
        key_id,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// Seconds since the epoch of `20261129T101500Z`.
fn parse_amz_date(d: &str) -> Option<u64> {
    let b = d.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> { d.get(r)?.parse().ok() };
    let (y, mo, da) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 (civil calendar, Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// URI-encodes per SigV4: unreserved characters stay, the rest is `%XX`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn canonical_query(q: Option<&str>) -> String {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = String::from_utf8_lossy(&percent_decode(k)).to_string();
            let v = String::from_utf8_lossy(&percent_decode(v)).to_string();
            (uri_encode(&k, false), uri_encode(&v, false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The signature of `canonical` for this scope, with `secret`.
fn sign(secret: &str, a: &Authorization<'_>, amz_date: &str, canonical: &str) -> String {
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let k = hmac(format!("AWS4{secret}").as_bytes(), a.date.as_bytes());
    let k = hmac(&k, a.region.as_bytes());
    let k = hmac(&k, a.service.as_bytes());
    let k = hmac(&k, b"aws4_request");
    hex::encode(hmac(&k, to_sign.as_bytes()))
}

/// The canonical request, with the path encoded once or twice (services
/// other than S3 sign the already-encoded path encoded again; the path is
/// accepted in either form, both derive from what was signed).
fn canonical_request(
    r: &Request<'_>,
    a: &Authorization<'_>,
    payload_hash: &str,
    double_encoded: bool,
) -> Option<String> {
    let path = if r.path.is_empty() { "/" } else { r.path };
    let decoded = String::from_utf8_lossy(&percent_decode(path)).to_string();
    let once = uri_encode(&decoded, true);
    let canonical_path = if double_encoded {
        uri_encode(&once, true)
    } else {
        once
    };
    let mut headers = String::new();
    for name in &a.signed_headers {
        let value = r.header(name)?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        headers.push_str(&format!("{}:{}\n", name.to_ascii_lowercase(), value));
    }
    Some(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        r.method,
        canonical_path,
        canonical_query(r.query),
        headers,
        a.signed_headers.join(";"),
        payload_hash
    ))
}

/// Signs a request as an AWS client would (host, x-amz-date and
/// x-amz-content-sha256 signed), for tools and tests: the headers to add.
pub fn sign_headers(
    cred: &Credential,
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    amz_date: &str,
    region: &str,
) -> Vec<(String, String)> {
    let payload = hex_sha256(body);
    let headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-amz-content-sha256".to_string(), payload.clone()),
        ("x-amz-date".to_string(), amz_date.to_string()),
    ];
    let a = Authorization {
        key_id: &cred.key_id,
        date: amz_date.get(..8).unwrap_or(""),
        region,
        service: "execute-api",
        signed_headers: vec!["host", "x-amz-content-sha256", "x-amz-date"],
        signature: "",
    };
    let r = Request {
        method,
        path,
        query: None,
        headers: &headers,
        body,
    };
    let canonical = canonical_request(&r, &a, &payload, true).unwrap_or_default();
    let signature = sign(&cred.secret, &a, amz_date, &canonical);
    let mut out = headers;
    out.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{region}/execute-api/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
            cred.key_id, a.date
        ),
    ));
    out
}

/// `x-amz-date` for a time (seconds since the epoch).
pub fn amz_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    now_secs_inner()
}

fn now_secs_inner() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What can be checked of `r` before its body is read: an Authorization
/// header that parses, names `cred`'s key, and is dated within 5 minutes
/// of `now`, with `host` and `x-amz-date` signed. A request that fails it
/// is refused before its body is read, so an unsigned client cannot make
/// the server buffer anything.
pub fn precheck_at<'r>(
    r: &'r Request<'_>,
    cred: &Credential,
    now: u64,
) -> Result<(Authorization<'r>, &'r str), Rejected> {
    let auth = r.header("authorization").ok_or(Rejected::Missing)?;
    let a = parse_authorization(auth)?;
    if a.key_id != cred.key_id {
        return Err(Rejected::UnknownKey);
    }
    let amz_date = r.header("x-amz-date").ok_or(Rejected::NoDate)?;
    let at = parse_amz_date(amz_date).ok_or(Rejected::NoDate)?;
    if at.abs_diff(now) > MAX_SKEW.as_secs() {
        return Err(Rejected::Stale);
    }
    if !amz_date.starts_with(a.date) {
        return Err(Rejected::Scope);
    }
    let signed = |h: &str| a.signed_headers.iter().any(|s| s.eq_ignore_ascii_case(h));
    if !signed("host") || !signed("x-amz-date") {
        return Err(Rejected::Unsigned);
    }
    Ok((a, amz_date))
}

/// [`precheck_at`] now.
pub fn precheck<'r>(
    r: &'r Request<'_>,
    cred: &Credential,
) -> Result<(Authorization<'r>, &'r str), Rejected> {
    precheck_at(r, cred, now_secs_inner())
}

/// Verifies `r` against `cred`, at time `now` (seconds since the epoch).
pub fn verify_at(r: &Request<'_>, cred: &Credential, now: u64) -> Result<(), Rejected> {
    let checked = precheck_at(r, cred, now)?;
    verify_prechecked(r, cred, checked)
}

/// Verifies the signature of `r`, whose headers [`precheck`] already
/// passed (what it returned): the body's hash, then the signature.
pub fn verify_prechecked(
    r: &Request<'_>,
    cred: &Credential,
    (a, amz_date): (Authorization<'_>, &str),
) -> Result<(), Rejected> {
    let body_hash = hex_sha256(r.body);
    let payload_hash = match r.header("x-amz-content-sha256") {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_string(),
        Some(h) if h.eq_ignore_ascii_case(&body_hash) => h.to_string(),
        Some(_) => return Err(Rejected::BodyHash),
        None => body_hash,
    };
    for double in [true, false] {
        let canonical =
            canonical_request(r, &a, &payload_hash, double).ok_or(Rejected::Unsigned)?;
        let want = sign(&cred.secret, &a, amz_date, &canonical);
        if constant_time_eq(want.as_bytes(), a.signature.to_ascii_lowercase().as_bytes()) {
            return Ok(());
        }
    }
    Err(Rejected::Signature)
}

/// Verifies `r` against `cred`, now.
pub fn verify(r: &Request<'_>, cred: &Credential) -> Result<(), Rejected> {
    verify_at(r, cred, now_secs_inner())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of AWS's SigV4 documentation ("GET /?Param2=value2&Param1=value1",
    // service "service", 20150830T123600Z), whose signature is published.
    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn example() -> Vec<(String, String)> {
        vec![
            ("Host".into(), "example.amazonaws.com".into()),
            ("X-Amz-Date".into(), "20150830T123600Z".into()),
            ("Authorization".into(), "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500".into()),
        ]
    }

    fn cred() -> Credential {
        Credential {
            key_id: "AKIDEXAMPLE".into(),
            secret: EXAMPLE_SECRET.into(),
        }
    }

    fn at() -> u64 {
        parse_amz_date("20150830T123600Z").unwrap()
    }

    #[test]
    fn the_documented_example_verifies() {
        let headers = example();
        let r = Request {
            method: "GET",
            path: "/",
            query: Some("Param2=value2&Param1=value1"),
            headers: &headers,
            body: b"",
        };
        assert_eq!(verify_at(&r, &cred(), at()), Ok(()));
        // Five minutes later it is still good; six minutes, stale.
        assert_eq!(verify_at(&r, &cred(), at() + 300), Ok(()));
        assert_eq!(verify_at(&r, &cred(), at() + 361), Err(Rejected::Stale));
        // Another secret, another query, another key id: refused.
        let wrong = Credential {
            secret: "nope".into(),
            ..cred()
        };
        assert_eq!(verify_at(&r, &wrong, at()), Err(Rejected::Signature));
        let changed = Request {
            query: Some("Param2=value3&Param1=value1"),
            ..r
        };
        assert_eq!(verify_at(&changed, &cred(), at()), Err(Rejected::Signature));
        let other = Credential {
            key_id: "AKIDOTHER".into(),
            ..cred()
        };
        assert_eq!(verify_at(&r, &other, at()), Err(Rejected::UnknownKey));
    }

    #[test]
    fn unsigned_or_malformed_requests_are_refused_with_a_reason() {
        let r = Request {
            method: "POST",
            path: "/@connections/abc",
            query: None,
            headers: &[],
            body: b"{}",
        };
        assert_eq!(verify_at(&r, &cred(), at()), Err(Rejected::Missing));
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015/us-east-1/service/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Nonsense",
        ] {
            assert_eq!(parse_authorization(bad).unwrap_err(), Rejected::Malformed, "{bad}");
        }
        let huge = format!("AWS4-HMAC-SHA256 {}", "x".repeat(10_000));
        assert_eq!(parse_authorization(&huge).unwrap_err(), Rejected::Malformed);
    }

    #[test]
    fn a_request_signed_here_verifies_and_dates_round_trip() {
        let c = cred();
        let now = parse_amz_date("20261129T101500Z").unwrap();
        assert_eq!(amz_date(now), "20261129T101500Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        let headers = sign_headers(
            &c,
            "POST",
            "127.0.0.1:8081",
            "/@connections/abc",
            b"hi",
            &amz_date(now),
            "us-east-1",
        );
        let r = Request {
            method: "POST",
            path: "/@connections/abc",
            query: None,
            headers: &headers,
            body: b"hi",
        };
        assert_eq!(verify_at(&r, &c, now), Ok(()));
        let tampered = Request { body: b"ho", ..r };
        assert_eq!(verify_at(&tampered, &c, now), Err(Rejected::BodyHash));
    }

    #[test]
    fn dates_parse_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20261129T101500Z"), Some(1_795_947_300));
        assert_eq!(parse_amz_date("2026-11-29T10:15:00Z"), None);
        assert_eq!(parse_amz_date("20261329T101500Z"), None);
        assert_eq!(parse_amz_date("2026112"), None);
    }
}

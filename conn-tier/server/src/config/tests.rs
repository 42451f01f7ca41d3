//! The flags' rules: defaults, refusals, and what they configure.
use super::*;

fn parse(args: &[&str]) -> Result<ServerArgs, clap::Error> {
    ServerArgs::try_parse_from(std::iter::once("conn-tier").chain(args.iter().copied()))
}

#[test]
fn switches_accept_one_zero_yes_and_no() {
    assert!(parse(&["--log-json", "1"]).unwrap().log_json);
    assert!(!parse(&["--log-json", "no"]).unwrap().log_json);
    assert!(parse(&["--dev"]).unwrap().dev);
    assert!(parse(&["--stream-poll", "yes"]).unwrap().stream_poll);
    assert!(parse(&["--log-json", "maybe"]).is_err());
}

#[test]
fn the_read_buffer_is_512_bytes_unless_set_and_never_below_a_frame_header() {
    let read_buffer = |a: &[&str]| parse(a).unwrap().socket_config().read_buffer;
    assert_eq!(read_buffer(&[]), 512);
    assert_eq!(read_buffer(&["--ws-read-buffer-bytes", "4096"]), 4096);
    assert_eq!(read_buffer(&["--ws-read-buffer-bytes", "0"]), 64);
}

#[test]
fn no_secret_without_dev_is_a_start_up_error_that_says_what_to_do() {
    let args = parse(&[]).unwrap();
    let err = args.authenticator().unwrap_err().to_string();
    assert!(
        err.contains("--jwt-secret") && err.contains("--dev"),
        "{err}"
    );
    let short = parse(&["--jwt-secret", "short"]).unwrap();
    let err = short.authenticator().unwrap_err().to_string();
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(parse(&["--dev"]).unwrap().authenticator().is_ok());
}

#[test]
fn the_management_api_is_off_unless_asked_for_or_needed_and_then_needs_a_credential() {
    let auth = Authenticator::dev();
    let s = parse(&["--dev"]).unwrap().settings(&auth).unwrap();
    assert_eq!(s.management_addr, None);
    let s = parse(&[
        "--dev",
        "--management-listen",
        "10.0.0.1:8081",
        "--management-key-id",
        "k",
        "--management-secret",
        "a-management-secret-of-32-bytes!",
    ])
    .unwrap()
    .settings(&auth)
    .unwrap();
    assert_eq!(s.management.map(|c| c.key_id), Some("k".to_string()));
    // Shorter: refused, with what to do.
    let short = parse(&[
        "--dev",
        "--management-listen",
        "10.0.0.1:8081",
        "--management-key-id",
        "k",
        "--management-secret",
        "s",
    ])
    .unwrap()
    .settings(&auth)
    .unwrap_err()
    .to_string();
    assert!(short.contains("at least 32 bytes"), "{short}");
}

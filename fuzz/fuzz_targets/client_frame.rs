//! The client frame parser and validation: any text a socket can receive
//! is either a frame or an error frame naming what is wrong, never a panic.
#![no_main]
use chat_core::protocol::{parse_client_frame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_frame(text) {
        Ok(frame) => {
            let _ = frame.action();
            let _ = frame.client_msg_id();
        }
        Err(e) => {
            // The one error-to-wire mapping must produce JSON.
            let json = e.to_frame().to_json();
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
            let _ = ServerFrame::error(
                &chat_core::Error::BadRequest(text.chars().take(64).collect()),
                e.action.as_deref(),
                e.client_msg_id.as_deref(),
            )
            .to_json();
        }
    }
});

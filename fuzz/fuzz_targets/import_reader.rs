//! The import reader (`conn-tier admin import`): any bytes are a header
//! and records, or an error naming the line, never a panic; a record read
//! is written back as a line that reads as the same record.
#![no_main]
use chat_core::export::{Reader, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data) else {
        return;
    };
    while let Some(next) = reader.next() {
        let Ok(record) = next else {
            break;
        };
        let line = record.line();
        let back: Record = serde_json::from_str(&line).expect("a written line reads back");
        assert_eq!(back, record);
    }
});

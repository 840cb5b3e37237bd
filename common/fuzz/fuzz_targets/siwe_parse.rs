//! Fuzzes the EIP-4361 parser: any input either fails to parse or parses into a message that writes back
//! to exactly the input and parses again to the same message. Never a panic.
#![no_main]

use common::identity::siwe::SiweMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(message) = SiweMessage::parse(text) {
        let written = message.to_text();
        assert_eq!(written, text, "a parsed message writes back to its text");
        assert_eq!(SiweMessage::parse(&written).as_ref(), Ok(&message));
    }
});

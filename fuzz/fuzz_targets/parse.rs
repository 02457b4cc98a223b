//! Fuzzes the whole syntax stage: arbitrary bytes through `kiln::syntax::parse`, which must
//! return `Ok` or `Err` and never panic, hang or overflow the stack. Every successful parse is
//! also dumped in BuildKit's format, so the printer sees every tree the parser can build.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match kiln::syntax::parse(data) {
        Ok(parsed) => {
            let _ = parsed.dockerfile.dump();
        }
        Err(error) => {
            // Rendering must work for every error the parser can produce.
            let _ = error.to_string();
        }
    }
});

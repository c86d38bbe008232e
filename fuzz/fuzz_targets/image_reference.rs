//! Image references: the parser never panics, and what it accepts prints back to a reference
//! that parses to the same thing.
#![no_main]

use bulkhead_node_agent::image::{ImageRef, registry::check_digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = ImageRef::parse(text) else {
        return;
    };
    let printed = parsed.to_string();
    let again = ImageRef::parse(&printed).expect("a printed reference parses");
    assert_eq!(again, parsed, "{text:?} printed as {printed:?}");
    let _ = parsed.registry_host();
    let _ = parsed.manifest_reference();
    if let Some(digest) = &parsed.digest {
        check_digest(&parsed, digest).expect("a digest the pattern accepts is verifiable");
    }
});

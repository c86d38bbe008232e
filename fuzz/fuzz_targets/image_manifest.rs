//! Manifests, indexes and configs as a registry serves them: parsing never panics, and what
//! parses stays within the agent's bounds.
#![no_main]

use bulkhead_node_agent::image::{
    ImageRef, bounds, parse_config,
    registry::{parse_manifest, select_platform},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let image = ImageRef::parse("127.0.0.1:5000/fuzz:v1").expect("a fixed reference");
    if let Ok(manifest) = parse_manifest(&image, data) {
        assert!(manifest.layers().len() <= bounds::MAX_LAYERS);
    }
    if let Ok((_digest, size)) = select_platform(&image, data, "amd64") {
        assert!(size <= bounds::MAX_MANIFEST_BYTES);
    }
    if let Ok(config) = parse_config("fuzz", data) {
        let _ = bulkhead_node_agent::image::chain_ids(config.rootfs().diff_ids());
    }
});

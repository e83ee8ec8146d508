//! proxy-wasm pairs buffers (header maps, string-map properties). The
//! format has exactly one encoding per map, so the strongest property
//! holds: whatever decodes re-encodes to the very same bytes (except the
//! empty buffer, documented as an empty map too). Also: the
//! host-limits variant accepts a subset of what `decode` accepts, with the
//! same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwasm_wire::pairs;

fuzz_target!(|data: &[u8]| {
    let decoded = pairs::decode(data);
    if let Some(p) = &decoded {
        // The one exception: an empty buffer is also an empty map.
        if !data.is_empty() {
            assert_eq!(pairs::encode(p), data, "decode/encode is not the identity");
        }
    }
    if let Some(limited) = pairs::decode_within_host_limits(data) {
        assert!(limited.len() <= pairs::HOST_MAX_PAIRS && data.len() <= pairs::HOST_MAX_BYTES);
        assert_eq!(Some(&limited), decoded.as_ref());
    }
});

//! Fuzzes `read_protocol_list` over a stream that returns the bytes in small reads.
//!
//! Checked, besides "no panic" (and, under ASan, no memory error): when a list is
//! read, it respects the limits (at most `max_protocols` names of 1..=256 bytes), it
//! re-encodes to exactly the bytes it was read from (varints are minimal, so the
//! encoding is canonical), `write_protocol_list` writes those same bytes, and reading
//! them again gives the same list. What follows the list is then read as a
//! response's limits: a typed error or limits, never more than `MAX_LIMITS`
//! entries, and limits read back as written.

#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use liquid_p2p_core::{
    MAX_PROTOCOL_LEN,
    exchange::{
        encode_limits, encode_protocol_list, read_limits, read_protocol_list, write_protocol_list,
    },
};
use liquid_p2p_fuzz::{ChunkedReader, Input};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::split(data) else {
        return;
    };
    let max_protocols = (input.limit % 64) as usize;
    let mut stream = ChunkedReader::new(input.wire, input.read_size);
    let Ok(list) = block_on(read_protocol_list(&mut stream, max_protocols)) else {
        return;
    };

    assert!(list.len() <= max_protocols);
    assert!(
        list.iter()
            .all(|p| (1..=MAX_PROTOCOL_LEN).contains(&p.len()))
    );

    let encoded = encode_protocol_list(&list);
    assert_eq!(
        encoded,
        &input.wire[..stream.consumed],
        "list is not re-encoded byte for byte"
    );
    let mut written = futures::io::Cursor::new(Vec::new());
    block_on(write_protocol_list(&mut written, &list)).expect("write to memory");
    assert_eq!(written.into_inner(), encoded);
    let again = block_on(read_protocol_list(&mut &encoded[..], max_protocols));
    assert_eq!(again.as_ref(), Ok(&list));

    if let Ok(limits) = block_on(read_limits(&mut stream)) {
        let encoded = encode_limits(&limits);
        assert_eq!(block_on(read_limits(&mut &encoded[..])), Ok(limits));
    }
});

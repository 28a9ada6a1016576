//! Protobuf decoding of every request message of `simplekv_proto::kv` (what the gRPC KV
//! service decodes from the network), on arbitrary bytes.
//!
//! Invariants checked for each of GetRequest, SetRequest, DelRequest, ExpireRequest,
//! TtlRequest, MGetRequest, MSetRequest:
//! - decoding never panics;
//! - a message that decodes re-encodes (`compute_size` equal to the encoded length), and the
//!   encoding decodes to an equal message whose own encoding has the same length;
//! - decoding the encoding twice in a row equals merging it into the decoded message (the
//!   protobuf rule for concatenated messages), and text format printing does not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protobuf::MessageFull;
use simplekv_proto::kv;

fn check<M: MessageFull + PartialEq>(data: &[u8]) {
    let Ok(m) = M::parse_from_bytes(data) else {
        return;
    };
    let bytes = m.write_to_bytes().expect("a decoded message re-encodes");
    assert_eq!(
        m.compute_size(),
        bytes.len() as u64,
        "{}: compute_size disagrees with the encoding",
        M::descriptor().name()
    );
    let again = M::parse_from_bytes(&bytes).expect("a re-encoded message decodes");
    assert!(
        again == m,
        "{}: re-encoded message decodes differently",
        M::descriptor().name()
    );
    let bytes2 = again.write_to_bytes().expect("re-encodes");
    assert_eq!(bytes2.len(), bytes.len());

    let mut twice = bytes.clone();
    twice.extend_from_slice(&bytes);
    let parsed_twice = M::parse_from_bytes(&twice).expect("two encodings concatenated decode");
    let mut merged = m.clone();
    merged
        .merge_from_bytes(&bytes)
        .expect("merging an encoding decodes");
    assert!(
        parsed_twice == merged,
        "{}: concatenation is not a merge",
        M::descriptor().name()
    );
    let _ = protobuf::text_format::print_to_string(&m);
}

fuzz_target!(|data: &[u8]| {
    check::<kv::GetRequest>(data);
    check::<kv::SetRequest>(data);
    check::<kv::DelRequest>(data);
    check::<kv::ExpireRequest>(data);
    check::<kv::TtlRequest>(data);
    check::<kv::MGetRequest>(data);
    check::<kv::MSetRequest>(data);
});

//! Regression tests from the `resp_parser` fuzz target (`fuzz/fuzz_targets/resp_parser.rs`,
//! see `fuzz/README.md`). A crash found by the fuzzer becomes a test here with its minimal
//! input as a literal, marked `#[ignore = "BUG: ..."]` until fixed.
//!
//! So far the fuzzer has found no bug in the RESP codec; the tests below replay the target's
//! hand-made seeds (`fuzz/corpus/resp_parser/`) through its central invariants, so a change
//! that breaks them fails here too, without running the fuzzer.
use std::path::PathBuf;

use simplekv_net::resp::encode::parse_reply;
use simplekv_net::resp::parse::{Limits, Parser, ProtocolError};

type Outcome = (Vec<(Vec<Vec<u8>>, usize)>, Option<ProtocolError>);

/// Parses `input` read `step` bytes at a time, as a connection does.
fn feed(input: &[u8], step: usize) -> Outcome {
    let limits = Limits::default();
    let mut parser = Parser::new();
    let mut cmds = Vec::new();
    let mut start = 0;
    let mut end = 0;
    while end < input.len() {
        end = (end + step).min(input.len());
        loop {
            match parser.parse(&input[start..end], &limits) {
                Ok(Some(cmd)) => {
                    cmds.push((cmd.to_vec(), cmd.consumed()));
                    start += cmd.consumed();
                }
                Ok(None) => break,
                Err(e) => return (cmds, Some(e)),
            }
        }
    }
    (cmds, None)
}

/// The seed streams: each seed file is `[ctrl, split, chunk, fill]` followed by the stream.
fn seed_streams() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/resp_parser");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                bytes.get(4..).unwrap_or_default().to_vec(),
            )
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "the resp_parser seeds are missing");
    seeds
}

#[test]
fn seed_streams_parse_the_same_whole_and_in_any_pieces() {
    for (name, stream) in seed_streams() {
        let whole = feed(&stream, usize::MAX);
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(
                feed(&stream, step),
                whole,
                "seed {name}, {step} bytes at a time"
            );
        }
        // Complete multibulk frames are canonical: re-encoding gives the bytes back.
        let mut at = 0;
        for (args, consumed) in &whole.0 {
            let frame = &stream[at..at + consumed];
            if frame[0] == b'*' && !args.is_empty() {
                let mut enc = format!("*{}\r\n", args.len()).into_bytes();
                for a in args {
                    enc.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                    enc.extend_from_slice(a);
                    enc.extend_from_slice(b"\r\n");
                }
                assert_eq!(enc, frame, "seed {name}");
            }
            at += consumed;
        }
        if let Some(e) = whole.1 {
            let mut reply = Vec::new();
            e.write_reply(&mut reply);
            let parsed = parse_reply(&reply).unwrap().unwrap();
            assert_eq!(parsed.1, reply.len(), "seed {name}: error reply framing");
        }
    }
}

#[test]
fn seed_replies_parse_the_same_whole_and_byte_at_a_time() {
    for (name, stream) in seed_streams() {
        let whole = parse_reply(&stream);
        let mut p = simplekv_net::resp::encode::ReplyParser::new();
        let mut got = Ok(None);
        for end in 0..=stream.len() {
            got = p.parse(&stream[..end]);
            if !matches!(got, Ok(None)) {
                break;
            }
        }
        assert_eq!(got, whole, "seed {name}");
    }
}

//! RESP2 codec: request parsing (`parse`) and reply encoding/decoding (`encode`).
//!
//! Both halves work on plain byte slices so the connection code owns all buffering and I/O.

pub mod encode;
pub mod parse;

pub use encode::{
    MAX_REPLY_DEPTH, Reply, ReplyParser, parse_reply, write_array_len, write_bulk,
    write_bulk_header, write_decimal, write_error, write_integer, write_null, write_null_array,
    write_ok, write_repr, write_simple,
};
pub use parse::{
    Args, Command, DEFAULT_MAX_MULTIBULK_LEN, DEFAULT_PROTO_MAX_BULK_LEN, Limits,
    PROTO_INLINE_MAX_SIZE, Parser, ProtocolError, parse_command, string2ll,
};

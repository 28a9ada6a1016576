//! RESP error texts → gRPC status codes, so both front doors report the same errors.
use simplekv_proto::kv::{Code, Status};

/// The status for a RESP error text (without the leading '-').
pub fn status_of_error(text: &str) -> Status {
    let first = text.split(' ').next().unwrap_or("");
    let code = match first {
        "MOVED" | "ASK" => Code::MOVED,
        "TRYAGAIN" | "CLUSTERDOWN" => Code::TRY_AGAIN,
        "NOREPLICAS" => Code::NO_REPLICAS,
        "READONLY" => Code::READ_ONLY,
        "NOAUTH" | "WRONGPASS" => Code::UNAUTHENTICATED,
        "TIMEOUT" => Code::TIMEOUT,
        _ if text.starts_with("ERR write to the log failed") || text.contains("I/O error") => {
            Code::INTERNAL
        }
        _ => Code::INVALID_ARGUMENT,
    };
    let mut s = Status::new();
    s.code = code.into();
    s.message = match code {
        Code::MOVED => text.strip_prefix("MOVED ").unwrap_or(text).to_string(),
        _ => text.to_string(),
    };
    s
}

pub fn ok() -> Status {
    Status::new()
}

pub fn internal(msg: impl Into<String>) -> Status {
    let mut s = Status::new();
    s.code = Code::INTERNAL.into();
    s.message = msg.into();
    s
}

pub fn invalid(msg: impl Into<String>) -> Status {
    let mut s = Status::new();
    s.code = Code::INVALID_ARGUMENT.into();
    s.message = msg.into();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_wrong_passwords_are_unauthenticated() {
        for text in [
            "NOAUTH Authentication required.",
            "WRONGPASS invalid username-password pair or user is disabled.",
        ] {
            assert_eq!(
                status_of_error(text).code.enum_value(),
                Ok(Code::UNAUTHENTICATED)
            );
            assert_eq!(status_of_error(text).message, text);
        }
    }

    #[test]
    fn error_texts_map_to_codes() {
        assert_eq!(
            status_of_error("MOVED 12 127.0.0.1:7001").code.enum_value(),
            Ok(Code::MOVED)
        );
        assert_eq!(
            status_of_error("MOVED 12 127.0.0.1:7001").message,
            "12 127.0.0.1:7001"
        );
        assert_eq!(
            status_of_error("TRYAGAIN x").code.enum_value(),
            Ok(Code::TRY_AGAIN)
        );
        assert_eq!(
            status_of_error("NOREPLICAS Not enough good replicas")
                .code
                .enum_value(),
            Ok(Code::NO_REPLICAS)
        );
        assert_eq!(
            status_of_error("ERR value is not an integer or out of range")
                .code
                .enum_value(),
            Ok(Code::INVALID_ARGUMENT)
        );
        assert_eq!(
            status_of_error("ERR write to the log failed: x")
                .code
                .enum_value(),
            Ok(Code::INTERNAL)
        );
    }
}

//! `simplekv cli --grpc`: the same REPL over the gRPC KV service. The commands the service
//! offers (GET, SET [EX|PX], DEL, EXPIRE, PEXPIRE, TTL, PTTL, MGET, MSET, PING) are mapped to
//! its methods and their replies shown as RESP replies, so both front doors look the same.
//! AUTH keeps the password, which every later call carries in its metadata
//! (`authorization: Bearer <password>`), as the service asks when the server has one.
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Environment, MetadataBuilder};
use simplekv_net::resp::Reply;
use simplekv_proto::kv::*;
use simplekv_proto::kv_grpc::KvClient;

use super::conn::{Backend, ClientError, Connector};

const DEADLINE: Duration = Duration::from_secs(10);

pub struct GrpcConnector {
    pub host: String,
    pub port: u16,
}

impl Connector for GrpcConnector {
    fn connect(&mut self) -> Result<Box<dyn Backend>, ClientError> {
        let env = Arc::new(Environment::new(1));
        // Replies as large as a value may be (gRPC's default limit is 4 MiB).
        let ch = ChannelBuilder::new(env)
            .max_receive_message_len(-1)
            .connect(&self.target());
        let mut b = GrpcBackend {
            client: KvClient::new(ch),
            target: self.target(),
            password: None,
        };
        // gRPC connects lazily: make one call so an absent server is reported now.
        b.ping(None).map_err(|e| match e {
            ClientError::Io(source) => ClientError::Connect {
                target: self.target(),
                source,
            },
            other => other,
        })?;
        Ok(Box::new(b))
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn retarget(&mut self, host: &str, port: u16) {
        self.host = host.to_string();
        self.port = port;
    }
}

pub struct GrpcBackend {
    client: KvClient,
    target: String,
    /// From the last AUTH that succeeded.
    password: Option<String>,
}

fn rpc_error(e: grpcio::Error) -> ClientError {
    let text = e.to_string();
    if text.contains("DEADLINE_EXCEEDED") {
        ClientError::Timeout
    } else {
        ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            text,
        ))
    }
}

/// The RESP error a non-OK status stands for, or None when OK.
fn status_error(s: &protobuf::MessageField<Status>) -> Option<Reply> {
    let s = s.as_ref()?;
    let code = s.code.enum_value_or(Code::INTERNAL);
    let text = match code {
        Code::OK => return None,
        Code::MOVED => format!("MOVED {}", s.message),
        _ => s.message.clone(),
    };
    Some(Reply::Error(text.into_bytes()))
}

fn err(text: &str) -> Reply {
    Reply::Error(text.as_bytes().to_vec())
}

fn arity(name: &str) -> Reply {
    err(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn int_arg(a: &[u8]) -> Option<i64> {
    simplekv_net::resp::parse::string2ll(a)
}

impl GrpcBackend {
    /// The password travels as the cluster secret does between nodes (AUTH only keeps
    /// passwords metadata can carry).
    fn opt(&self) -> CallOption {
        simplekv_cluster::grpc::secret_opt(self.password.as_deref()).timeout(DEADLINE)
    }

    /// The cheapest call that reaches the service: TTL of the empty key.
    fn probe(&mut self, opt: CallOption) -> Result<TtlReply, ClientError> {
        let mut r = TtlRequest::new();
        r.key = Vec::new();
        self.client.ttl_opt(&r, opt).map_err(rpc_error)
    }

    /// A call that reaches the service: PONG (`message` echoed), or NOAUTH when the server
    /// wants a password this session does not send. Any other answer (a MOVED for the
    /// empty key, a TRY_AGAIN) still shows the server is there and admits the session.
    fn ping(&mut self, message: Option<&[u8]>) -> Result<Reply, ClientError> {
        let rep = self.probe(self.opt())?;
        let denied = rep
            .status
            .as_ref()
            .is_some_and(|s| s.code.enum_value() == Ok(Code::UNAUTHENTICATED));
        if denied && let Some(e) = status_error(&rep.status) {
            return Ok(e);
        }
        Ok(match message {
            Some(m) => Reply::Bulk(m.to_vec()),
            None => Reply::Simple(b"PONG".to_vec()),
        })
    }

    /// Whether a call without a password is answered (a server without one). A redirect or a
    /// TRY_AGAIN tells nothing (a cluster node routes before it checks the password): no.
    fn takes_anonymous_calls(&mut self) -> Result<bool, ClientError> {
        let rep = self.probe(simplekv_cluster::grpc::secret_opt(None).timeout(DEADLINE))?;
        Ok(rep
            .status
            .as_ref()
            .is_none_or(|s| s.code.enum_value() == Ok(Code::OK)))
    }

    /// AUTH [default] password: kept when a call carrying it is accepted. A server without
    /// a password (a call without one is accepted) answers as over RESP: the password is
    /// not kept, so the user learns the configuration is not what they thought.
    fn auth(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        let wrong = "WRONGPASS invalid username-password pair or user is disabled.";
        if args.len() == 3 && args[1] != b"default" {
            return Ok(err(wrong));
        }
        if self.takes_anonymous_calls()? {
            self.password = None;
            // As over RESP: AUTH default <anything> is the user without a password.
            return Ok(if args.len() == 3 {
                Reply::Simple(b"OK".to_vec())
            } else {
                err(
                    "ERR AUTH <password> called without any password configured for the \
                     default user. Are you sure your configuration is correct?",
                )
            });
        }
        let pw = String::from_utf8_lossy(&args[args.len() - 1]).into_owned();
        if MetadataBuilder::new()
            .add_str(simplekv_cluster::grpc::AUTH_HEADER, &format!("Bearer {pw}"))
            .is_err()
        {
            return Ok(err(
                "ERR over gRPC the password must be printable ASCII (it travels in metadata)",
            ));
        }
        let before = self.password.replace(pw);
        let r = self.ping(None)?;
        match r {
            Reply::Error(e) if e.starts_with(b"NOAUTH") => {
                self.password = before;
                Ok(err(wrong))
            }
            Reply::Error(e) => Ok(Reply::Error(e)),
            _ => Ok(Reply::Simple(b"OK".to_vec())),
        }
    }

    fn ttl(&mut self, key: &[u8], seconds: bool) -> Result<Reply, ClientError> {
        let mut r = TtlRequest::new();
        r.key = key.to_vec();
        let rep = self.client.ttl_opt(&r, self.opt()).map_err(rpc_error)?;
        if let Some(e) = status_error(&rep.status) {
            return Ok(e);
        }
        let ms = rep.ttl_ms;
        // TTL rounds as Redis does; -1 and -2 pass through.
        let v = if seconds && ms >= 0 {
            (ms + 500) / 1000
        } else {
            ms
        };
        Ok(Reply::Integer(v))
    }

    fn set(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        let mut r = SetRequest::new();
        r.key = args[1].clone();
        r.value = args[2].clone();
        match args.len() {
            3 => {}
            5 => {
                let unit = String::from_utf8_lossy(&args[3]).to_ascii_lowercase();
                let Some(n) = int_arg(&args[4]) else {
                    return Ok(err("ERR value is not an integer or out of range"));
                };
                if n <= 0 {
                    return Ok(err("ERR invalid expire time in 'set' command"));
                }
                let ms = match unit.as_str() {
                    "ex" => n.checked_mul(1000),
                    "px" => Some(n),
                    _ => return Ok(err("ERR syntax error (over gRPC, SET takes EX or PX only)")),
                };
                let Some(ms) = ms else {
                    return Ok(err("ERR invalid expire time in 'set' command"));
                };
                r.ttl_ms = ms as u64;
            }
            // An option the service does not take (NX, KEEPTTL, GET...) says so; EX or PX
            // without its number is Redis's plain syntax error.
            _ if args[3..].iter().all(|a| {
                a.eq_ignore_ascii_case(b"ex")
                    || a.eq_ignore_ascii_case(b"px")
                    || int_arg(a).is_some()
            }) =>
            {
                return Ok(err("ERR syntax error"));
            }
            _ => return Ok(err("ERR syntax error (over gRPC, SET takes EX or PX only)")),
        }
        let rep = self.client.set_opt(&r, self.opt()).map_err(rpc_error)?;
        Ok(status_error(&rep.status).unwrap_or(Reply::Simple(b"OK".to_vec())))
    }
}

impl Backend for GrpcBackend {
    fn call(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        let Some(first) = args.first() else {
            return Ok(err("ERR empty command"));
        };
        let name = String::from_utf8_lossy(first).to_ascii_lowercase();
        let n = args.len();
        match name.as_str() {
            "ping" if n <= 2 => self.ping(args.get(1).map(Vec::as_slice)),
            "ping" => Ok(arity("ping")),
            "auth" if n == 2 || n == 3 => self.auth(args),
            "auth" if n == 1 => Ok(arity("auth")),
            "auth" => Ok(err("ERR syntax error")),
            "get" if n == 2 => {
                let mut r = GetRequest::new();
                r.key = args[1].clone();
                let rep = self.client.get_opt(&r, self.opt()).map_err(rpc_error)?;
                Ok(status_error(&rep.status).unwrap_or(if rep.found {
                    Reply::Bulk(rep.value)
                } else {
                    Reply::Null
                }))
            }
            "set" if n >= 3 => self.set(args),
            "del" if n >= 2 => {
                let mut r = DelRequest::new();
                r.keys = args[1..].to_vec();
                let rep = self.client.del_opt(&r, self.opt()).map_err(rpc_error)?;
                Ok(status_error(&rep.status).unwrap_or(Reply::Integer(rep.deleted as i64)))
            }
            "expire" | "pexpire" if n == 3 => {
                let Some(t) = int_arg(&args[2]) else {
                    return Ok(err("ERR value is not an integer or out of range"));
                };
                let mut r = ExpireRequest::new();
                r.key = args[1].clone();
                let ms = if name == "expire" {
                    t.checked_mul(1000)
                } else {
                    Some(t)
                };
                let Some(ms) = ms else {
                    return Ok(err(&format!("ERR invalid expire time in '{name}' command")));
                };
                // The service takes a TTL; zero or less expires the key at once, as in RESP.
                r.ttl_ms = ms.max(0) as u64;
                let rep = self.client.expire_opt(&r, self.opt()).map_err(rpc_error)?;
                Ok(status_error(&rep.status).unwrap_or(Reply::Integer(rep.applied as i64)))
            }
            "expire" | "pexpire" if n == 4 => Ok(err(&format!(
                "ERR {} with NX, XX, GT or LT is not available over gRPC",
                name.to_uppercase()
            ))),
            "ttl" if n == 2 => self.ttl(&args[1], true),
            "pttl" if n == 2 => self.ttl(&args[1], false),
            "mget" if n >= 2 => {
                let mut r = MGetRequest::new();
                r.keys = args[1..].to_vec();
                let rep = self.client.m_get_opt(&r, self.opt()).map_err(rpc_error)?;
                Ok(status_error(&rep.status).unwrap_or_else(|| {
                    Reply::Array(
                        rep.values
                            .into_iter()
                            .map(|v| {
                                if v.found {
                                    Reply::Bulk(v.value)
                                } else {
                                    Reply::Null
                                }
                            })
                            .collect(),
                    )
                }))
            }
            "mset" if n >= 3 && (n - 1).is_multiple_of(2) => {
                let mut r = MSetRequest::new();
                for kv in args[1..].chunks(2) {
                    let mut p = KeyValue::new();
                    p.key = kv[0].clone();
                    p.value = kv[1].clone();
                    r.pairs.push(p);
                }
                let rep = self.client.m_set_opt(&r, self.opt()).map_err(rpc_error)?;
                Ok(status_error(&rep.status).unwrap_or(Reply::Simple(b"OK".to_vec())))
            }
            "get" | "set" | "del" | "expire" | "pexpire" | "ttl" | "pttl" | "mget" | "mset" => {
                Ok(arity(&name))
            }
            _ => Ok(err(&format!(
                "ERR '{name}' is not available over gRPC (GET, SET [EX|PX], DEL, EXPIRE, PEXPIRE, TTL, PTTL, MGET, MSET, PING, AUTH)"
            ))),
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }
}

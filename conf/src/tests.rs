use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::settings::Access;
use crate::*;

const STANDALONE_EXAMPLE: &str = include_str!("../examples/standalone.toml");
const CLUSTER_EXAMPLE: &str = include_str!("../examples/cluster-node.toml");
const README: &str = include_str!("../README.md");

/// A valid cluster-mode config in which every setting's bounds are reachable on its own:
/// proto_max_bulk_len is at its minimum and the query buffer at its maximum so neither
/// bound trips the rule between them, and grpc_port is far from both port bounds.
fn roomy_cluster() -> Config {
    let mut c = Config::default();
    c.cluster.zk = Some("127.0.0.1:2181/simplekv".into());
    c.cluster.node_id = Some(1);
    c.cluster.grpc_port = Some(17001);
    c.limits.proto_max_bulk_len = MIB;
    c.limits.client_query_buffer_limit = 16 * GIB;
    c.validate().unwrap();
    c
}

fn info(name: &str) -> &'static SettingInfo {
    Config::setting(name).unwrap_or_else(|| panic!("no setting {name}"))
}

/// A valid value different from `current` for each setting, in the text form `set` takes.
fn other_value(s: &SettingInfo, current: &Config) -> String {
    let now = s.get(current);
    match s.kind() {
        SettingKind::Integer { min, max } => {
            if now == max.to_string() { min } else { max }.to_string()
        }
        SettingKind::SignedInteger { min, max } => {
            if now == max.to_string() { min } else { max }.to_string()
        }
        SettingKind::Size { min, max } => {
            format_size(if now == max.to_string() { min } else { max })
        }
        SettingKind::Float { min, max } => {
            if now == max.to_string() { min } else { max }.to_string()
        }
        SettingKind::Bool => (now != "true").to_string(),
        SettingKind::Choice(values) => values.iter().find(|v| **v != now).unwrap().to_string(),
        SettingKind::Text => match s.name {
            "server.bind" => "::1",
            "server.requirepass" => "s3cret \"quoted\" \\ ünïcode",
            "storage.dir" => "/var/lib/simplekv data",
            "cluster.zk" => "10.0.0.1:2181,[::1]:2182/other/chroot",
            "cluster.name" => "prod-eu.1",
            "cluster.advertise_host" => "node1.example.com",
            "cluster.secret" => "s3cr3t-\"shared\"",
            "server.latency_tracking_info_percentiles" => "0 50 99.99 100",
            "server.notify_keyspace_events" => "gxKE",
            other => panic!("no test value for text setting {other}"),
        }
        .to_owned(),
    }
}

/// Every setting changed from its value in `roomy_cluster`.
fn all_changed() -> Config {
    let mut c = roomy_cluster();
    for s in Config::settings() {
        let v = other_value(s, &roomy_cluster());
        s.apply(&mut c, &v).unwrap();
    }
    // Each went to its other bound, which breaks two rules between settings; move the
    // second of each pair somewhere else that is still a change.
    c.limits.client_query_buffer_limit = 8 * GIB;
    c.cluster.grpc_port = Some(1);
    c.validate().unwrap();
    c
}

// ------------------------------------------------------------------------------ defaults

#[test]
fn defaults_validate_and_are_standalone() {
    let c = Config::default();
    c.validate().unwrap();
    assert!(!c.is_cluster());
    assert_eq!(c.advertise_host(), "127.0.0.1");
}

#[test]
fn defaults_are_the_documented_ones() {
    // The brief (and the README/examples) promise these; a changed default is a
    // behaviour change for every deployment that relies on it.
    let expected = [
        ("server.bind", "127.0.0.1"),
        ("server.port", "7379"),
        ("server.workers", "0"),
        ("server.pin_workers", "true"),
        ("server.maxclients", "10000"),
        ("server.requirepass", ""),
        ("server.timeout", "0"),
        ("server.tcp_backlog", "511"),
        ("server.tcp_nodelay", "true"),
        ("server.ordered_pipelines", "true"),
        ("server.shutdown_timeout_ms", "10000"),
        ("server.hz", "10"),
        ("server.slowlog_log_slower_than", "10000"),
        ("server.slowlog_max_len", "128"),
        ("server.latency_tracking", "true"),
        ("server.latency_tracking_info_percentiles", "50 99 99.9"),
        ("server.latency_monitor_threshold", "0"),
        ("server.notify_keyspace_events", ""),
        ("server.log_level", "info"),
        ("limits.proto_max_bulk_len", "536870912"),
        ("limits.max_multibulk_len", "1048576"),
        ("limits.client_query_buffer_limit", "1073741824"),
        ("limits.max_key_len", "1048576"),
        ("limits.max_value_len", "536870912"),
        ("storage.dir", "./data"),
        ("storage.fsync", "everysec"),
        ("storage.segment_size", "268435456"),
        ("storage.journal_size", "33554432"),
        ("storage.partitions", "16"),
        ("storage.merge_dead_ratio", "0.5"),
        ("storage.merge_min_bytes", "67108864"),
        ("storage.min_free_space", "67108864"),
        ("storage.hint_files", "true"),
        ("storage.shutdown_hint_min_bytes", "1048576"),
        ("storage.repair", "false"),
        ("storage.active_expire_effort", "1"),
        ("cluster.zk", ""),
        ("cluster.name", "default"),
        ("cluster.node_id", ""),
        ("cluster.advertise_host", ""),
        ("cluster.secret", ""),
        ("cluster.grpc_port", ""),
        ("cluster.session_timeout_ms", "2000"),
        ("cluster.acks", "all"),
        ("cluster.min_insync_replicas", "2"),
        ("cluster.replica_lag_time_max_ms", "2000"),
        ("cluster.replica_push_linger_us", "0"),
        ("cluster.unclean_leader_election", "false"),
        ("cluster.leader_imbalance_check_ms", "10000"),
        ("cluster.leader_imbalance_ratio", "0.1"),
    ];
    let names: Vec<&str> = Config::settings().iter().map(|s| s.name).collect();
    let listed: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names, listed,
        "registry and this list must cover the same keys"
    );
    for (name, value) in expected {
        assert_eq!(
            Config::default().get(name).as_deref(),
            Some(value),
            "{name}"
        );
        assert_eq!(info(name).default_value(), value, "{name}");
    }
}

#[test]
fn documented_ranges() {
    // The generic bound tests read ranges from the registry, so they cannot notice a
    // range that was mistyped there; these are the ranges users were promised.
    let int = |min, max| SettingKind::Integer { min, max };
    let size = |min, max| SettingKind::Size { min, max };
    let cases = [
        ("server.port", int(1, 65535)),
        ("server.workers", int(0, 1024)),
        ("server.maxclients", int(1, 1_000_000)),
        ("server.hz", int(1, 500)),
        (
            "server.slowlog_log_slower_than",
            SettingKind::SignedInteger {
                min: -1,
                max: i64::MAX,
            },
        ),
        ("server.slowlog_max_len", int(0, 1_000_000)),
        ("cluster.grpc_port", int(1, 65535)),
        ("cluster.min_insync_replicas", int(1, 255)),
        ("storage.partitions", int(1, 16384)),
        ("storage.active_expire_effort", int(1, 10)),
        ("storage.segment_size", size(MIB, 3 * GIB)),
        ("storage.journal_size", size(0, GIB)),
        ("limits.proto_max_bulk_len", size(MIB, 4 * GIB)),
        (
            "storage.merge_dead_ratio",
            SettingKind::Float {
                min: 0.05,
                max: 0.95,
            },
        ),
        (
            "server.log_level",
            SettingKind::Choice(&["error", "warn", "info", "debug", "trace"]),
        ),
        (
            "storage.fsync",
            SettingKind::Choice(&["always", "everysec", "never"]),
        ),
        ("cluster.acks", SettingKind::Choice(&["0", "1", "all"])),
    ];
    for (name, kind) in cases {
        assert_eq!(info(name).kind(), kind, "{name}");
    }
}

// ------------------------------------------------------------------------ get / set

#[test]
fn every_key_get_set_round_trip() {
    for s in Config::settings() {
        let base = roomy_cluster();
        let value = other_value(s, &base);
        let mut c = base.clone();
        // Through the Redis name where there is one, to cover both spellings of names.
        let by = s.redis_name.unwrap_or(s.name);
        c.set(by, &value)
            .unwrap_or_else(|e| panic!("{}: set {value:?}: {e}", s.name));
        assert_ne!(c, base, "{}: set did not change the config", s.name);
        let got = c.get(s.name).unwrap();
        let expected = match s.kind() {
            SettingKind::Size { .. } => parse_size(&value).unwrap().to_string(),
            _ => value.clone(),
        };
        assert_eq!(got, expected, "{}", s.name);
        // What get returns, set must accept and leave unchanged.
        let before = c.clone();
        c.set(s.name, &got).unwrap();
        assert_eq!(c, before, "{}", s.name);
    }
}

#[test]
fn every_key_sets_its_own_field() {
    // get/set round trips would pass if a setting read and wrote the wrong field
    // consistently; this checks each name lands in the field it documents.
    let c = all_changed();
    let s = &c.server;
    assert_eq!(s.bind, "::1");
    assert_eq!(s.port, 65535);
    assert_eq!(s.workers, 1024);
    assert!(!s.pin_workers);
    assert_eq!(s.maxclients, 1_000_000);
    assert_eq!(
        s.requirepass.as_deref(),
        Some("s3cret \"quoted\" \\ ünïcode")
    );
    assert_eq!(s.timeout, i32::MAX as u64);
    assert_eq!(s.tcp_backlog, 65535);
    assert!(!s.tcp_nodelay);
    assert_eq!(s.shutdown_timeout_ms, 3_600_000);
    assert_eq!(s.hz, 500);
    assert_eq!(s.log_level, LogLevel::Error);
    let l = &c.limits;
    assert_eq!(l.proto_max_bulk_len, 4 * GIB);
    assert_eq!(l.max_multibulk_len, i32::MAX as u64);
    assert_eq!(l.client_query_buffer_limit, 8 * GIB);
    assert_eq!(l.max_key_len, 512 * MIB);
    assert_eq!(l.max_value_len, 4 * GIB);
    let st = &c.storage;
    assert_eq!(st.dir, PathBuf::from("/var/lib/simplekv data"));
    assert_eq!(st.fsync, Fsync::Always);
    assert_eq!(st.segment_size, 3 * GIB);
    assert_eq!(st.partitions, 16384);
    assert_eq!(st.merge_dead_ratio, 0.95);
    assert_eq!(st.merge_min_bytes, 1024 * GIB);
    assert!(!st.hint_files);
    assert!(st.repair);
    assert_eq!(st.active_expire_effort, 10);
    let cl = &c.cluster;
    assert_eq!(
        cl.zk.as_deref(),
        Some("10.0.0.1:2181,[::1]:2182/other/chroot")
    );
    assert_eq!(cl.name, "prod-eu.1");
    assert_eq!(cl.node_id, Some(i32::MAX as u32));
    assert_eq!(cl.advertise_host.as_deref(), Some("node1.example.com"));
    assert_eq!(cl.grpc_port, Some(1));
    assert_eq!(cl.session_timeout_ms, 600_000);
    assert_eq!(cl.acks, Acks::None);
    assert_eq!(cl.min_insync_replicas, 255);
    assert_eq!(cl.replica_lag_time_max_ms, 600_000);
    assert!(cl.unclean_leader_election);
    assert_eq!(cl.leader_imbalance_check_ms, 86_400_000);
    assert_eq!(cl.leader_imbalance_ratio, 1.0);
}

#[test]
fn names_resolve_case_insensitively_in_both_spellings() {
    for (name, canonical) in [
        ("server.port", "server.port"),
        ("SERVER.Port", "server.port"),
        ("port", "server.port"),
        ("PORT", "server.port"),
        ("appendfsync", "storage.fsync"),
        ("Proto-Max-Bulk-Len", "limits.proto_max_bulk_len"),
        ("storage.segment-size", "storage.segment_size"),
        (" loglevel ", "server.log_level"),
    ] {
        assert_eq!(info(name).name, canonical, "{name}");
    }
    assert!(Config::setting("segment_size").is_none());
    assert!(Config::default().get("nonsense").is_none());
}

#[test]
fn optional_settings_unset_with_empty_string() {
    let mut c = Config::default();
    c.set_many([
        ("server.requirepass", "pw"),
        ("cluster.grpc_port", "9000"),
        ("cluster.node_id", "7"),
        ("cluster.advertise_host", "h"),
    ])
    .unwrap();
    for name in [
        "server.requirepass",
        "cluster.grpc_port",
        "cluster.node_id",
        "cluster.advertise_host",
    ] {
        c.set(name, "").unwrap();
        assert_eq!(c.get(name).as_deref(), Some(""), "{name}");
    }
    assert_eq!(c, Config::default());
}

#[test]
fn value_spellings_accepted_by_set() {
    let mut c = Config::default();
    for (name, value, expected) in [
        ("server.pin_workers", "no", "false"),
        ("server.pin_workers", "YES", "true"),
        ("server.tcp_nodelay", "False", "false"),
        ("storage.fsync", "no", "never"),
        ("storage.fsync", "ALWAYS", "always"),
        ("cluster.acks", "-1", "all"),
        ("cluster.acks", "1", "1"),
        ("server.log_level", "notice", "info"),
        ("server.log_level", "warning", "warn"),
        ("server.log_level", "verbose", "debug"),
        ("server.port", " 6380 ", "6380"),
        ("storage.merge_dead_ratio", "0.25", "0.25"),
        ("limits.max_key_len", "64 KB", "65536"),
    ] {
        c.set(name, value).unwrap();
        assert_eq!(c.get(name).as_deref(), Some(expected), "{name} = {value:?}");
    }
}

#[test]
fn malformed_numbers_rejected() {
    for (name, value) in [
        ("server.port", "+80"),
        ("server.port", "-1"),
        ("server.port", "0x50"),
        ("server.port", "80.0"),
        ("server.port", ""),
        ("server.maxclients", "1e3"),
        ("storage.merge_dead_ratio", "nan"),
        ("storage.merge_dead_ratio", "inf"),
        ("storage.merge_dead_ratio", "half"),
        ("server.pin_workers", "1"),
        ("storage.fsync", "sometimes"),
        ("cluster.acks", "2"),
    ] {
        let err = Config::default().set(name, value).unwrap_err();
        assert_eq!(err.setting(), Some(name), "{name} = {value:?}: {err}");
    }
}

// -------------------------------------------------------------------------- bounds

#[test]
fn each_bound_accepted_and_one_past_rejected() {
    let mut checked = 0;
    for s in Config::settings() {
        let (ok, bad): (Vec<String>, Vec<String>) = match s.access {
            Access::Int { min, max, .. } | Access::OptInt { min, max, .. } => (
                vec![min.to_string(), max.to_string()],
                min.checked_sub(1)
                    .into_iter()
                    .chain(Some(max + 1))
                    .map(|v| v.to_string())
                    .collect(),
            ),
            Access::Size { min, max, .. } => (
                vec![format_size(min), format_size(max), max.to_string()],
                min.checked_sub(1)
                    .into_iter()
                    .chain(Some(max + 1))
                    .map(|v| v.to_string())
                    .collect(),
            ),
            Access::Float { min, max, .. } => (
                vec![min.to_string(), max.to_string()],
                vec![min.next_down().to_string(), max.next_up().to_string()],
            ),
            Access::SignedInt { min, max, .. } => (
                vec![min.to_string(), max.to_string(), "-1".into(), "0".into()],
                vec![
                    (i128::from(min) - 1).to_string(),
                    (i128::from(max) + 1).to_string(),
                    "--1".into(),
                    "1.5".into(),
                ],
            ),
            _ => continue,
        };
        checked += 1;
        for v in ok {
            let mut c = roomy_cluster();
            c.set(s.name, &v)
                .unwrap_or_else(|e| panic!("{} = {v} should be accepted: {e}", s.name));
        }
        for v in bad {
            let mut c = roomy_cluster();
            let err = c.set(s.name, &v).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(s.name), "{msg}");
            assert!(msg.contains(&s.accepts()), "{msg}");
            assert_eq!(c, roomy_cluster(), "{} = {v} changed the config", s.name);
        }
    }
    assert!(checked >= 20, "only {checked} numeric settings found");
}

#[test]
fn out_of_range_error_message_format() {
    let err = Config::default().set("server.port", "abc").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid value for server.port: "abc" (expected an integer 1..=65535)"#
    );
    let err = Config::default()
        .set("storage.segment_size", "4gb")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for storage.segment_size: \"4gb\" (expected a size 1mb..=3gb \
         (bytes, or with a unit: k, kb, m, mb, g, gb))"
    );
}

#[test]
fn validate_catches_fields_assigned_directly() {
    let mut c = Config::default();
    c.server.hz = 0;
    assert_eq!(c.validate().unwrap_err().setting(), Some("server.hz"));
    let mut c = Config::default();
    c.storage.merge_dead_ratio = f64::NAN;
    assert_eq!(
        c.validate().unwrap_err().setting(),
        Some("storage.merge_dead_ratio")
    );
    let mut c = Config::default();
    c.cluster.zk = Some("localhost".into());
    assert_eq!(c.validate().unwrap_err().setting(), Some("cluster.zk"));
    // Some("") is what `set` calls unset, so it must not be rejected as an empty host.
    let mut c = Config::default();
    c.cluster.advertise_host = Some(String::new());
    c.validate().unwrap();
}

// --------------------------------------------------------------------------- sizes

#[test]
fn sizes_follow_redis_units() {
    for (text, bytes) in [
        ("0", Some(0)),
        ("1", Some(1)),
        ("10b", Some(10)),
        ("1k", Some(1000)),
        ("1kb", Some(1024)),
        ("1K", Some(1000)),
        ("1KB", Some(1024)),
        ("1m", Some(1_000_000)),
        ("64MB", Some(64 * MIB)),
        ("64mb", Some(64 * MIB)),
        ("1g", Some(1_000_000_000)),
        ("3gb", Some(3 * GIB)),
        ("3Gb", Some(3 * GIB)),
        ("64 mb", Some(64 * MIB)),
        ("", None),
        ("mb", None),
        ("1.5mb", None),
        ("-1", None),
        ("+1", None),
        ("1tb", None),
        ("1 m b", None),
        ("18446744073709551615", Some(u64::MAX)),
        ("18446744073709551616", None),
        ("18446744073709551615kb", None),
    ] {
        assert_eq!(parse_size(text), bytes, "{text:?}");
    }
}

#[test]
fn format_size_reads_back() {
    for bytes in [
        0,
        1,
        1000,
        1024,
        1536,
        MIB,
        3 * GIB,
        5 * GIB + KIB,
        u64::MAX,
    ] {
        assert_eq!(parse_size(&format_size(bytes)), Some(bytes), "{bytes}");
    }
    assert_eq!(format_size(512 * MIB), "512mb");
    assert_eq!(format_size(GIB), "1gb");
    assert_eq!(format_size(1536), "1536");
    assert_eq!(format_size(1000), "1000");
}

#[test]
fn size_bounds_with_units() {
    let mut c = Config::default();
    c.set("storage.segment_size", "3gb").unwrap();
    c.set("storage.segment_size", "1mb").unwrap();
    c.set("storage.segment_size", "1MB").unwrap();
    // Redis's "1m" is 10^6 bytes, below the 1 MiB minimum.
    assert!(c.set("storage.segment_size", "1m").is_err());
    assert!(c.set("storage.segment_size", "1048575").is_err());
    assert!(c.set("storage.segment_size", "3073mb").is_err());
    // "3g" is 3 * 10^9, under 3 GiB.
    c.set("storage.segment_size", "3g").unwrap();
    assert_eq!(c.storage.segment_size, 3_000_000_000);
}

// ------------------------------------------------------------------------ TOML file

#[test]
fn unknown_key_in_file_named_with_line_and_suggestion() {
    let err = Config::from_toml_str("[server]\nport = 6380\nprot = 6381\n").unwrap_err();
    assert_eq!(err.setting(), Some("server.prot"));
    assert_eq!(
        err.to_string(),
        "line 3, column 1: unknown setting \"server.prot\" (did you mean \"server.port\"?)"
    );
}

#[test]
fn unknown_section_and_top_level_key_rejected() {
    let err = Config::from_toml_str("[sever]\nport = 1\n").unwrap_err();
    assert_eq!(err.setting(), Some("sever.port"));
    assert!(
        err.to_string().contains("did you mean \"server.port\""),
        "{err}"
    );

    let err = Config::from_toml_str("port = 1\n").unwrap_err();
    assert_eq!(err.setting(), Some("port"));
    assert!(err.to_string().contains("\"server.port\""), "{err}");

    let err = Config::from_toml_str("[server]\n[bogus]\n").unwrap_err();
    assert_eq!(err.setting(), Some("bogus"));

    let err = Config::from_toml_str("server = 1\n").unwrap_err();
    assert!(err.to_string().contains("a table [server]"), "{err}");
}

#[test]
fn first_error_in_file_order_is_reported() {
    // Map iteration is alphabetical; "zzz" precedes "aaa" in the file and must win.
    let err = Config::from_toml_str("[storage]\nzzz = 1\naaa = 2\n").unwrap_err();
    assert_eq!(err.setting(), Some("storage.zzz"));
}

/// Found by a black-box run: `node_id = ""` was refused with a message saying `""` is
/// accepted.
#[test]
fn an_optional_integer_is_unset_with_an_empty_string() {
    let c = Config::from_toml_str("[cluster]\nnode_id = \"\"\ngrpc_port = \"\"\n").unwrap();
    assert_eq!(c.cluster.node_id, None);
    assert_eq!(c.cluster.grpc_port, None);
    let err = Config::from_toml_str("[cluster]\nnode_id = \"7\"\n").unwrap_err();
    assert!(err.to_string().contains("not a TOML string"), "{err}");
}

#[test]
fn toml_type_mismatch_and_range_errors_point_at_the_value() {
    let err = Config::from_toml_str("[server]\n\nport = \"6380\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("line 3, column 8: invalid value for server.port"),
        "{msg}"
    );
    assert!(msg.contains("not a TOML string"), "{msg}");

    let err = Config::from_toml_str("[server]\nport = 70000\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 8: invalid value for server.port: \"70000\" \
         (expected an integer 1..=65535)"
    );

    let err = Config::from_toml_str("[server]\npin_workers = \"yes\"\n").unwrap_err();
    assert_eq!(err.setting(), Some("server.pin_workers"));
}

#[test]
fn toml_value_forms_accepted() {
    let c = Config::from_toml_str(
        "[storage]\nsegment_size = 1048576\nmerge_min_bytes = \"1kb\"\n\
         merge_dead_ratio = 0.3\n\
         [cluster]\nacks = 1\nleader_imbalance_ratio = 1\n\
         [server]\nport = 0x1F90\nrequirepass = \"\"\n",
    )
    .unwrap();
    assert_eq!(c.storage.segment_size, MIB);
    assert_eq!(c.storage.merge_min_bytes, 1024);
    assert_eq!(c.storage.merge_dead_ratio, 0.3);
    assert_eq!(c.cluster.acks, Acks::Leader);
    assert_eq!(c.cluster.leader_imbalance_ratio, 1.0);
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.requirepass, None);
    // Dotted keys and inline tables are the same TOML tables.
    let c = Config::from_toml_str("server.port = 1234\nstorage = { fsync = \"never\" }\n").unwrap();
    assert_eq!(c.server.port, 1234);
    assert_eq!(c.storage.fsync, Fsync::Never);
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let err = Config::from_toml_str("[server]\nport = 1\nbind = \n").unwrap_err();
    match &err {
        ConfError::Toml { line, column, .. } => assert_eq!((*line, *column), (3, 8)),
        other => panic!("expected a TOML error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("TOML parse error at line 3, column 8: "),
        "{err}"
    );
    let err = Config::from_toml_str("[server]\nport = 1\nport = 2\n").unwrap_err();
    assert!(matches!(err, ConfError::Toml { line: 3, .. }), "{err:?}");
}

#[test]
fn load_reports_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Config::load(&missing).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot read config file {}: ", missing.display())),
        "{msg}"
    );

    let bad_syntax = write_file(dir.path(), "syntax.toml", "[server\n");
    let msg = Config::load(&bad_syntax).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "config file {}: TOML parse error at line 1, column",
            bad_syntax.display()
        )),
        "{msg}"
    );

    let bad_value = write_file(dir.path(), "value.toml", "[server]\nhz = 501\n");
    let msg = Config::load(&bad_value).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "config file {}: line 2, column 6: invalid value for server.hz: \"501\" \
             (expected an integer 1..=500)",
            bad_value.display()
        )
    );

    let good = write_file(dir.path(), "good.toml", "[server]\nport = 6380\n");
    assert_eq!(Config::load(&good).unwrap().server.port, 6380);
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

#[test]
fn overrides_complete_a_shared_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    let shared = write_file(
        dir.path(),
        "shared.toml",
        "[cluster]\nzk = \"127.0.0.1:2181\"\ngrpc_port = 17000\n",
    );
    // Alone the file is incomplete: cluster mode needs a node id.
    let err = Config::load(&shared).unwrap_err();
    assert_eq!(err.setting(), Some("cluster.node_id"));

    let overrides = ["cluster.node_id=3", "port=7003", "cluster.grpc_port=17003"];
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|o| Config::parse_override(o).unwrap())
        .collect();
    let c = Config::load_with_overrides(Some(&shared), pairs).unwrap();
    assert_eq!(c.cluster.node_id, Some(3));
    assert_eq!(c.server.port, 7003);
    assert_eq!(c.cluster.grpc_port, Some(17003));

    let err = Config::load_with_overrides(None, [("server.prot", "1")]).unwrap_err();
    assert_eq!(err.setting(), Some("server.prot"));
}

#[test]
fn parse_override_splits_at_first_equals() {
    assert_eq!(
        Config::parse_override("server.requirepass=a=b").unwrap(),
        ("server.requirepass", "a=b")
    );
    assert_eq!(
        Config::parse_override("cluster.zk=").unwrap(),
        ("cluster.zk", "")
    );
    for bad in ["storage.fsync", "=always", " =x", ""] {
        let err = Config::parse_override(bad).unwrap_err();
        assert!(matches!(err, ConfError::BadOverride { .. }), "{bad:?}");
    }
}

// ----------------------------------------------------------------------- cross-field

#[test]
fn cluster_mode_requires_node_id_and_grpc_port() {
    let mut c = Config::default();
    let err = c.set("cluster.zk", "127.0.0.1:2181").unwrap_err();
    assert_eq!(err.setting(), Some("cluster.node_id"));
    assert!(
        err.to_string().contains("requires cluster.node_id"),
        "{err}"
    );

    let err = c
        .set_many([("cluster.zk", "127.0.0.1:2181"), ("cluster.node_id", "1")])
        .unwrap_err();
    assert_eq!(err.setting(), Some("cluster.grpc_port"));

    c.set_many([
        ("cluster.zk", "127.0.0.1:2181"),
        ("cluster.node_id", "1"),
        ("cluster.grpc_port", "17379"),
    ])
    .unwrap();
    assert!(c.is_cluster());
    // Standalone again: the cluster-only requirements no longer apply.
    c.set_many([("cluster.zk", ""), ("cluster.node_id", "")])
        .unwrap();
    assert!(!c.is_cluster());
}

#[test]
fn grpc_port_must_differ_from_port() {
    let mut c = Config::default();
    let err = c.set("cluster.grpc_port", "7379").unwrap_err();
    assert_eq!(err.setting(), Some("cluster.grpc_port"));
    assert!(err.to_string().contains("must differ"), "{err}");
    c.set("cluster.grpc_port", "7380").unwrap();
    let err = c.set("server.port", "7380").unwrap_err();
    assert!(matches!(err, ConfError::Inconsistent { .. }), "{err:?}");
}

#[test]
fn journal_size_is_off_or_at_least_64kb() {
    let mut c = Config::default();
    let err = c.set("storage.journal_size", "4kb").unwrap_err();
    assert_eq!(err.setting(), Some("storage.journal_size"));
    assert!(err.to_string().contains("at least 64kb"), "{err}");
    assert_eq!(
        c.storage.journal_size,
        32 * MIB,
        "a refused value changes nothing"
    );
    c.set("storage.journal_size", "0").unwrap();
    assert_eq!(c.storage.journal_size, 0);
    c.set("storage.journal_size", "64kb").unwrap();
    assert_eq!(c.storage.journal_size, 64 * KIB);
}

#[test]
fn wildcard_bind_in_cluster_needs_advertise_host() {
    for wildcard in ["0.0.0.0", "::", "[::]"] {
        let mut c = roomy_cluster();
        let err = c.set("server.bind", wildcard).unwrap_err();
        assert_eq!(err.setting(), Some("cluster.advertise_host"), "{wildcard}");
        c.set_many([
            ("cluster.advertise_host", "10.1.2.3"),
            ("server.bind", wildcard),
        ])
        .unwrap();
        assert_eq!(c.advertise_host(), "10.1.2.3");
    }
    // Standalone nodes advertise nothing, so a wildcard bind is fine.
    Config::default().set("server.bind", "0.0.0.0").unwrap();
}

#[test]
fn bulk_len_cannot_exceed_query_buffer() {
    let mut c = Config::default();
    let err = c.set("limits.proto_max_bulk_len", "2gb").unwrap_err();
    assert_eq!(err.setting(), Some("limits.proto_max_bulk_len"));
    c.set("limits.proto_max_bulk_len", "1gb").unwrap();
    let err = c
        .set("limits.client_query_buffer_limit", "512mb")
        .unwrap_err();
    assert!(matches!(err, ConfError::Inconsistent { .. }), "{err:?}");
    c.set_many([
        ("limits.client_query_buffer_limit", "4gb"),
        ("limits.proto_max_bulk_len", "2gb"),
    ])
    .unwrap();
}

#[test]
fn text_settings_checked() {
    for (name, value) in [
        ("storage.dir", ""),
        ("storage.dir", "a\0b"),
        ("server.bind", ""),
        ("server.bind", "127.0.0.1 ::1"),
        ("cluster.name", ""),
        ("cluster.name", "a/b"),
        ("cluster.name", ".."),
        ("cluster.name", &"x".repeat(65)),
        ("cluster.zk", "localhost"),
        ("cluster.zk", "localhost:0"),
        ("cluster.zk", "localhost:2181/x/"),
        ("cluster.zk", "localhost:2181/a//b"),
        ("cluster.zk", "localhost:2181/a/../b"),
        ("cluster.zk", "a:1, b:2"),
        ("cluster.zk", "/chroot"),
        ("cluster.advertise_host", "a b"),
    ] {
        let mut c = Config::default();
        let err = c.set(name, value).unwrap_err();
        assert_eq!(err.setting(), Some(name), "{name} = {value:?}");
        assert_eq!(c, Config::default());
    }
    let err = Config::from_toml_str("[storage]\ndir = \"\"\n").unwrap_err();
    assert_eq!(err.setting(), Some("storage.dir"));
    Config::default()
        .set("cluster.name", &"x".repeat(64))
        .unwrap();
}

#[test]
fn zk_connect_parsed() {
    let zk = ZkConnect::parse("a:2181,b:2182,[::1]:2183/simplekv/prod").unwrap();
    assert_eq!(zk.hosts, ["a:2181", "b:2182", "[::1]:2183"]);
    assert_eq!(zk.hosts_string(), "a:2181,b:2182,[::1]:2183");
    assert_eq!(zk.chroot.as_deref(), Some("/simplekv/prod"));
    assert!(
        ZkConnect::parse("a:2181/x/")
            .unwrap_err()
            .contains("chroot")
    );
    // A lone "/" is the root, as in the Java client.
    assert_eq!(ZkConnect::parse("a:2181/").unwrap().chroot, None);
    assert_eq!(ZkConnect::parse("a:2181").unwrap().chroot, None);
    let c = roomy_cluster();
    assert_eq!(
        c.cluster.zk_connect().unwrap().chroot.as_deref(),
        Some("/simplekv")
    );
}

// ------------------------------------------------------------- atomicity of set()

#[test]
fn failed_set_leaves_config_unchanged() {
    let base = roomy_cluster();
    let mut c = base.clone();
    // Per-key error.
    assert!(c.set("server.maxclients", "0").is_err());
    assert_eq!(c, base);
    // Cross-field error, after the key itself parsed fine.
    assert!(c.set("cluster.grpc_port", "7379").is_err());
    assert_eq!(c, base);
    // Unknown name.
    assert!(c.set("server.nope", "1").is_err());
    assert_eq!(c, base);
    // A batch whose second pair fails must not keep the first.
    assert!(
        c.set_many([("server.maxclients", "5"), ("server.hz", "0")])
            .is_err()
    );
    assert_eq!(c, base);
    assert!(
        c.set_runtime_many([("maxclients", "5"), ("port", "1")])
            .is_err()
    );
    assert_eq!(c, base);
}

/// Redis names simplekv has one value for, given on the command line or to `Config::set`
/// (found by a black-box comparison: `--set databases=16` answered "unknown setting" with a
/// suggestion unrelated to it): the one value is taken, another is refused with the reason.
#[test]
fn redis_settings_with_one_value_are_taken_or_refused_with_the_reason() {
    let mut c = Config::default();
    c.set_many([("save", ""), ("appendonly", "yes"), ("databases", "1")])
        .expect("the values simplekv has");
    assert_eq!(c, Config::default());
    let err = c.set("databases", "16").unwrap_err();
    assert!(matches!(err, ConfError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("single database"), "{err}");
    let err = c.set("save", "3600 1").unwrap_err();
    assert!(err.to_string().contains("no RDB snapshots"), "{err}");
}

#[test]
fn unknown_setting_message_and_suggestions() {
    let err = Config::default().set("sever.port", "1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown setting \"sever.port\" (did you mean \"server.port\"?)"
    );
    for (typo, meant) in [
        ("storage.fsnyc", "storage.fsync"),
        ("maxclient", "server.maxclients"),
        ("segment_size", "storage.segment_size"),
        ("cluster.min_isr", "cluster.min_insync_replicas"),
    ] {
        let err = Config::default().set(typo, "1").unwrap_err();
        match err {
            ConfError::UnknownSetting { suggestion, .. } => {
                if typo == "cluster.min_isr" {
                    // Too far from anything to guess; a wrong guess would mislead.
                    assert_eq!(suggestion, None);
                } else {
                    assert_eq!(suggestion, Some(meant), "{typo}");
                }
            }
            other => panic!("{typo}: {other:?}"),
        }
    }
    let err = Config::default()
        .set("completely-unrelated", "1")
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown setting \"completely-unrelated\"");
}

// ----------------------------------------------------------------- runtime / Redis

#[test]
fn config_set_parses_numbers_and_choices_strictly_as_redis_does() {
    let mut c = Config::default();
    for (name, value) in [
        ("maxclients", " 100"),
        ("maxclients", "100 "),
        ("hz", "5\t"),
        ("appendfsync", " always"),
        ("slowlog-log-slower-than", " -1"),
        ("proto-max-bulk-len", "2mb "),
    ] {
        let e = c.set_runtime(name, value).unwrap_err().to_string();
        assert!(e.contains("invalid value for"), "{name} = {value:?}: {e}");
    }
    assert_eq!(c, Config::default());
    // Text keeps its spaces (a password may have some); a file or an override may pad.
    c.set_runtime("requirepass", " pass ").unwrap();
    assert_eq!(c.server.requirepass.as_deref(), Some(" pass "));
    c.set_runtime("maxclients", "100").unwrap();
    c.set("server.hz", " 5 ").unwrap();
    assert_eq!((c.server.maxclients, c.server.hz), (100, 5));
}

#[test]
fn runtime_settings_are_the_documented_ones() {
    let runtime: Vec<&str> = Config::settings()
        .iter()
        .filter(|s| s.runtime)
        .map(|s| s.name)
        .collect();
    assert_eq!(
        runtime,
        [
            "server.maxclients",
            "server.requirepass",
            "server.timeout",
            "server.ordered_pipelines",
            "server.hz",
            "server.slowlog_log_slower_than",
            "server.slowlog_max_len",
            "server.latency_tracking",
            "server.latency_tracking_info_percentiles",
            "server.latency_monitor_threshold",
            "server.notify_keyspace_events",
            "server.log_level",
            "limits.proto_max_bulk_len",
            "limits.client_query_buffer_limit",
            "limits.max_key_len",
            "limits.max_value_len",
            "storage.fsync",
            "storage.merge_dead_ratio",
            "storage.merge_min_bytes",
            "storage.min_free_space",
            "storage.shutdown_hint_min_bytes",
            "storage.active_expire_effort",
            "cluster.acks",
            "cluster.min_insync_replicas",
        ]
    );
}

#[test]
fn set_runtime_refuses_immutable_settings() {
    let mut c = Config::default();
    let err = c.set_runtime("port", "6380").unwrap_err();
    assert_eq!(
        err.to_string(),
        "CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    );
    assert_eq!(
        err.config_set_reply(),
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    );
    assert!(c.set_runtime("storage.dir", "/tmp").is_err());
    assert_eq!(c, Config::default());
    c.set_runtime("maxclients", "50").unwrap();
    c.set_runtime("appendfsync", "always").unwrap();
    c.set_runtime("cluster.acks", "1").unwrap();
    assert_eq!(
        (c.server.maxclients, c.storage.fsync, c.cluster.acks),
        (50, Fsync::Always, Acks::Leader)
    );
}

#[test]
fn config_set_replies_use_redis_wording() {
    let mut c = Config::default();
    let err = c.set_runtime("foo", "1").unwrap_err();
    assert_eq!(
        err.config_set_reply(),
        "ERR Unknown option or number of arguments for CONFIG SET - 'foo'"
    );
    let err = c.set_runtime("server.maxclients", "0").unwrap_err();
    assert_eq!(
        err.config_set_reply(),
        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - invalid value \
         for server.maxclients: \"0\" (expected an integer 1..=1000000)"
    );
    // A RESP error line must not contain CR/LF, whatever the client sent.
    let err = c.set_runtime("x\r\n+OK", "1").unwrap_err();
    let reply = err.config_set_reply();
    assert!(!reply.contains('\r') && !reply.contains('\n'), "{reply:?}");
}

#[test]
fn fixed_redis_settings() {
    let mut c = Config::default();
    c.set_runtime("save", "").unwrap();
    c.set_runtime("appendonly", "YES").unwrap();
    c.set_runtime("databases", "1").unwrap();
    assert_eq!(c, Config::default());
    for (name, value) in [("save", "900 1"), ("appendonly", "no"), ("databases", "16")] {
        let err = c.set_runtime(name, value).unwrap_err();
        assert!(matches!(err, ConfError::Unsupported { .. }), "{name}");
        assert!(err.to_string().contains(&format!("'{name}'")), "{err}");
    }
    // They are Redis facts, not settings: not in files or get; `set` (the command line's
    // `--set`) takes them as CONFIG SET does.
    assert!(c.get("save").is_none());
    c.set("appendonly", "yes").expect("the one value");
    assert!(matches!(
        c.set("appendonly", "no"),
        Err(ConfError::Unsupported { .. })
    ));
}

#[test]
fn redis_config_pairs_cover_what_tools_ask_for() {
    let mut c = Config::default();
    let pairs = c.redis_config_pairs();
    let get = |pairs: &[(String, String)], name: &str| {
        let found: Vec<&String> = pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "{name} listed {} times", found.len());
        found[0].clone()
    };
    assert_eq!(get(&pairs, "save"), "");
    assert_eq!(get(&pairs, "appendonly"), "yes");
    assert_eq!(get(&pairs, "databases"), "1");
    assert_eq!(get(&pairs, "appendfsync"), "everysec");
    assert_eq!(get(&pairs, "port"), "7379");
    assert_eq!(get(&pairs, "maxclients"), "10000");
    assert_eq!(get(&pairs, "requirepass"), "");
    assert_eq!(get(&pairs, "dir"), "./data");
    assert_eq!(get(&pairs, "bind"), "127.0.0.1");
    assert_eq!(get(&pairs, "timeout"), "0");
    assert_eq!(get(&pairs, "hz"), "10");
    assert_eq!(get(&pairs, "proto-max-bulk-len"), "536870912");
    assert_eq!(get(&pairs, "client-query-buffer-limit"), "1073741824");
    // In Redis's words, whichever spelling set it.
    assert_eq!(get(&pairs, "loglevel"), "notice");
    for (set, redis) in [
        ("warning", "warning"),
        ("warn", "warning"),
        ("notice", "notice"),
        ("verbose", "verbose"),
        ("trace", "debug"),
    ] {
        let mut c = c.clone();
        c.set_runtime("loglevel", set).unwrap();
        let pairs = c.redis_config_pairs();
        assert_eq!(get(&pairs, "loglevel"), redis, "{set}");
    }
    // Settings Redis lacks appear under their dotted name, booleans in Redis's yes/no.
    assert_eq!(get(&pairs, "storage.hint_files"), "yes");
    // Fixed values for what clients ask for at start-up (CONFIG SET takes only these).
    assert_eq!(get(&pairs, "maxmemory"), "0");
    assert_eq!(get(&pairs, "maxmemory-policy"), "noeviction");
    assert_eq!(get(&pairs, "notify-keyspace-events"), "");
    assert_eq!(get(&pairs, "replica-read-only"), "yes");
    assert!(c.set_runtime("maxmemory", "0").is_ok());
    // Any spelling of no bytes, as Redis reads memory values.
    for zero in ["00", "0b", "0kb", "0GB", "0m"] {
        assert!(c.set_runtime("maxmemory", zero).is_ok(), "{zero}");
    }
    for not in ["1kb", "0x", "kb", "0 kb", "-0"] {
        assert!(c.set_runtime("maxmemory", not).is_err(), "{not}");
    }
    let e = c
        .set_runtime("maxmemory-policy", "allkeys-lru")
        .unwrap_err();
    assert!(e.to_string().contains("does not evict"), "{e}");
    assert_eq!(get(&pairs, "cluster-enabled"), "no");
    assert_eq!(pairs.len(), Config::settings().len() + 8);
    // Names are checked before values, and one setting twice is refused whatever its name.
    let e = c
        .set_runtime_many([("hz", "abc"), ("bogus", "1")])
        .unwrap_err();
    assert!(matches!(e, ConfError::UnknownSetting { .. }), "{e}");
    let e = c
        .set_runtime_many([("replica-read-only", "yes"), ("slave-read-only", "yes")])
        .unwrap_err();
    assert!(matches!(e, ConfError::Duplicate { .. }), "{e}");
    let e = c
        .set_runtime_many([("hz", "5"), ("server.hz", "6")])
        .unwrap_err();
    assert_eq!(
        e.config_set_reply(),
        "ERR CONFIG SET failed (possibly related to argument 'server.hz') - duplicate parameter"
    );
    assert!(
        c.set_runtime_many([("hz", "5"), ("maxclients", "100")])
            .is_ok()
    );
    // As Redis, `hz` takes 0 to 2147483647 and clamps into 1..=500; `server.hz` checks.
    for (set, got) in [
        ("1000", "500"),
        ("0", "1"),
        ("2147483647", "500"),
        ("42", "42"),
    ] {
        c.set_runtime("hz", set).unwrap();
        assert_eq!(get(&c.redis_config_pairs(), "hz"), got, "{set}");
    }
    for bad in ["2147483648", "-1", "+5", "abc", ""] {
        assert!(c.set_runtime("hz", bad).is_err(), "{bad:?}");
    }
    assert!(c.set_runtime("server.hz", "1000").is_err());
    // Redis's `loglevel debug` is its most verbose level, and reads back as set.
    c.set_runtime("loglevel", "debug").unwrap();
    assert_eq!(c.server.log_level.as_str(), "trace");
    assert_eq!(get(&c.redis_config_pairs(), "loglevel"), "debug");
    c.set_runtime("loglevel", "verbose").unwrap();
    assert_eq!(get(&c.redis_config_pairs(), "loglevel"), "verbose");
    c.set_runtime("server.log_level", "debug").unwrap();
    assert_eq!(c.server.log_level.as_str(), "debug");

    c.set("storage.fsync", "never").unwrap();
    assert_eq!(get(&c.redis_config_pairs(), "appendfsync"), "no");
}

#[test]
fn config_get_glob_patterns() {
    let c = Config::default();
    let names = |pattern: &str| -> Vec<String> {
        c.redis_config_get(pattern)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    assert_eq!(names("save"), ["save"]);
    assert_eq!(names("APPENDONLY"), ["appendonly"]);
    assert_eq!(names("append*"), ["appendfsync", "appendonly"]);
    assert_eq!(names("[ab]ind"), ["bind"]);
    assert_eq!(names("[^x]ind"), ["bind"]);
    assert_eq!(names("h?"), ["hz"]);
    assert_eq!(names("*max-bulk*"), ["proto-max-bulk-len"]);
    assert_eq!(names("*max*bulk*").len(), 2);
    assert_eq!(names("storage.merge_*").len(), 2);
    assert!(names("\\*").is_empty());
    assert_eq!(names("*").len(), c.redis_config_pairs().len());
    assert!(names("nomatch*").is_empty());
    assert!(redis::glob_match(b"a\\*b", b"a*b"));
    assert!(!redis::glob_match(b"a\\*b", b"axb"));
    assert!(redis::glob_match(b"[a-c]x", b"Bx"));
    assert!(redis::glob_match(b"[c-a]x", b"bx"));
    assert!(!redis::glob_match(b"a?", b"a"));
    // Exponential backtracking would make this take far longer than the test timeout.
    let evil = "*a".repeat(40) + "b";
    assert!(!redis::glob_match(
        evil.as_bytes(),
        "a".repeat(200).as_bytes()
    ));
}

// ----------------------------------------------------------------------------- enums

#[test]
fn enums_parse_and_display_config_spellings() {
    for f in Fsync::ALL {
        assert_eq!(f.to_string().parse::<Fsync>().unwrap(), *f);
    }
    for a in Acks::ALL {
        assert_eq!(a.to_string().parse::<Acks>().unwrap(), *a);
    }
    for l in LogLevel::ALL {
        assert_eq!(l.to_string().parse::<LogLevel>().unwrap(), *l);
    }
    assert_eq!(Fsync::EverySec.to_string(), "everysec");
    assert_eq!(Acks::None.to_string(), "0");
    assert_eq!(Acks::Leader.to_string(), "1");
    assert_eq!(Acks::All.to_string(), "all");
    assert_eq!("NO".parse::<Fsync>().unwrap(), Fsync::Never);
    assert_eq!(Fsync::Never.redis_str(), "no");
    assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
    assert_eq!(
        (Fsync::default(), Acks::default(), LogLevel::default()),
        (Fsync::EverySec, Acks::All, LogLevel::Info)
    );
    let err = "sometimes".parse::<Fsync>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid fsync policy \"sometimes\" (expected always|everysec|never)"
    );
}

// ------------------------------------------------------------------- round trips

#[test]
fn to_toml_string_round_trips() {
    for c in [Config::default(), roomy_cluster(), all_changed()] {
        let text = c.to_toml_string();
        let back = Config::from_toml_str(&text)
            .unwrap_or_else(|e| panic!("{e}\n--- generated ---\n{text}"));
        assert_eq!(back, c, "--- generated ---\n{text}");
    }
    // Sizes are written with units where exact, for people reading the output.
    let text = Config::default().to_toml_string();
    assert!(text.contains("segment_size = \"256mb\""), "{text}");
    assert!(
        !text.contains("requirepass"),
        "unset keys must be omitted:\n{text}"
    );
}

#[test]
fn odd_sizes_round_trip_as_integers() {
    let mut c = Config::default();
    c.set("limits.max_key_len", "1000").unwrap();
    let text = c.to_toml_string();
    assert!(text.contains("max_key_len = 1000\n"), "{text}");
    assert_eq!(Config::from_toml_str(&text).unwrap(), c);
}

// ---------------------------------------------------------------------- examples

#[test]
fn standalone_example_is_the_defaults() {
    assert_eq!(
        Config::from_toml_str(STANDALONE_EXAMPLE).unwrap(),
        Config::default()
    );
}

#[test]
fn standalone_example_mentions_every_key() {
    // Equality with the defaults says nothing about keys left out; each key must be
    // there, set, or commented out if it has no default.
    let doc = toml::de::DeTable::parse(STANDALONE_EXAMPLE).unwrap();
    for s in Config::settings() {
        let section = doc
            .get_ref()
            .get(s.section())
            .and_then(|t| t.get_ref().as_table());
        let present = section.is_some_and(|t| t.contains_key(s.key()));
        if s.is_optional() {
            let commented = format!("\n# {} = ", s.key());
            assert!(!present, "{} has no default; keep it commented", s.name);
            assert!(
                STANDALONE_EXAMPLE.contains(&commented),
                "{} missing",
                s.name
            );
        } else {
            assert!(present, "{} missing from standalone.toml", s.name);
        }
    }
}

#[test]
fn cluster_example_validates() {
    let c = Config::from_toml_str(CLUSTER_EXAMPLE).unwrap();
    assert!(c.is_cluster());
    assert_eq!(c.cluster.node_id, Some(1));
    assert_eq!(c.cluster.name, "demo");
    assert_ne!(c.cluster.grpc_port, Some(c.server.port));
    // The per-node overrides the comments describe must give a valid second node.
    let mut node2 = c.clone();
    node2
        .set_many([
            ("server.port", "7002"),
            ("cluster.grpc_port", "17002"),
            ("cluster.node_id", "2"),
            ("storage.dir", "./data/node2"),
        ])
        .unwrap();
}

#[test]
fn readme_table_is_current() {
    let expected = settings_table();
    let start = "<!-- settings-table:start -->\n";
    let end = "<!-- settings-table:end -->";
    let from = README
        .find(start)
        .expect("README lacks the table start marker")
        + start.len();
    let to = README.find(end).expect("README lacks the table end marker");
    assert_eq!(
        &README[from..to],
        expected,
        "conf/README.md is out of date; replace the table with:\n{expected}"
    );
}

fn settings_table() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| Key | Default | Accepts | Runtime | Redis name | Meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    let defaults = Config::default();
    for s in Config::settings() {
        let default = s
            .toml_value(&defaults)
            .map_or_else(|| "unset".to_owned(), |v| format!("`{v}`"));
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            s.name,
            cell(&default),
            cell(&s.accepts()),
            if s.runtime { "yes" } else { "no" },
            s.redis_name.map_or_else(String::new, |r| format!("`{r}`")),
            cell(s.help),
        ));
    }
    out
}

/// `notify-keyspace-events` takes Redis's flag characters and shows them in Redis's order
/// (CONFIG GET answers as Redis 7.0.15 did for each of these).
#[test]
fn keyspace_event_flags_read_back_as_redis_shows_them() {
    use crate::settings::{keyspace_events_from_str, keyspace_events_to_string};
    for (set, shown) in [
        ("KEA", "AKE"),
        ("Kgxn", "gxnK"),
        ("", ""),
        ("Ex", "xE"),
        ("K", "K"),
        ("Ag$lshzxetd", "A"),
        ("mEK$gxlszhted", "AKEm"),
        // Redis shows "AKEm" and keeps n; shown here.
        ("AKEmn", "AnKEm"),
    ] {
        let flags = keyspace_events_from_str(set).unwrap();
        assert_eq!(keyspace_events_to_string(flags), shown, "{set:?}");
        assert_eq!(keyspace_events_from_str(shown), Some(flags), "{shown:?}");
    }
    assert_eq!(keyspace_events_from_str("Kq"), None);
    let mut c = Config::default();
    let s = info("server.notify_keyspace_events");
    c.set_runtime("notify-keyspace-events", "EKx").unwrap();
    assert_eq!(s.redis_value(&c), "xKE");
    assert!(c.set_runtime("notify-keyspace-events", "K?").is_err());
    assert_eq!(
        c.server.notify_keyspace_events, "xKE",
        "a refused value changes nothing"
    );
}

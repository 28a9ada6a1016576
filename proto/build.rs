//! Generates the protobuf messages (protobuf 3, pure Rust: no `protoc` needed) and the grpcio
//! service stubs into `$OUT_DIR/pb`. grpcio-compiler speaks protobuf-2 descriptor types, so
//! the descriptor set parsed by protobuf-parse 3 is re-read as protobuf 2 for it.
use protobuf::Message as _;
use protobuf2::Message as _;

const PROTOS: &[&str] = &["proto/kv.proto", "proto/replication.proto"];

fn main() {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = std::path::PathBuf::from(out_dir).join("pb");

    protobuf_codegen::Codegen::new()
        .pure()
        .cargo_out_dir("pb")
        .include("proto")
        .inputs(PROTOS)
        .run_from_script();

    let set3 = protobuf_parse::Parser::new()
        .pure()
        .include("proto")
        .inputs(PROTOS)
        .file_descriptor_set()
        .expect("parse .proto files");
    let bytes = set3.write_to_bytes().expect("encode descriptor set");
    let set2 = protobuf2::descriptor::FileDescriptorSet::parse_from_bytes(&bytes)
        .expect("re-read descriptor set as protobuf 2");
    let files: Vec<String> = set2
        .get_file()
        .iter()
        .map(|f| f.get_name().to_string())
        .collect();
    let mut mod_rs = std::fs::read_to_string(out.join("mod.rs")).expect("read generated mod.rs");
    for r in grpcio_compiler::codegen::r#gen(set2.get_file(), &files) {
        std::fs::write(out.join(&r.name), r.content).expect("write service stubs");
        // The generated file carries #![allow(box_pointers)], a lint rustc has since removed.
        mod_rs += &format!(
            "#[allow(renamed_and_removed_lints)]\npub mod {};\n",
            r.name.trim_end_matches(".rs")
        );
    }
    std::fs::write(out.join("mod.rs"), mod_rs).expect("write mod.rs");
}

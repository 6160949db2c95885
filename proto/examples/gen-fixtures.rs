//! Writes proto/tests/fixtures/{req,resp}-*.bin: one complete frame each.
//! Run after a deliberate protocol change, review the diff, commit.
use tokenmail_proto::frame::{encode_frame, FrameKind};

include!("../tests/common/cases.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::create_dir_all(&dir)?;
    for (name, r) in requests() {
        let f = encode_frame(FrameKind::Message, &tokenmail_proto::encode_message(&r)?)?;
        std::fs::write(dir.join(format!("{name}.bin")), f)?;
    }
    for (name, r) in responses() {
        let f = encode_frame(FrameKind::Message, &tokenmail_proto::encode_message(&r)?)?;
        std::fs::write(dir.join(format!("{name}.bin")), f)?;
    }
    println!("fixtures written to {}", dir.display());
    Ok(())
}

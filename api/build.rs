//! Compresses the web console's files (`console/`) with gzip at build time, so that the server
//! sends them compressed without compressing at each request. `src/routes/console.rs` embeds
//! both forms and picks one by the request's `Accept-Encoding`.

use std::io::Write;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=console");
    let out = Path::new(&std::env::var("OUT_DIR")?).join("console");
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir("console")? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !path.is_file() || name.ends_with(".html") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes)?;
        std::fs::write(out.join(format!("{name}.gz")), gz.finish()?)?;
    }
    Ok(())
}

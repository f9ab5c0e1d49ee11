//! `crdgen`: writes the CRD YAML generated from the API types into `crds/` and its copies
//! (`make crds`). Run from anywhere in the workspace; paths are relative to its root.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = crane_api::crdgen::workspace_root();
    match crane_api::crdgen::write_all(&root) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

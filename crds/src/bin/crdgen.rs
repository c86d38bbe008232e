//! Writes the CustomResourceDefinitions generated from the Rust types.
//!
//! `crdgen <dir>` writes one `<plural>.<group>.yaml` per CRD into `<dir>`;
//! `crdgen` alone prints all of them as one multi-document YAML stream.

use std::{fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let crds = bulkhead_crds::crds();
    match std::env::args_os().nth(1).map(PathBuf::from) {
        None => {
            for crd in &crds {
                print!("---\n{}", bulkhead_crds::crd_yaml(crd));
            }
            ExitCode::SUCCESS
        }
        Some(dir) => {
            for crd in &crds {
                let path = dir.join(bulkhead_crds::crd_file_name(crd));
                if let Err(err) = fs::write(&path, bulkhead_crds::crd_yaml(crd)) {
                    eprintln!("crdgen: cannot write {}: {err}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
    }
}

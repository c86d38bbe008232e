//! Writes what is generated from the Rust types: the CustomResourceDefinitions and the
//! isolation-level ValidatingAdmissionPolicy template.
//!
//! `crdgen <chart dir>` writes one `crds/<plural>.<group>.yaml` per CRD and
//! `templates/admission-isolation-level.yaml` into the chart; `crdgen` alone prints the CRDs
//! as one multi-document YAML stream.

use std::{fs, path::PathBuf, process::ExitCode};

fn write(path: PathBuf, text: &str) -> bool {
    match fs::write(&path, text) {
        Ok(()) => {
            println!("wrote {}", path.display());
            true
        }
        Err(err) => {
            eprintln!("crdgen: cannot write {}: {err}", path.display());
            false
        }
    }
}

fn main() -> ExitCode {
    let crds = bulkhead_crds::crds();
    let Some(chart) = std::env::args_os().nth(1).map(PathBuf::from) else {
        for crd in &crds {
            print!("---\n{}", bulkhead_crds::crd_yaml(crd));
        }
        return ExitCode::SUCCESS;
    };
    let mut ok = true;
    for crd in &crds {
        let path = chart.join("crds").join(bulkhead_crds::crd_file_name(crd));
        ok &= write(path, &bulkhead_crds::crd_yaml(crd));
    }
    ok &= write(
        chart.join(bulkhead_crds::admission::TEMPLATE_PATH),
        &bulkhead_crds::admission::admission_policy_template(),
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

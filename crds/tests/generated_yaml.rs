//! The CRD YAML committed under charts/bulkhead/crds/ is exactly what the types generate.
//! Run `make crds` after changing a type.

use std::{collections::BTreeSet, fs, path::Path};

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/bulkhead/crds");
    let mut expected = BTreeSet::new();
    for crd in bulkhead_crds::crds() {
        let file = bulkhead_crds::crd_file_name(&crd);
        let path = dir.join(&file);
        let committed = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        assert!(
            committed == bulkhead_crds::crd_yaml(&crd),
            "{} differs from what the types generate; run `make crds` and commit the result",
            path.display()
        );
        expected.insert(file);
    }
    let present: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    assert_eq!(present, expected, "stale CRD files in {}", dir.display());
}

#[test]
fn committed_admission_policy_matches_the_levels() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/bulkhead")
        .join(bulkhead_crds::admission::TEMPLATE_PATH);
    let committed = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
    assert!(
        committed == bulkhead_crds::admission::admission_policy_template(),
        "{} differs from crds/src/policy.rs; run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn every_crd_has_status_short_name_category_and_columns() {
    for crd in bulkhead_crds::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let names = &crd.spec.names;
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{name}: short name"
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["bulkhead".to_string()][..]),
            "{name}"
        );
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}"
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{name}"
        );
        let schema = serde_json::to_string(&version.schema).unwrap();
        assert!(
            schema.contains("\"description\""),
            "{name}: field docs for kubectl explain"
        );
    }
}

#[test]
fn docker_default_profile_syscalls_are_all_known() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/docker-seccomp-default.json");
    let Ok(json) = fs::read_to_string(&path) else {
        eprintln!(
            "SKIPPED: {} is absent (it is not part of the repository)",
            path.display()
        );
        return;
    };
    let profile: serde_json::Value = serde_json::from_str(&json).unwrap();
    let known: BTreeSet<&str> = bulkhead_crds::syscalls::SYSCALL_NAMES
        .iter()
        .copied()
        .collect();
    for rule in profile["syscalls"].as_array().unwrap() {
        for name in rule["names"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(
                known.contains(name),
                "{name} is in Docker's profile but not SYSCALL_NAMES"
            );
        }
    }
}

//! The container images `make images` builds without Docker (e2e/hack/oci-images.sh): each
//! docker-archive names its image, its layers hold the runtime base and the binary, the
//! controller's config runs it as a non-root user, and the image really runs in containerd.
//!
//! To keep release builds out of `make test`, the archives here are built by the same script
//! from the debug binaries test.sh has built; `make images` runs it on the release binaries.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use bulkhead_e2e::{
    agent::{containerd_socket, ctr},
    repo_root, state_dir,
};

fn sh(script: &str) -> String {
    let out = Command::new("bash").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (manifest.json entry, image config) of a docker-archive.
fn inspect(archive: &str) -> (serde_json::Value, serde_json::Value) {
    let manifest: serde_json::Value =
        serde_json::from_str(&sh(&format!("tar -xOf {archive} manifest.json"))).unwrap();
    let entry = manifest[0].clone();
    let config = entry["Config"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&sh(&format!("tar -xOf {archive} {config}"))).unwrap();
    (entry, config)
}

/// The paths in one layer of a docker-archive.
fn layer_files(archive: &str, layer: &str) -> Vec<String> {
    sh(&format!("tar -xOf {archive} {layer} | tar -t"))
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

#[test]
fn image_archives_list_the_binaries_and_the_controller_runs_as_non_root() {
    bulkhead_e2e::ensure();
    let out = state_dir().join("images-test");
    let bins = repo_root().join("target/debug");
    let built = Command::new("bash")
        .arg(repo_root().join("e2e/hack/oci-images.sh"))
        .args(["--bin-dir", bins.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(["--tag", "e2e"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    check_archives(&out, "e2e");
    // The archives `make images` wrote from the release binaries, when it has run.
    let released = repo_root().join("target/images");
    if released.join("bulkhead-controller.tar").exists() {
        check_archives(&released, env!("CARGO_PKG_VERSION"));
    }

    // The image runs: containerd imports the archive and runc starts the binary, as the
    // image's user, with only the base layer's libraries.
    let ns = format!("bulkhead-images-{}", std::process::id());
    let import = Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket())
        .args(["--namespace", &ns, "images", "import"])
        .arg(out.join("bulkhead-controller.tar"))
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let id = format!("version-{}", std::process::id());
    let run = Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket())
        .args([
            "--namespace",
            &ns,
            "run",
            "--rm",
            "docker.io/bulkhead/controller:e2e",
            &id,
            "/usr/local/bin/bulkhead-controller",
            "--version",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout).into_owned();
    ctr(&ns, &["images", "rm", "docker.io/bulkhead/controller:e2e"]);
    assert!(
        run.status.success() && printed.starts_with("bulkhead-controller "),
        "ctr run: {printed}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Checks the two archives in `dir`, tagged `tag`: names, layers, users, entrypoints.
fn check_archives(dir: &std::path::Path, tag: &str) {
    for (binary, repo, user) in [
        ("bulkhead-controller", "bulkhead/controller", "65532:65532"),
        ("bulkhead-node-agent", "bulkhead/node-agent", "0:0"),
    ] {
        let archive = dir.join(format!("{binary}.tar"));
        let archive = archive.to_str().unwrap();
        let (entry, config) = inspect(archive);
        assert_eq!(entry["RepoTags"][0], format!("docker.io/{repo}:{tag}"));
        let layers: Vec<&str> = entry["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(layers.len(), 2, "{entry}");
        let base = layer_files(archive, layers[0]);
        assert!(
            base.iter().any(|f| f.ends_with("/libc.so.6")),
            "no libc in the base layer: {base:?}"
        );
        assert!(base.iter().any(|f| f == "etc/passwd"), "{base:?}");
        assert!(
            !base
                .iter()
                .any(|f| f.starts_with("bin/") || f.ends_with("/sh")),
            "the base has a shell or bin/: {base:?}"
        );
        let top = layer_files(archive, layers[1]);
        assert!(
            top.contains(&format!("usr/local/bin/{binary}")),
            "{binary} not in the top layer: {top:?}"
        );
        assert_eq!(config["config"]["User"], user, "{config}");
        assert_eq!(
            config["config"]["Entrypoint"][0],
            format!("/usr/local/bin/{binary}")
        );
        assert_eq!(config["os"], "linux");
    }
    let (_, controller) = inspect(dir.join("bulkhead-controller.tar").to_str().unwrap());
    let user = controller["config"]["User"].as_str().unwrap();
    assert!(
        !user.starts_with("0:") && !user.starts_with("root"),
        "the controller image runs as {user}"
    );
}

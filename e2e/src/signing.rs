//! Pushing and signing test images in the local registry, as users do: skopeo copies an image
//! under a tag, the real cosign CLI (built by e2e/hack/tools.sh, pinned in versions.env) signs
//! a digest with a key pair made for the test, offline (no transparency log).

use std::{path::PathBuf, process::Command};

use bulkhead_crds::workload::WorkloadPhase;

use crate::{
    TestNamespace,
    agent::registry,
    control_plane::repo_root,
    rollout::{create, status_of, wait_for},
};

/// The password of every test key (cosign encrypts private keys).
const PASSWORD: &str = "bulkhead-e2e";

/// The cosign binary e2e/hack/tools.sh builds.
pub fn cosign() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/hack/tools.sh"))
        .arg("--print-cosign")
        .output()
        .expect("bash runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "cosign is missing at {}: run e2e/hack/tools.sh (make deps) to build it",
        path.display()
    );
    path
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A cosign key pair in a directory of its own.
#[derive(Debug)]
pub struct KeyPair {
    dir: tempfile::TempDir,
}

impl KeyPair {
    /// `cosign generate-key-pair`.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        run(
            Command::new(cosign())
                .args(["generate-key-pair", "--output-key-prefix", "cosign"])
                .current_dir(dir.path())
                .env("COSIGN_PASSWORD", PASSWORD),
            "cosign generate-key-pair",
        );
        Self { dir }
    }

    /// The public key, PEM (the content of cosign.pub).
    pub fn public_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cosign.pub")).expect("cosign.pub")
    }

    fn private(&self) -> PathBuf {
        self.dir.path().join("cosign.key")
    }

    /// `cosign sign --key`: signs `repository@digest` in the local registry, pushing
    /// `sha256-<hex>.sig` beside it; no transparency log.
    pub fn sign(&self, repository: &str, digest: &str) {
        let reference = format!("{}/{repository}@{digest}", registry());
        run(
            Command::new(cosign())
                .args(["sign", "--yes", "--key"])
                .arg(self.private())
                .args([
                    "--tlog-upload=false",
                    "--allow-insecure-registry",
                    &reference,
                ])
                .env("COSIGN_PASSWORD", PASSWORD)
                .current_dir(self.dir.path()),
            "cosign sign",
        );
    }
}

/// Copies `src` (a reference in the local registry, e.g. `bulkhead/web:v2`) to
/// `repository:tag`, keeping its digest; returns the digest.
pub fn copy(src: &str, repository: &str, tag: &str) -> String {
    copy_raw(src, repository, tag);
    digest(&format!("{}/{repository}:{tag}", registry()))
}

fn copy_raw(src: &str, repository: &str, tag: &str) {
    run(
        Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}/{src}", registry()),
            &format!("docker://{}/{repository}:{tag}", registry()),
        ]),
        "skopeo copy",
    );
}

/// The digest a reference in the local registry points to.
pub fn digest(reference: &str) -> String {
    run(
        Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{reference}"),
        ]),
        "skopeo inspect",
    )
}

/// The tag cosign keeps the signatures of `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The registry notification token of the local system.
pub fn notify_token() -> String {
    std::fs::read_to_string(crate::control_plane::state_dir().join("registry/notify-token"))
        .expect("up.sh writes the notification token")
        .trim()
        .to_string()
}

/// The controller's notification endpoint of the local system.
pub fn notify_address() -> String {
    format!("127.0.0.1:{}", 9466 + crate::agent::port_offset())
}

fn registry_url(path: &str) -> String {
    format!(
        "http://{}/v2/{path}",
        registry().replace("localhost:", "127.0.0.1:")
    )
}

fn curl(args: &[&str], what: &str) -> String {
    run(
        Command::new("curl")
            .args(["--noproxy", "*", "-fsS", "--max-time", "10"])
            .args(args),
        what,
    )
}

/// Replaces the signature artefact of `digest` in `repository` with one whose payload was
/// changed after signing (the signature annotation kept): a tampered signature.
pub fn tamper_signature(repository: &str, digest: &str) {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    let tag = signature_tag(digest);
    let manifest_url = registry_url(&format!("{repository}/manifests/{tag}"));
    let manifest = curl(
        &["-H", &format!("Accept: {OCI}"), &manifest_url],
        "get the signature manifest",
    );
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).expect("a manifest");
    let layer = &mut manifest["layers"][0];
    let old = layer["digest"]
        .as_str()
        .expect("a layer digest")
        .to_string();
    let payload = curl(
        &[&registry_url(&format!("{repository}/blobs/{old}"))],
        "get the payload",
    );
    let tampered = payload.replace(
        "docker-reference\":\"",
        "docker-reference\":\"evil.example/",
    );
    assert_ne!(tampered, payload, "the payload names a docker-reference");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("payload");
    std::fs::write(&file, &tampered).expect("write the payload");
    let sum = run(Command::new("sha256sum").arg(&file), "sha256sum");
    let new = format!(
        "sha256:{}",
        sum.split_whitespace().next().unwrap_or_default()
    );
    let head = curl(
        &[
            "-i",
            "-X",
            "POST",
            &registry_url(&format!("{repository}/blobs/uploads/")),
        ],
        "start a blob upload",
    );
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .expect("the upload location")
        .trim()
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{location}{sep}digest={new}"),
        ],
        "upload the tampered payload",
    );
    layer["digest"] = new.into();
    layer["size"] = tampered.len().into();
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {OCI}"),
            "--data-binary",
            &manifest.to_string(),
            &manifest_url,
        ],
        "put the tampered signature manifest",
    );
}

/// Copies the signature artefact of `from` to be that of `to` (a valid signature, for
/// another digest).
pub fn copy_signature(repository: &str, from: &str, to: &str) {
    let src = format!("{repository}:{}", signature_tag(from));
    copy_raw(&src, repository, &signature_tag(to));
}

/// POSTs `body` to the controller's notification endpoint with `token`; returns the HTTP
/// status and body.
pub fn notify(token: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "--noproxy",
            "*",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/vnd.docker.distribution.events.v1+json",
        ])
        .args(["--data-binary", "@-"])
        .arg(format!(
            "http://{}/registry/notifications",
            notify_address()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A BlueGreen Workload `web` (see [`crate::rollout::web_yaml`]) following `image`'s tag every
/// `interval` seconds, trusting the keys of ConfigMap `trusted-keys`.
pub fn follow_yaml(image: &str, auto_promote: bool, interval: i32) -> String {
    crate::rollout::web_yaml(image, auto_promote, 600).replacen(
        "  strategy:\n",
        &format!(
            "  imageUpdates: {{policy: Follow, checkIntervalSeconds: {interval}, trustedKeys: {{configMapName: trusted-keys}}}}\n  strategy:\n"
        ),
        1,
    )
}

/// [`follow_yaml`] with policy SemverRange over `range`.
pub fn semver_yaml(image: &str, range: &str, interval: i32) -> String {
    follow_yaml(image, true, interval).replacen(
        "{policy: Follow,",
        &format!("{{policy: SemverRange, semverRange: '{range}',"),
        1,
    )
}

/// Creates ConfigMap `trusted-keys` holding `key`'s public key.
pub async fn trust(ns: &TestNamespace, key: &KeyPair) {
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "trusted-keys"},
        "data": {"release.pub": key.public_pem()},
    }))
    .expect("a ConfigMap");
    ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
        .create(&Default::default(), &cm)
        .await
        .expect("the trusted-keys ConfigMap is created");
}

/// A repository of the test's own, its tag `live` pointing to a signed web:v1; a Workload
/// following it, healthy. Returns (repository, key, digest of v1, revision of v1).
pub async fn follow_signed_v1(
    ns: &TestNamespace,
    auto_promote: bool,
    interval: i32,
) -> (String, KeyPair, String, String) {
    let repo = format!("bulkhead/iu-{}", ns.name);
    let key = KeyPair::generate();
    let d1 = copy("bulkhead/web:v1", &repo, "live");
    key.sign(&repo, &d1);
    trust(ns, &key).await;
    create(
        ns,
        &follow_yaml(
            &format!("{}/{repo}:live", registry()),
            auto_promote,
            interval,
        ),
    )
    .await;
    let wl = wait_for(ns, "the signed v1 is accepted and healthy", |wl| {
        let s = status_of(wl);
        s.phase == Some(WorkloadPhase::Healthy)
            && s.image_updates.as_ref().and_then(|u| u.digest.as_deref()) == Some(d1.as_str())
    })
    .await;
    let v1 = status_of(&wl).active_revision.expect("an active revision");
    (repo, key, d1, v1)
}

/// Pushes `src` under `repo:candidate`, signs it with `key` when given, then moves `live` to
/// it (the push the controller is notified of). Returns its digest.
pub fn push(src: &str, repo: &str, key: Option<&KeyPair>) -> String {
    let digest = copy(src, repo, "candidate");
    if let Some(key) = key {
        key.sign(repo, &digest);
    }
    copy(src, repo, "live");
    digest
}

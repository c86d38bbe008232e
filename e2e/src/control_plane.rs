//! Starting (or reusing) the local control plane and installing the CRDs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Once,
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// Where the local system keeps its state, logs and kubeconfig.
pub fn state_dir() -> PathBuf {
    std::env::var_os("BULKHEAD_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".bulkhead"))
}

/// The admin kubeconfig of the local control plane.
pub fn kubeconfig_path() -> PathBuf {
    state_dir().join("kubeconfig")
}

static START: Once = Once::new();

/// Starts the local control plane unless it runs, and installs the Bulkhead CRDs. Safe to
/// call from every test; the work happens once per test process.
pub fn ensure() {
    START.call_once(|| {
        install_log_hint();
        let up = repo_root().join("e2e/hack/up.sh");
        let status = Command::new("bash")
            .arg(&up)
            .current_dir(repo_root())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", up.display()));
        assert!(
            status.success(),
            "{} failed ({status}); see its output above",
            up.display()
        );
        // The CRDs are installed on a runtime of their own: each #[tokio::test] has its own
        // runtime, and a client must not outlive the runtime it was made on.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(install_crds())
        })
        .join()
        .expect("CRD installation thread")
        .unwrap_or_else(|e| panic!("installing the CRDs failed: {e:#}"));
    });
}

/// A client for the local control plane, as its admin. Call from inside the test's runtime.
pub async fn client() -> Client {
    ensure();
    client_unchecked().await.unwrap_or_else(|e| {
        panic!(
            "kubeconfig {} is unusable: {e:#}",
            kubeconfig_path().display()
        )
    })
}

/// Server-side applies every CRD and waits until each is Established.
async fn install_crds() -> anyhow::Result<()> {
    let client = client_unchecked().await?;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let params = PatchParams::apply("bulkhead-e2e").force();
    for crd in bulkhead_crds::crds() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    for crd in bulkhead_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = crate::poll_until(Duration::from_secs(60), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
        if established.is_none() {
            bail!("CRD {name} did not become Established within 60s");
        }
    }
    Ok(())
}

/// A client with the identity of another kubeconfig (a ServiceAccount's, a tenant's).
pub async fn client_for(path: &std::path::Path) -> Client {
    ensure();
    client_from(path)
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {} is unusable: {e:#}", path.display()))
}

async fn client_unchecked() -> anyhow::Result<Client> {
    client_from(&kubeconfig_path()).await
}

async fn client_from(path: &std::path::Path) -> anyhow::Result<Client> {
    Ok(Client::try_from(config_from(path).await?)?)
}

/// The client configuration a kubeconfig file gives.
pub(crate) async fn config_from(path: &std::path::Path) -> anyhow::Result<Config> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// Runs kubectl against the local control plane.
pub fn kubectl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ensure();
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig_path())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("kubectl is installed")
}

/// Makes every panic (a failing assertion) end with where the control plane logs are.
fn install_log_hint() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        eprintln!(
            "\ncomponent logs of the local control plane: {}/logs/ (etcd.log, kube-apiserver.log, kube-controller-manager.log)",
            state_dir().display()
        );
    }));
}

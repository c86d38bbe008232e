//! `verify --host H`: the isolation-attempt suite as a user-facing check. Each attempt runs
//! as a short-lived Instance bound to the host (`spec.hostName` set at create, so no
//! scheduler is involved), its verdict is read from how it ended, and every Instance it made
//! is deleted again, on success, error and Ctrl-C alike.
//!
//! It creates Instances directly, which only the controller and cluster admins may do: run it
//! with admin rights (system:masters).

pub mod attempts;
pub mod judge;

use std::{collections::BTreeMap, path::Path, process::ExitCode, time::Duration};

use bulkhead_crds::{
    Instance, InstanceSpec, Isolation,
    template::{InstanceTemplate, RestartPolicy},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use rand::Rng;

use self::{attempts::Attempt, judge::Outcome};
use crate::{args::VerifyArgs, client::Kube, output};

/// Label on every Instance a run makes; its value is the run's id.
pub const LABEL_RUN: &str = "bulkhead.dev/verify";

/// How long cleanup waits for the node agent to release the Instances.
const CLEANUP_WAIT: Duration = Duration::from_secs(60);

/// The probe image of the local system's registry (`make up`): localhost:5000 moved by
/// BULKHEAD_PORT_OFFSET, as e2e/hack/up.sh moves it.
pub fn default_image(port_offset: Option<&str>) -> String {
    let offset: u16 = port_offset.and_then(|o| o.parse().ok()).unwrap_or(0);
    format!("localhost:{}/bulkhead/tools:v1", 5000 + offset)
}

/// The Instance that runs `attempt` of run `run` on `host`.
pub fn instance(
    attempt: &Attempt,
    run: &str,
    host: &str,
    image: &str,
    isolation: &Isolation,
) -> Instance {
    let mut command = vec!["/bin/probe".to_string()];
    command.extend(attempt.args.iter().map(|a| a.to_string()));
    Instance {
        metadata: ObjectMeta {
            name: Some(format!("verify-{run}-{}", attempt.name)),
            labels: Some([(LABEL_RUN.to_string(), run.to_string())].into()),
            ..Default::default()
        },
        spec: InstanceSpec {
            host_name: Some(host.into()),
            revision: format!("verify-{run}"),
            template: InstanceTemplate {
                image: image.into(),
                command,
                restart_policy: RestartPolicy::Never,
                termination_grace_period_seconds: 1,
                ..Default::default()
            },
            isolation: isolation.clone(),
            seccomp_profile_digest: None,
            image_signature: None,
        },
        status: None,
    }
}

/// Runs the suite and prints the report; the exit code is non-zero on any breach, a failed
/// control, an attempt that did not finish, or Ctrl-C.
pub async fn run(kube: &Kube, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| default_image(std::env::var("BULKHEAD_PORT_OFFSET").ok().as_deref()));
    let isolation = match &args.workload {
        Some(w) => kube.workload(w).await?.spec.isolation,
        None => Isolation::default(),
    };
    let run: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    let api: Api<Instance> = kube.api();
    let result = tokio::select! {
        r = attempt_all(&api, args, &run, &image, &isolation) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let cleaned = cleanup(&api, &run).await;
    let outcomes = result?;
    cleaned?;
    output::print(args.output, &outcomes, || {
        judge::render(&args.host, &outcomes)
    })?;
    Ok(if outcomes.iter().any(|o| o.verdict.fails()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn attempt_all(
    api: &Api<Instance>,
    args: &VerifyArgs,
    run: &str,
    image: &str,
    isolation: &Isolation,
) -> anyhow::Result<Vec<Outcome>> {
    eprintln!(
        "running {} attempts on host {} as Instances labelled {LABEL_RUN}={run} ({image})",
        attempts::ALL.len(),
        args.host
    );
    for attempt in attempts::ALL {
        let inst = instance(attempt, run, &args.host, image, isolation);
        api.create(&PostParams::default(), &inst).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
                "creating Instances was refused ({}): verify needs the rights of a cluster admin (system:masters)",
                s.message
            ),
            e => anyhow::anyhow!("creating instance {}: {e}", inst.name_any()),
        })?;
    }
    let ended = wait_for_all(api, run, Duration::from_secs(args.timeout)).await?;
    Ok(attempts::ALL
        .iter()
        .map(|a| {
            let inst = ended.get(&format!("verify-{run}-{}", a.name));
            let said = args
                .agent_state_dir
                .as_deref()
                .zip(inst)
                .and_then(|(dir, i)| probe_output(dir, i));
            judge::judge(a, inst, said.as_deref())
        })
        .collect())
}

/// Polls the run's Instances until every one has ended or `timeout` passed.
async fn wait_for_all(
    api: &Api<Instance>,
    run: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Instance>> {
    let lp = ListParams::default().labels(&format!("{LABEL_RUN}={run}"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now: BTreeMap<String, Instance> = api
            .list(&lp)
            .await?
            .items
            .into_iter()
            .map(|i| (i.name_any(), i))
            .collect();
        let done = now.values().filter(|i| judge::ended(i)).count();
        if done == attempts::ALL.len() || tokio::time::Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The probe's output, read from the agent's log file when the host is this machine.
fn probe_output(state_dir: &Path, inst: &Instance) -> Option<String> {
    std::fs::read_to_string(crate::logs::path(state_dir, inst)?).ok()
}

/// Deletes every Instance of the run and waits (bounded) until the agent released them.
async fn cleanup(api: &Api<Instance>, run: &str) -> anyhow::Result<()> {
    let lp = ListParams::default().labels(&format!("{LABEL_RUN}={run}"));
    for inst in api.list(&lp).await?.items {
        match api
            .delete(&inst.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = tokio::time::Instant::now() + CLEANUP_WAIT;
    loop {
        let left = api.list(&lp).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{left} instances labelled {LABEL_RUN}={run} are still being deleted (is the host's node agent running?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_is_a_bound_never_restarted_probe() {
        let iso = Isolation {
            user_namespace: false,
            ..Default::default()
        };
        let inst = instance(&attempts::ALL[0], "abc123", "h1", "reg/tools:v1", &iso);
        assert_eq!(inst.name_any(), "verify-abc123-mount");
        assert_eq!(
            inst.labels().get(LABEL_RUN).map(String::as_str),
            Some("abc123")
        );
        assert_eq!(inst.spec.host_name.as_deref(), Some("h1"));
        assert_eq!(inst.spec.template.command, ["/bin/probe", "mount"]);
        assert_eq!(inst.spec.template.restart_policy, RestartPolicy::Never);
        assert!(!inst.spec.isolation.user_namespace);
    }

    #[test]
    fn the_default_image_follows_the_port_offset() {
        assert_eq!(default_image(None), "localhost:5000/bulkhead/tools:v1");
        assert_eq!(
            default_image(Some("4000")),
            "localhost:9000/bulkhead/tools:v1"
        );
    }
}

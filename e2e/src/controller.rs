//! Controllers a test runs itself: the local system's one stopped for a while, and test
//! controllers with failpoints armed.

use std::{
    process::{Child, Command},
    time::Duration,
};

use crate::{agent::binary, repo_root, state_dir};

/// A controller of this test, killed (by its PID) and reaped when dropped.
#[derive(Debug)]
pub struct TestController(Child);

impl TestController {
    /// Starts a controller as the admin with `failpoints` armed and `extra` arguments.
    pub fn start(identity: &str, failpoints: &str, extra: &[&str]) -> Self {
        let log = std::fs::File::create(
            state_dir()
                .join("logs")
                .join(format!("controller-{identity}.log")),
        )
        .expect("the logs directory of the local system");
        let child = Command::new(binary("bulkhead-controller"))
            .arg("--kubeconfig")
            .arg(state_dir().join("kubeconfig"))
            .args(["--identity", identity, "--metrics-address", "127.0.0.1:0"])
            .args(extra)
            .env("BULKHEAD_FAILPOINTS", failpoints)
            .stdout(log.try_clone().expect("a second handle on the log file"))
            .stderr(log)
            .spawn()
            .expect("the controller binary runs");
        TestController(child)
    }

    /// Whether it exited (a failpoint aborts it).
    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the local system's controller by its recorded PID; starts it again (up.sh is
/// idempotent) when dropped.
#[derive(Debug)]
pub struct LocalControllerStopped;

impl LocalControllerStopped {
    /// Stops it.
    pub fn stop() -> Self {
        let pidfile = state_dir().join("pids").join("controller.pid");
        let pid: i32 = std::fs::read_to_string(pidfile)
            .expect("the local controller's pid file")
            .trim()
            .parse()
            .expect("a pid");
        Command::new("kill")
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        LocalControllerStopped
    }
}

impl Drop for LocalControllerStopped {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(repo_root().join("e2e/hack/up.sh"))
            .output();
        match out {
            Ok(o) if !o.status.success() => eprintln!(
                "restarting the local controller: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("restarting the local controller: {e}"),
            Ok(_) => {}
        }
    }
}

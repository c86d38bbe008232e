//! `bulkhead-node-agent logs <namespace>/<name>`: an instance's stdout and stderr.

use std::path::Path;

/// Prints the newest log file of the instance.
pub fn print(state_dir: &Path, instance: &str) -> anyhow::Result<()> {
    let (namespace, name) = instance
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("give the instance as <namespace>/<name>"))?;
    let dir = state_dir.join("logs");
    let prefix = format!("{namespace}_{name}_");
    let newest = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let Some(entry) = newest else {
        anyhow::bail!(
            "no log for instance {instance} in {} (is --state-dir right?)",
            dir.display()
        );
    };
    let text = std::fs::read(entry.path())?;
    use std::io::Write;
    std::io::stdout().write_all(&text)?;
    Ok(())
}

//! Preparing an instance's root filesystem before runc sees it.

use std::path::{Path, PathBuf};

use containerd_client::types::Mount;

/// The overlay upper directory of a snapshot's mounts, if it is an overlay.
pub fn upper_dir(mounts: &[Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .flat_map(|m| m.options.iter())
        .find_map(|o| o.strip_prefix("upperdir=").map(PathBuf::from))
}

/// Creates the mount points of `paths` in the snapshot's upper directory.
///
/// Inside a user namespace runc cannot create them: the image's directories belong to host
/// root, which the instance's root does not map to. The agent, as host root, makes them
/// here; overlayfs merges them with the image's own.
pub fn make_mount_points(mounts: &[Mount], paths: &[String]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(upper) = upper_dir(mounts) else {
        return Ok(());
    };
    for p in paths {
        // One level at a time, each 0755 whatever the agent's umask: the instance's root is
        // an unmapped user here and must be able to traverse them.
        let mut dir = upper.clone();
        for part in Path::new(p.trim_start_matches('/')).components() {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_mount_points_in_the_upper_dir() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("fs");
        std::fs::create_dir(&upper).unwrap();
        let mounts = vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "lowerdir=/x".into(),
                format!("upperdir={}", upper.display()),
                "workdir=/w".into(),
            ],
            ..Default::default()
        }];
        make_mount_points(&mounts, &["/var/cache/app".into()]).unwrap();
        assert!(upper.join("var/cache/app").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(upper.join("var/cache"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o755,
            "traversable by an unmapped user whatever the umask"
        );
        assert_eq!(upper_dir(&[]), None);
        make_mount_points(&[], &["/x".into()]).unwrap();
    }
}

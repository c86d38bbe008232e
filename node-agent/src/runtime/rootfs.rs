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

/// Creates the mount points of `paths` in the snapshot's upper directory, seen under
/// `node_root` when the agent runs in a pod (--cni-root: the snapshot paths containerd
/// gives are the node's).
///
/// Inside a user namespace runc cannot create them: the image's directories belong to host
/// root, which the instance's root does not map to. The agent, as host root, makes them
/// here; overlayfs merges them with the image's own.
pub fn make_mount_points(
    mounts: &[Mount],
    paths: &[String],
    node_root: Option<&Path>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(upper) = upper_dir(mounts) else {
        return Ok(());
    };
    let upper = match node_root {
        Some(root) => root.join(upper.strip_prefix("/").unwrap_or(&upper)),
        None => upper,
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

/// The snapshot's mounts with the instance's SELinux mount label on the overlay root:
/// `context=` makes every file of the rootfs carry the label (the image's files are stored
/// with the snapshot directory's type, which no container may execute), the way runc labels
/// the tmpfs mounts it makes from the spec's mountLabel. Without a label the mounts are
/// unchanged.
pub fn with_mount_label(mut mounts: Vec<Mount>, label: Option<&str>) -> Vec<Mount> {
    if let Some(label) = label {
        for m in mounts.iter_mut().filter(|m| m.r#type == "overlay") {
            m.options.retain(|o| !o.starts_with("context="));
            // Quoted: the categories' comma would otherwise end the option.
            m.options.push(format!("context=\"{label}\""));
        }
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> Mount {
        Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "lowerdir=/x".into(),
                "upperdir=/u".into(),
                "workdir=/w".into(),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_overlay_root_carries_the_mount_label_quoted() {
        let label = "system_u:object_r:container_file_t:s0:c1,c2";
        let m = with_mount_label(vec![overlay()], Some(label));
        assert_eq!(
            m[0].options.last().map(String::as_str),
            Some("context=\"system_u:object_r:container_file_t:s0:c1,c2\"")
        );
        // Once only, whatever was there.
        let again = with_mount_label(m, Some(label));
        assert_eq!(
            again[0]
                .options
                .iter()
                .filter(|o| o.starts_with("context="))
                .count(),
            1
        );
    }

    #[test]
    fn without_a_label_or_an_overlay_the_mounts_are_unchanged() {
        assert_eq!(with_mount_label(vec![overlay()], None), vec![overlay()]);
        let bind = Mount {
            r#type: "bind".into(),
            source: "/s".into(),
            options: vec!["rbind".into()],
            ..Default::default()
        };
        assert_eq!(
            with_mount_label(
                vec![bind.clone()],
                Some("system_u:object_r:container_file_t:s0:c1,c2")
            ),
            vec![bind]
        );
    }

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
        make_mount_points(&mounts, &["/var/cache/app".into()], None).unwrap();
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
        make_mount_points(&[], &["/x".into()], None).unwrap();
    }

    #[test]
    fn under_a_node_root_the_upper_dir_is_the_nodes() {
        let node = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(node.path().join("snap/fs")).unwrap();
        let mounts = vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec!["upperdir=/snap/fs".into()],
            ..Default::default()
        }];
        make_mount_points(&mounts, &["/tmp/app".into()], Some(node.path())).unwrap();
        assert!(node.path().join("snap/fs/tmp/app").is_dir());
    }
}

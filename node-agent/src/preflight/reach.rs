//! Whether a UID an instance's user namespace maps to can reach a directory on the host.
//!
//! runc prepares a container's root filesystem from inside its user namespace: the bundle's
//! `rootfs` under containerd's state directory must be reachable by the host UID that the
//! container's root maps to, which owns none of the directories on the way and is in none of
//! their groups. Every directory from `/` down must therefore be searchable (`x`) by "others".
//! A checkout under a 0700 home directory fails exactly this way, at every instance start.
//!
//! [`ancestors`] stats each directory (the only side effect, through a `stat` function);
//! [`first_blocker`] decides from those modes alone.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// What `stat` says about one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Meta {
    /// From real metadata.
    pub fn of(m: &std::fs::Metadata) -> Self {
        Self {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        }
    }
}

/// One directory on the way to the path, `None` when it does not exist.
pub type Ancestor = (PathBuf, Option<Meta>);

/// `/`, then each ancestor of `path`, then `path` itself, each with its stat (`None` from the
/// first one that does not exist on). `path` should be canonical: symlinks are followed by
/// `stat`, so a symlinked directory would be judged by its target's mode, not its parents'.
pub fn ancestors(path: &Path, stat: impl Fn(&Path) -> io::Result<Meta>) -> Vec<Ancestor> {
    let mut dirs: Vec<PathBuf> = path.ancestors().map(Path::to_path_buf).collect();
    dirs.reverse();
    let mut missing = false;
    dirs.into_iter()
        .map(|d| {
            let meta = if missing { None } else { stat(&d).ok() };
            missing = meta.is_none();
            (d, meta)
        })
        .collect()
}

/// How a path looks to a mapped UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every directory on the way is searchable by it.
    Reachable,
    /// `dir` (mode `mode`) is the first directory it cannot search.
    Blocked {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Every existing directory is searchable, but `dir` does not exist (yet).
    Missing {
        /// The first directory that does not exist.
        dir: PathBuf,
    },
}

/// The first directory of `ancestors` that `uid`/`gid` cannot search (owner, group or other
/// bits, as the kernel picks them; a mapped UID has no capability over the host's files).
pub fn first_blocker(ancestors: &[Ancestor], uid: u32, gid: u32) -> Reach {
    for (dir, meta) in ancestors {
        let Some(m) = meta else {
            return Reach::Missing { dir: dir.clone() };
        };
        let bits = if m.uid == uid {
            m.mode >> 6
        } else if m.gid == gid {
            m.mode >> 3
        } else {
            m.mode
        };
        if bits & 0o1 == 0 {
            return Reach::Blocked {
                dir: dir.clone(),
                mode: m.mode,
            };
        }
    }
    Reach::Reachable
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    const MAPPED: u32 = 1_000_000_000;

    fn real_stat(p: &Path) -> io::Result<Meta> {
        fs::metadata(p).map(|m| Meta::of(&m))
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A fixture tree `<tmp>/home(mode)/checkout/.bulkhead/containerd/state`, canonical.
    fn tree(home_mode: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let home = root.join("home");
        let state = home.join("checkout/.bulkhead/containerd/state");
        fs::create_dir_all(&state).unwrap();
        chmod(&root, 0o755);
        chmod(&home, home_mode);
        (dir, home, state)
    }

    #[test]
    fn a_0700_parent_blocks_and_is_named() {
        let (_tmp, home, state) = tree(0o700);
        let a = ancestors(&state, real_stat);
        assert_eq!(a.first().unwrap().0, Path::new("/"));
        assert_eq!(a.last().unwrap().0, state);
        assert_eq!(
            first_blocker(&a, MAPPED, MAPPED),
            Reach::Blocked {
                dir: home,
                mode: 0o700
            }
        );
    }

    #[test]
    fn traversable_ancestors_reach() {
        let (_tmp, _home, state) = tree(0o711);
        assert_eq!(
            first_blocker(&ancestors(&state, real_stat), MAPPED, MAPPED),
            Reach::Reachable
        );
    }

    #[test]
    fn a_missing_tail_is_reported_after_the_existing_part_is_checked() {
        let (_tmp, home, state) = tree(0o755);
        let gone = state.join("a/b");
        let a = ancestors(&gone, real_stat);
        assert_eq!(a.iter().filter(|(_, m)| m.is_none()).count(), 2);
        assert_eq!(
            first_blocker(&a, MAPPED, MAPPED),
            Reach::Missing {
                dir: state.join("a")
            }
        );
        chmod(&home, 0o700);
        assert!(matches!(
            first_blocker(&ancestors(&gone, real_stat), MAPPED, MAPPED),
            Reach::Blocked { .. }
        ));
    }

    #[test]
    fn owner_and_group_bits_apply_to_the_owner_and_group() {
        let dir = |mode, uid, gid| vec![(PathBuf::from("/d"), Some(Meta { mode, uid, gid }))];
        // 0o710: the owner and the group may search, others not.
        assert_eq!(first_blocker(&dir(0o710, 7, 8), 7, 0), Reach::Reachable);
        assert_eq!(first_blocker(&dir(0o710, 7, 8), 9, 8), Reach::Reachable);
        assert!(matches!(
            first_blocker(&dir(0o710, 7, 8), 9, 9),
            Reach::Blocked { .. }
        ));
        // The owner's own bits win even when "others" may search (0o601).
        assert!(matches!(
            first_blocker(&dir(0o601, 7, 8), 7, 7),
            Reach::Blocked { .. }
        ));
    }
}

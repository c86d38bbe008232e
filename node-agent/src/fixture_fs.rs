//! Fixture files for tests of code that reads /proc and /sys through a root directory.

#![allow(clippy::unwrap_used)] // test support: a panic is the failure report

use std::{fs, path::Path};

/// Writes `content` at `root` + `path`, creating the directories.
pub fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Creates a symlink at `root` + `path` pointing to `target` (namespace links).
pub fn link(root: &Path, path: &str, target: &str) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

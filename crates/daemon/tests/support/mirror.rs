//! Helpers of the daemon's end-to-end tests (included with `#[path]` next to `lab`): the
//! mirror daemons of the lab as guards, test image cleanup, `rbd mirror image status` and
//! the site-b daemon's log.
#![allow(dead_code)]

use serde_json::Value;

use super::lab;

/// The tests of one file each start and stop the site-b daemon: one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Our daemon at site-b for the life of the guard.
pub struct Daemon;

impl Daemon {
    pub fn start() -> Daemon {
        // Never two daemons for one site: stop a stock one left running.
        lab::lab_script(&["mirror-stop", "site-b"], &[]);
        lab::lab_script(
            &["mirror-start", "site-b"],
            &[("RBD_MIRROR_LAB_MIRROR_BIN", env!("CARGO_BIN_EXE_rbd-mirror-rs"))],
        );
        Daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        lab::lab_script(&["mirror-stop", "site-b"], &[]);
    }
}

/// The stock rbd-mirror daemon at `site` for the life of the guard.
pub struct Stock(pub &'static str);

impl Stock {
    pub fn start(site: &'static str) -> Stock {
        lab::lab_script(&["mirror-stop", site], &[]);
        lab::lab_script(&["mirror-start", site], &[]);
        Stock(site)
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        lab::lab_script(&["mirror-stop", self.0], &[]);
    }
}

/// Removes the test images on both sites (kept with `RBD_MIRROR_TEST_KEEP`).
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        if std::env::var_os("RBD_MIRROR_TEST_KEEP").is_some() {
            return;
        }
        let (a, b) = (lab::site("site-a"), lab::site("site-b"));
        for spec in &self.0 {
            for site in [&a, &b] {
                site.rbd_ok(&["mirror", "snapshot", "schedule", "remove", "--image", spec]);
                site.rbd_ok(&["mirror", "image", "disable", "--force", spec]);
                // `snap purge` stops at a protected snapshot.
                let snaps = site.command_output("rbd", &["snap", "ls", spec, "--format", "json"]);
                let snaps: Value = snaps.ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
                for snap in snaps.as_array().into_iter().flatten() {
                    if snap["protected"] == "true" {
                        let name = snap["name"].as_str().unwrap_or_default();
                        site.rbd_ok(&["snap", "unprotect", &format!("{spec}@{name}")]);
                    }
                }
                site.rbd_ok(&["snap", "purge", spec]);
                site.rbd_ok(&["rm", "--no-progress", spec]);
            }
        }
    }
}

/// `rbd mirror image status` of `spec` on `site`: (state, description).
pub fn image_status(site: &lab::Site, spec: &str) -> Result<(String, String), String> {
    let out = site.command_output("rbd", &["mirror", "image", "status", spec, "--format", "json"]);
    let v: Value = serde_json::from_str(&out?).map_err(|e| e.to_string())?;
    Ok((
        v["state"].as_str().unwrap_or_default().to_owned(),
        v["description"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The site-b daemon's log so far.
pub fn daemon_log() -> String {
    std::fs::read_to_string(lab::lab_dir().join("site-b/log/rbd-mirror.b.stdout")).unwrap_or_default()
}

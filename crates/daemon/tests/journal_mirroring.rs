//! Journal-mode mirroring end to end on the lab: `rbd-mirror-rs` started at site-b exactly
//! as the stock daemon is (`tests/lab/lab.sh mirror-start site-b` with our binary) replicates
//! a journaling image of site-a, and the stock `rbd` CLI on both sites agrees.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::time::Duration;

use serde_json::Value;

/// Our daemon at site-b for the life of the guard.
struct Daemon;

impl Daemon {
    fn start() -> Daemon {
        // Never two daemons for one site: stop a stock one left running.
        lab::lab_script(&["mirror-stop", "all"], &[]);
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

/// Removes the test image on both sites.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        if std::env::var_os("RBD_MIRROR_TEST_KEEP").is_some() {
            return;
        }
        let (a, b) = (lab::site("site-a"), lab::site("site-b"));
        for spec in &self.0 {
            for site in [&a, &b] {
                site.rbd_ok(&["mirror", "image", "disable", "--force", spec]);
                site.rbd_ok(&["snap", "purge", spec]);
                site.rbd_ok(&["rm", "--no-progress", spec]);
            }
        }
    }
}

fn image_status(site: &lab::Site, spec: &str) -> Result<(String, String), String> {
    let out = site.command_output("rbd", &["mirror", "image", "status", spec, "--format", "json"]);
    let v: Value = serde_json::from_str(&out?).map_err(|e| e.to_string())?;
    Ok((
        v["state"].as_str().unwrap_or_default().to_owned(),
        v["description"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn bench(site: &lab::Site, spec: &str, pattern: &str, size: &str, total: &str) {
    site.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-pattern",
        pattern,
        "--io-size",
        size,
        "--io-total",
        total,
        spec,
    ]);
}

#[test]
fn journal_image_replicates_with_stock_tools_agreeing() {
    let a = lab::site("site-a");
    let b = lab::site("site-b");
    let name = lab::unique("journal");
    let spec = format!("{}/{name}", lab::POOL);
    let _images = Images(vec![spec.clone()]);

    // Data written before mirroring is enabled arrives by the initial sync.
    a.rbd(&[
        "create",
        "--size",
        "64M",
        "--image-feature",
        "layering,exclusive-lock,object-map,fast-diff,journaling",
        &spec,
    ]);
    bench(&a, &spec, "rand", "4K", "2M");
    a.rbd(&["mirror", "image", "enable", &spec, "journal"]);

    let _daemon = Daemon::start();
    let (state, description) =
        lab::wait_for("the image to replay on site-b", Duration::from_secs(180), || {
            let s = image_status(&b, &spec)?;
            if s.0 == "up+replaying" {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        });
    println!("site-b: {state}, {description}");

    // Replay: random 4K writes, sequential 4M writes, a resize, image-meta.
    bench(&a, &spec, "rand", "4K", "4M");
    bench(&a, &spec, "seq", "4M", "16M");
    a.rbd(&["resize", "--size", "96M", &spec]);
    bench(&a, &spec, "rand", "64K", "4M");
    a.rbd(&["image-meta", "set", &spec, "rbd-mirror-rs.test", "value"]);

    let primary = a.export_sha256(&spec);
    let secondary = lab::wait_for("equal content on both sites", Duration::from_secs(180), || {
        let (state, description) = image_status(&b, &spec)?;
        assert!(!state.ends_with("error"), "replay failed: {state}: {description}");
        let s = b.export_sha256(&spec);
        if s == primary {
            Ok(s)
        } else {
            Err(format!("site-a {primary}, site-b {s}"))
        }
    });
    println!("rbd export | sha256sum: site-a {primary} = site-b {secondary}");

    let (ia, ib) = (a.rbd_json(&["info", &spec]), b.rbd_json(&["info", &spec]));
    for field in ["size", "order", "features", "object_size"] {
        assert_eq!(ia[field], ib[field], "{field}: site-a {} site-b {}", ia[field], ib[field]);
    }
    assert_eq!(ia["mirroring"]["global_id"], ib["mirroring"]["global_id"]);
    assert_eq!(ia["mirroring"]["primary"], true);
    assert_eq!(ib["mirroring"]["primary"], false, "site-b holds the non-primary copy: {ib}");
    let meta = b.rbd(&["image-meta", "get", &spec, "rbd-mirror-rs.test"]);
    assert_eq!(meta.trim(), "value");
    // The object map is consistent: `rbd diff` (which reads it, fast-diff enabled) reports the
    // same allocated extents on both sites. (`rbd object-map check` needs the exclusive lock,
    // which librbd refuses on a non-primary image.)
    let (da, db) = (a.rbd_json(&["diff", &spec]), b.rbd_json(&["diff", &spec]));
    assert_eq!(da, db, "rbd diff differs between the sites");
    assert!(!da.as_array().map(Vec::is_empty).unwrap_or(true), "the image has data");

    let (state, description) = lab::wait_for("caught up in the status", Duration::from_secs(60), || {
        let s = image_status(&b, &spec)?;
        if s.0 == "up+replaying" && s.1.contains("\"entries_behind_primary\":0") {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    println!("site-b: {state}, {description}");
    let pool = b.rbd(&["mirror", "pool", "status", lab::POOL, "--verbose"]);
    assert!(pool.contains(&name), "{pool}");

    // Stopped: the status goes down (the daemon's watch on rbd_mirroring is gone).
    drop(_daemon);
    lab::wait_for("down after the daemon stops", Duration::from_secs(60), || {
        let s = image_status(&b, &spec)?;
        if s.0.starts_with("down+") {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
}

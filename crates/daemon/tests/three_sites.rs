//! Three sites (tests/lab/README.md, "Three sites"): site-a's pool `mirror` transmits to
//! site-b and site-c (one-to-many snapshot mirroring, one peer link per mirror snapshot and
//! peer), site-b also receives from site-c on pool `mirror-c`; after site-a is demoted,
//! site-c may be promoted and site-a follows it. Needs the lab with site-c
//! (`RBD_MIRROR_LAB_SITES="site-a site-b site-c" tests/lab/lab.sh up`, as tests/run.sh
//! brings it up; the tests fail, never skip, without it); checked with the stock `rbd` CLI
//! on every site. Site-a's second peer, site-c, exists only while a test of this file runs
//! ([`PeerAC`]): every other test, and the stock daemon at site-a, sees pool `mirror` with
//! the single peer site-b (stock Pacific runs one competing pool replayer per peer).

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::collections::BTreeSet;
use std::time::Duration;

use mirror::{
    enable_snapshot_mirroring, image_status, mirror_snapshot, serial, snapshots, wait_image_status,
    wait_replicated, wait_synced, Daemon, Images, Stock,
};

const SYNC: Duration = Duration::from_secs(180);

/// The three sites, after the file's serial guard, with site-a <-> site-c peered on pool
/// `mirror` for the life of the [`PeerAC`] guard (declared before the test's own guards, it
/// is dropped after them: daemons stopped and images removed before the peers go).
fn three_sites() -> (std::sync::MutexGuard<'static, ()>, PeerAC, [lab::Site; 3]) {
    let serial = serial();
    let sites = [lab::site("site-a"), lab::site("site-b"), lab::site("site-c")];
    let peer = PeerAC::add(&sites[0], &sites[2]);
    (serial, peer, sites)
}

/// The site names of `site`'s peers of `pool`, sorted.
fn peer_names(site: &lab::Site, pool: &str) -> Vec<String> {
    let info = site.rbd_json(&["mirror", "pool", "info", pool]);
    let peers = info["peers"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> =
        peers.iter().filter_map(|p| p["site_name"].as_str().map(str::to_owned)).collect();
    names.sort();
    names
}

/// Site-c as site-a's second peer of pool `mirror`, and site-a as site-c's (`lab.sh
/// peer-c`: librbd's peer_site_add, rx-tx both), until dropped (`lab.sh unpeer-c`: `rbd
/// mirror pool peer remove` on both sites).
struct PeerAC;

impl PeerAC {
    fn add(a: &lab::Site, c: &lab::Site) -> PeerAC {
        // The guard first: a half-done peer-c is undone too (unpeer-c is idempotent).
        let guard = PeerAC;
        lab::lab_script(&["peer-c"], &[]);
        assert_eq!(peer_names(a, lab::POOL), ["site-b", "site-c"], "site-a's peers of pool mirror");
        assert_eq!(peer_names(c, lab::POOL), ["site-a"], "site-c's peers of pool mirror");
        guard
    }
}

impl Drop for PeerAC {
    fn drop(&mut self) {
        // lab.sh checks that both peers are gone.
        match lab::try_lab_script(&["unpeer-c"], &[]) {
            Ok(()) => println!("site-a <-> site-c unpeered on pool mirror"),
            // A second panic while unwinding would abort: the test's own failure is reported.
            Err(e) if std::thread::panicking() => eprintln!("removing the site-a <-> site-c peers: {e}"),
            Err(e) => panic!("removing the site-a <-> site-c peers: {e}"),
        }
    }
}

/// The uuid of `site`'s peer record named `peer` in `pool`.
fn peer_uuid(site: &lab::Site, pool: &str, peer: &str) -> String {
    let info = site.rbd_json(&["mirror", "pool", "info", pool]);
    let peers = info["peers"].as_array().cloned().unwrap_or_default();
    let found = peers.iter().find(|p| p["site_name"] == peer);
    found
        .and_then(|p| p["uuid"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no peer {peer}: {info}"))
}

/// The peer uuids linked to each mirror snapshot of `spec` on `site` (`rbd snap ls --all`).
fn peer_links(site: &lab::Site, spec: &str) -> Vec<(u64, BTreeSet<String>)> {
    let snaps = snapshots(site, spec);
    let mirror = snaps.iter().filter(|s| s["namespace"]["type"] == "mirror");
    mirror
        .map(|s| {
            let uuids = s["namespace"]["mirror_peer_uuids"].as_array().cloned().unwrap_or_default();
            let uuids = uuids.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect();
            (s["id"].as_u64().unwrap_or_default(), uuids)
        })
        .collect()
}

/// The peer uuids linked to mirror snapshot `id` (`None`: the snapshot is gone).
fn links_of(site: &lab::Site, spec: &str, id: u64) -> Option<BTreeSet<String>> {
    peer_links(site, spec).into_iter().find(|(s, _)| *s == id).map(|(_, uuids)| uuids)
}

/// Creates `pool/<unique>` on `site`, 64 MiB, with 2 MiB of random writes; removed with the
/// guard on every site.
fn new_image(site: &lab::Site, pool: &str, prefix: &str, features: &str) -> (String, Images) {
    let spec = format!("{pool}/{}", lab::unique(prefix));
    site.rbd(&["create", "--size", "64M", "--image-feature", features, &spec]);
    let images = Images(vec![spec.clone()]);
    site.bench(&spec, "rand", "4K", "2M");
    (spec, images)
}

fn assert_same(spec: &str, sites: &[&lab::Site]) {
    let sums: Vec<String> = sites.iter().map(|s| s.export_sha256(spec)).collect();
    println!("{spec}: sha256 {sums:?} on {:?}", sites.iter().map(|s| s.name).collect::<Vec<_>>());
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{spec}: rbd export | sha256sum differs: {sums:?}");
}

/// Our daemon at site-b replicates at once a snapshot-mode image of site-a (pool `mirror`)
/// and a journal-mode image of site-c (pool `mirror-c`). Site-a's mirror snapshots are linked
/// to both of its peers; site-b unlinks only its own peer uuid from the snapshot it no longer
/// needs, leaving site-c's link until site-c (the stock daemon) has synced too.
#[test]
fn site_b_replicates_from_a_and_c_while_a_mirrors_to_b_and_c() {
    let (_serial, _peer_ac, [a, b, c]) = three_sites();
    let (from_a, _images_a) =
        new_image(&a, lab::POOL, "three-a", "layering,exclusive-lock,object-map,fast-diff");
    let (from_c, _images_c) =
        new_image(&c, lab::POOL_C, "three-c", "layering,exclusive-lock,object-map,fast-diff,journaling");
    let first = enable_snapshot_mirroring(&a, &from_a);
    c.rbd(&["mirror", "image", "enable", &from_c, "journal"]);
    let (to_b, to_c) = (peer_uuid(&a, lab::POOL, "site-b"), peer_uuid(&a, lab::POOL, "site-c"));
    let both: BTreeSet<String> = [to_b.clone(), to_c.clone()].into();
    assert_eq!(links_of(&a, &from_a, first), Some(both.clone()), "one link per peer of site-a");

    let _ours = Daemon::start_at("site-b");
    wait_synced(&b, &from_a, first, SYNC);
    wait_replicated(&b, &from_c, &c.export_sha256(&from_c), SYNC);
    a.bench(&from_a, "rand", "4K", "1M");
    let second = mirror_snapshot(&a, &from_a);
    wait_synced(&b, &from_a, second, SYNC);
    assert_same(&from_a, &[&a, &b]);
    assert_same(&from_c, &[&c, &b]);
    println!("site-a's mirror snapshots, site-b synced: {:?}", peer_links(&a, &from_a));
    assert_eq!(links_of(&a, &from_a, first), Some([to_c.clone()].into()), "site-b unlinked only its own");
    assert_eq!(links_of(&a, &from_a, second), Some(both.clone()));

    let _stock = Stock::start("site-c");
    wait_synced(&c, &from_a, second, SYNC);
    assert_same(&from_a, &[&a, &b, &c]);
    for site in [&b, &c] {
        // The stock daemon publishes its statuses every 30 s.
        let what = format!("{spec} up+replaying on {}", site.name, spec = from_a);
        let (state, description) =
            wait_image_status(site, &from_a, &what, Duration::from_secs(60), |s, _| s == "up+replaying");
        println!("{}: {state} {description}", site.name);
    }
    // Site-c's stock daemon unlinked its own peer from the first snapshot too: no peer is
    // linked any more (the snapshot goes with a later primary snapshot's pruning, or at once).
    lab::wait_for("site-a's first mirror snapshot unlinked by both", Duration::from_secs(60), || {
        match links_of(&a, &from_a, first) {
            None => Ok(()),
            Some(l) if l.is_empty() => Ok(()),
            Some(l) => Err(format!("{l:?}")),
        }
    });
    println!("site-a's mirror snapshots, both synced: {:?}", peer_links(&a, &from_a));
    assert_eq!(links_of(&a, &from_a, second), Some(both), "each secondary keeps its link to its start");
}

/// Failover to site-c, with our daemon at every site: site-a demoted, both secondaries sync
/// the demotion; site-c promoted and written to; site-a (whose pool `mirror` has the two
/// peers site-b and site-c) replicates back from site-c. Site-b, whose only peer for the
/// image is site-a, now non-primary, keeps the demoted content (no cascading, as stock).
#[test]
fn site_a_demoted_site_c_promoted_and_site_a_follows_it() {
    let (_serial, _peer_ac, [a, b, c]) = three_sites();
    let (spec, _images) =
        new_image(&a, lab::POOL, "three-fail", "layering,exclusive-lock,object-map,fast-diff");
    let first = enable_snapshot_mirroring(&a, &spec);
    let _ours_b = Daemon::start_at("site-b");
    let _ours_c = Daemon::start_at("site-c");
    wait_synced(&b, &spec, first, SYNC);
    wait_synced(&c, &spec, first, SYNC);

    a.bench(&spec, "rand", "4K", "1M");
    a.rbd(&["mirror", "image", "demote", &spec]);
    for site in [&b, &c] {
        let what = format!("{} sees the demotion", site.name);
        wait_image_status(site, &spec, &what, SYNC, |_, d| d.contains("demoted"));
    }
    assert_same(&spec, &[&a, &b, &c]);
    let demoted = a.export_sha256(&spec);

    c.rbd(&["mirror", "image", "promote", &spec]);
    assert_eq!(c.rbd_json(&["info", &spec])["mirroring"]["primary"], true);
    c.bench(&spec, "rand", "4K", "1M");
    let on_c = mirror_snapshot(&c, &spec);
    let _ours_a = Daemon::start_at("site-a");
    wait_synced(&a, &spec, on_c, SYNC);
    assert_same(&spec, &[&c, &a]);
    wait_image_status(&a, &spec, "site-a replaying from site-c", Duration::from_secs(60), |s, _| {
        s == "up+replaying"
    });
    wait_image_status(&c, &spec, "site-c: local image is primary", Duration::from_secs(60), |s, d| {
        s == "up+stopped" && d == "local image is primary"
    });
    // Site-a's status stays site-c's replayer's (its other peer, site-b, is not primary).
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let (state, description) = image_status(&a, &spec).expect("status");
        assert_eq!(state, "up+replaying", "site-a: {description}");
    }
    let (state, description) = image_status(&b, &spec).expect("status");
    println!("site-b: {state} {description}");
    assert!(!state.ends_with("error"), "site-b: {state} {description}");
    assert_eq!(b.rbd_json(&["info", &spec])["mirroring"]["primary"], false);
    assert_eq!(b.export_sha256(&spec), demoted, "site-b keeps what site-a had at the demotion");
}

//! Commits count toward the tenant's `storage` quota (#13 quotas): a commit raises `GET /quota`'s
//! use by its size until deleted; one beyond the quota is 403 `quota_exceeded` with its
//! figures and leaves nothing; of two parallel commits where only one fits, exactly one lands.

#[path = "common/commits.rs"]
mod commits;
mod common;

use commits::*;
use common::*;
use hyper::Method;

/// The tenant's storage in use and its limit (`GET /quota`).
fn storage_quota(c: &bulkhead_api::Client) -> (u64, u64) {
    let (st, b) = call(c, Method::GET, "/quota", "");
    assert_eq!(st, 200, "{b}");
    let f = &json(&b)["tenants"][0]["storage_bytes"];
    (f["used"].as_u64().unwrap(), f["limit"].as_u64().unwrap())
}

/// Asserts a 403 `quota_exceeded` on `storage` with its figures.
fn refused_storage(st: u16, b: &str, limit: &str) {
    assert_eq!(st, 403, "{b}");
    let v = json(b);
    assert_eq!(v["code"], "quota_exceeded", "{b}");
    let m = v["error"].as_str().unwrap();
    assert!(
        m.starts_with("quota exceeded: storage: ")
            && m.contains(" in use + ")
            && m.contains(&format!(" asked > {limit} allowed (config.quotas.storage)")),
        "{m}"
    );
}

#[test]
fn commits_count_toward_the_storage_quota_until_deleted() {
    if !privileged() {
        return;
    }
    // Two nodes of 512M each; 24M left for commits.
    let d = Daemon::start_edited("cq", &[], |y| {
        y.replace("storage_size: 1G", "storage_size: 512M").replace(
            "  image: minimal",
            "  image: minimal\n  quotas: {storage: 1048M}",
        )
    });
    let c = d.client();
    let (n1, n2) = (d.add(), d.add());
    let limit = 1048u64 << 20;
    assert_eq!(storage_quota(&c), (1 << 30, limit));

    // Within it: the quota's use rises by the commit's size, and a delete frees it.
    let id = commit(&c, &n1);
    let (_, b) = call(&c, Method::GET, &format!("/vm/commits/{id}"), "");
    let size = json(&b)["size_bytes"].as_u64().unwrap();
    assert!(size > 0 && size < 8 << 20, "the image's tree: {size}");
    assert_eq!(storage_quota(&c).0, (1 << 30) + size);
    let (st, b) = call(&c, Method::DELETE, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 204, "{b}");
    assert_eq!(storage_quota(&c).0, 1 << 30);

    // Beyond it: 403 with the figures, and nothing left (no row, no file, no tree).
    let (code, _, err) = d.sh(
        &n1,
        "dd if=/dev/urandom of=/root/big bs=1M count=30 2>/dev/null",
    );
    assert_eq!(code, 0, "{err}");
    let (st, b) = call(&c, Method::POST, &format!("/vm/{n1}/commit"), "");
    refused_storage(st, &b, "1048M");
    let (_, list) = call(&c, Method::GET, "/vm/commits", "");
    assert_eq!(json(&list), serde_json::json!([]));
    assert_eq!(commit_files(&d.tenant_dir()), Vec::<String>::new());
    assert_eq!(storage_quota(&c).0, 1 << 30);

    // Two at once where each fits alone but not both: exactly one lands.
    for n in [&n1, &n2] {
        let (code, _, err) = d.sh(
            n,
            "rm -f /root/big && dd if=/dev/urandom of=/root/half bs=1M count=14 2>/dev/null",
        );
        assert_eq!(code, 0, "{err}");
    }
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = [&n1, &n2]
            .map(|n| {
                let c = c.clone();
                s.spawn(move || call(&c, Method::POST, &format!("/vm/{n}/commit"), ""))
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let landed: Vec<&(u16, String)> = answers.iter().filter(|(st, _)| *st == 201).collect();
    assert_eq!(landed.len(), 1, "{answers:?}");
    let (st, b) = answers.iter().find(|(st, _)| *st != 201).unwrap();
    refused_storage(*st, b, "1048M");
    let won = json(&landed[0].1);
    let (used, _) = storage_quota(&c);
    assert_eq!(used, (1 << 30) + won["size_bytes"].as_u64().unwrap());
    assert!(used <= limit, "{used} > {limit}");
    let (_, list) = call(&c, Method::GET, "/vm/commits", "");
    assert_eq!(json(&list).as_array().unwrap().len(), 1, "{list}");
    // The refused one left nothing: only the landed commit's sealed file and tree.
    let id = won["id"].as_str().unwrap();
    assert_eq!(
        commit_files(&d.tenant_dir()),
        vec![format!("{id}.sealed"), format!("commit-{id}-jail.img")]
    );
    let (st, b) = call(&c, Method::DELETE, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 204, "{b}");
    assert_eq!(storage_quota(&c).0, 1 << 30);
    d.stop_and_assert_clean();
}

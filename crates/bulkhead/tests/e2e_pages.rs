//! End to end: paged node lists (`limit`, `cursor`, `X-Next-Cursor`) over the real daemon,
//! beside the unpaged list, while nodes come and go; and the errors for bad pages.

mod common;

use bulkhead_api::client::full_body;
use common::*;
use http_body_util::BodyExt;
use hyper::Method;

/// GET `path`: status, the `X-Next-Cursor` header, the body.
fn get(
    rt: &tokio::runtime::Runtime,
    c: &bulkhead_api::Client,
    path: &str,
) -> (u16, Option<String>, bytes::Bytes) {
    rt.block_on(async {
        let r = c
            .send(Method::GET, path, full_body(""), None)
            .await
            .unwrap();
        let status = r.status().as_u16();
        let next = r
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        (
            status,
            next,
            r.into_body().collect().await.unwrap().to_bytes(),
        )
    })
}

fn names(body: &[u8]) -> Vec<String> {
    let nodes: Vec<bulkhead_api::Node> = serde_json::from_slice(body).unwrap();
    nodes.into_iter().map(|n| n.hostname).collect()
}

/// Follows `X-Next-Cursor` from `first` to the last page; `between` runs after each page.
fn walk(
    rt: &tokio::runtime::Runtime,
    c: &bulkhead_api::Client,
    first: &str,
    mut between: impl FnMut(usize),
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = first.to_string();
    loop {
        let (status, next, body) = get(rt, c, &path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        pages.push(names(&body));
        between(pages.len());
        match next {
            Some(cur) => path = format!("{first}&cursor={cur}"),
            None => return pages,
        }
        assert!(pages.len() < 50, "paging does not end");
    }
}

#[test]
fn pages_cover_the_list_once_and_bad_pages_are_400() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("pg", &[]);
    let rt = rt();
    let c = d.client();
    let g = d.tenant.clone();
    let create = |tag: &str| -> String {
        let v: serde_json::Value = rt
            .block_on(c.json(
                Method::POST,
                &format!("/hostgroup/{g}/nodes"),
                Some(&serde_json::json!({ "tags": [tag] })),
            ))
            .unwrap();
        v["hostname"].as_str().unwrap().to_string()
    };
    for i in 0..7 {
        create(&format!("p={}", i % 2));
    }

    // Unpaged: the whole list, no cursor header.
    let (status, next, full) = get(&rt, &c, "/nodes");
    assert_eq!((status, next), (200, None));
    let all = names(&full);
    assert_eq!(all.len(), 7);
    let (_, _, again) = get(&rt, &c, "/nodes");
    assert_eq!(again, full, "the same list, byte for byte");

    // Pages of 3 concatenate to the list; the last page has no cursor.
    let pages = walk(&rt, &c, "/nodes?limit=3", |_| {});
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), all);
    let (_, next, body) = get(&rt, &c, "/nodes?limit=7");
    assert_eq!(
        (next, names(&body)),
        (None, all.clone()),
        "an exact fit has no next page"
    );

    // Nodes come and go between pages: those there throughout appear exactly once, in order.
    let gone = all[5].clone();
    let mut added = String::new();
    let pages = walk(&rt, &c, "/nodes?limit=2", |n| {
        if n == 1 {
            let r = rt.block_on(c.send_ok(
                Method::DELETE,
                &format!("/hostgroup/{g}/nodes/{gone}"),
                full_body(""),
                None,
            ));
            assert!(r.is_ok(), "{r:?}");
            added = create("p=new");
        }
    });
    let seen = pages.concat();
    let want: Vec<String> = all.iter().filter(|n| **n != gone).cloned().collect();
    assert_eq!(seen[..want.len()], want[..]);
    assert_eq!(
        seen[want.len()..],
        [added.clone()],
        "a node made meanwhile appears once"
    );

    // The group route, with a tag filter.
    let evens = walk(
        &rt,
        &c,
        &format!("/hostgroup/{g}/nodes?tag=p%3D0&limit=2"),
        |_| {},
    );
    let (_, _, want) = get(&rt, &c, &format!("/hostgroup/{g}/nodes?tag=p%3D0"));
    assert_eq!(evens.concat(), names(&want));
    assert!(evens.iter().all(|p| p.len() <= 2) && names(&want).len() >= 3);

    // Bad pages: 400 invalid_request naming the problem.
    for (path, says) in [
        ("/nodes?limit=0", "from 1 to 1000"),
        ("/nodes?limit=1001", "from 1 to 1000"),
        ("/nodes?limit=ten", "from 1 to 1000"),
        ("/nodes?limit=5&cursor=bogus", "cursor \"bogus\""),
        ("/nodes?limit=5&cursor=", "cursor"),
        ("/nodes?cursor=abc", "needs \"limit\""),
        (&format!("/hostgroup/{g}/nodes?limit=-3"), "from 1 to 1000"),
    ] {
        let (status, next, body) = get(&rt, &c, path);
        let e: bulkhead_api::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, e.code.as_str(), next),
            (400, "invalid_request", None),
            "{path}"
        );
        assert!(e.error.contains(says), "{path}: {}", e.error);
    }
    let (status, _, _) = get(&rt, &c, "/hostgroup/nosuchgroup/nodes?limit=5");
    assert_eq!(status, 404);
    d.stop_and_assert_clean();
}

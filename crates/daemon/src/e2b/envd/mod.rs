//! E2B's in-sandbox API ("envd"), served by the daemon for every node through its agent:
//! nothing new listens inside a node. Every route here is under `/envd/{node}/` (the E2B
//! listener rewrites in-sandbox requests to it, `super`), so the authorization layer resolves
//! the node's tenant and handlers take [`crate::http::body::Scoped`] like any node route.

use crate::http::Route;

// #15 C: process.Process (Connect-RPC)
pub mod connect;
pub mod process;
mod process_stream;

/// `process.Process`'s methods: path, action, handler.
fn process_routes() -> Vec<Route> {
    use crate::auth::Action::{ControlBgExecs, ExecInNode, ReadBgExecs};
    use axum::routing::post;
    let r = |path, methods, handler| Route {
        path,
        methods,
        handler,
    };
    vec![
        r(
            "/envd/{node}/process.Process/Start",
            &[("post", ExecInNode)],
            post(process::start),
        ),
        r(
            "/envd/{node}/process.Process/Connect",
            &[("post", ReadBgExecs)],
            post(process::connect),
        ),
        r(
            "/envd/{node}/process.Process/List",
            &[("post", ReadBgExecs)],
            post(process::list),
        ),
        r(
            "/envd/{node}/process.Process/SendInput",
            &[("post", ControlBgExecs)],
            post(process::send_input),
        ),
        r(
            "/envd/{node}/process.Process/StreamInput",
            &[("post", ControlBgExecs)],
            post(process::stream_input),
        ),
        r(
            "/envd/{node}/process.Process/SendSignal",
            &[("post", ControlBgExecs)],
            post(process::send_signal),
        ),
        r(
            "/envd/{node}/process.Process/CloseStdin",
            &[("post", ControlBgExecs)],
            post(process::close_stdin),
        ),
        r(
            "/envd/{node}/process.Process/Update",
            &[("post", ControlBgExecs)],
            post(process::update),
        ),
    ]
}
// #15 C end

// #15 D: filesystem.Filesystem (Connect-RPC), /files, /health, /envs, /metrics, /init
pub mod files;
pub mod filesystem;
pub mod fs_ops;
pub mod rest;
pub mod user;
pub mod watchers;

/// The envd version the control plane reports (`envdVersion`): the SDKs switch features on
/// and off by it, so it is as new as what this API serves and no newer. 0.5.7: a default user
/// chosen by the server (0.4.0), stdin and `CloseStdin` (0.3.0, 0.5.2), recursive watches
/// (0.1.4) and `application/octet-stream` uploads (0.5.7). Not 0.6.2: file metadata (xattrs)
/// on uploads is not served.
pub const ENVD_VERSION: &str = "0.5.7";
// #15 D end

/// Every in-sandbox route, for the E2B listener's route table.
pub fn table() -> Vec<Route> {
    #[allow(unused_mut)]
    let mut t: Vec<Route> = Vec::new();
    // #15 C
    t.extend(process_routes());
    // #15 C end
    // #15 D
    {
        use crate::auth::Action::*;
        use axum::routing::{get, post};
        let r = |path, methods, handler| Route {
            path,
            methods,
            handler,
        };
        t.push(r(
            "/envd/{node}/files",
            &[("get", CopyFromNode), ("post", CopyToNode)],
            get(files::download).post(files::upload),
        ));
        t.push(r(
            "/envd/{node}/health",
            &[("get", ReadNodeHealth)],
            get(rest::health),
        ));
        t.push(r(
            "/envd/{node}/envs",
            &[("get", DescribeNode)],
            get(rest::envs),
        ));
        t.push(r(
            "/envd/{node}/metrics",
            &[("get", ReadNodeStats)],
            get(rest::metrics),
        ));
        t.push(r(
            "/envd/{node}/init",
            &[("post", ExecInNode)],
            post(rest::init),
        ));
        // filesystem.Filesystem: Connect calls are POSTs of /<package>.<Service>/<Method>
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/Stat",
            &[("post", CopyFromNode)],
            post(filesystem::stat),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/ListDir",
            &[("post", CopyFromNode)],
            post(filesystem::list_dir),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/MakeDir",
            &[("post", CopyToNode)],
            post(filesystem::make_dir),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/Move",
            &[("post", CopyToNode)],
            post(filesystem::move_entry),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/Remove",
            &[("post", CopyToNode)],
            post(filesystem::remove),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/WatchDir",
            &[("post", CopyFromNode)],
            post(filesystem::watch_dir),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/CreateWatcher",
            &[("post", CopyFromNode)],
            post(filesystem::create_watcher),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/GetWatcherEvents",
            &[("post", CopyFromNode)],
            post(filesystem::get_watcher_events),
        ));
        t.push(r(
            "/envd/{node}/filesystem.Filesystem/RemoveWatcher",
            &[("post", CopyFromNode)],
            post(filesystem::remove_watcher),
        ));
    }
    // #15 D end
    t
}

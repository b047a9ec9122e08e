//! A request's audit slot: what the pipeline learns about a request on its way in, for the
//! one line the audit layer (`http/audit_layer.rs`) writes once the answer is known. The
//! layer puts a slot into every request's extensions; authentication names the principal,
//! authorization the action, route and tenant (and whether a 404 hides an object of a tenant
//! the caller has no role in); a handler may name its object or the tenant it picked.
//!
//! Plain data, no HTTP types: `auth/` and `http/` both fill it.

use std::sync::{Arc, Mutex};

/// What is known so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The principal's id and how it authenticated.
    pub principal: Option<(String, &'static str)>,
    /// The action, as `Debug` prints it (`CreateNode`).
    pub action: Option<String>,
    /// The matched route's template and its parameters.
    pub route: Option<(String, Vec<(String, String)>)>,
    /// The tenant (by index in the daemon) of the route's node or host group.
    pub tenant: Option<usize>,
    /// The tenants a route over the daemon showed.
    pub visible: Option<Vec<usize>>,
    /// The object's tenant exists but the caller has no role there: its 404 is a denial.
    pub no_role: bool,
    /// Named by the handler.
    pub object: Option<String>,
    /// Named by the handler: the tenant it acted in (a route over the daemon that picked one).
    pub tenant_name: Option<String>,
}

/// Shared between the request's layers and handler (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Seen>>);

impl AuditSlot {
    fn with(&self, f: impl FnOnce(&mut Seen)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    pub fn principal(&self, id: &str, via: &'static str) {
        self.with(|s| s.principal = Some((id.to_string(), via)));
    }

    pub fn action(&self, action: String) {
        self.with(|s| s.action = Some(action));
    }

    pub fn route(&self, template: &str, params: Vec<(String, String)>) {
        self.with(|s| s.route = Some((template.to_string(), params)));
    }

    pub fn tenant(&self, i: usize) {
        self.with(|s| s.tenant = Some(i));
    }

    pub fn visible(&self, v: &[usize]) {
        self.with(|s| s.visible = Some(v.to_vec()));
    }

    pub fn no_role(&self) {
        self.with(|s| s.no_role = true);
    }

    /// The handler names what it acted on (`node/<name>` of a node it created).
    pub fn object(&self, o: impl Into<String>) {
        let o = o.into();
        self.with(|s| s.object = Some(o));
    }

    /// The handler names the tenant it acted in.
    pub fn tenant_name(&self, t: &str) {
        self.with(|s| s.tenant_name = Some(t.to_string()));
    }

    pub fn seen(&self) -> Seen {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

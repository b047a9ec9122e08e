//! What a request handler reaches: the host's services and the tenant it serves.

use std::sync::Arc;

use crate::services::HostServices;
use crate::tenant::Tenant;

/// What a request handler reaches: the host's services and the tenant it serves. A shared
/// daemon will hold several tenants here and pick one per request from the route.
pub struct App {
    pub host: Arc<HostServices>,
    pub tenant: Arc<Tenant>,
}

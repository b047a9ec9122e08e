//! Namespace sandbox primitives that both drivers use when they clone a confined process (the
//! jail's node init, QEMU for a microVM): who owns the new user namespace, and the per-user
//! kernel limits inside it. Neither driver depends on the other; both depend on this.

mod owner;

pub use owner::{as_owner, restore_in_child, write_user_sysctls, OwnerError};

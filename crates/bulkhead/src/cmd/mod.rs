//! One module per CLI verb; each parses its arguments and hands off to a library crate.

pub mod audit; // the audit trail (#14, A)
pub mod commit; // commit and fork (#13)
pub mod identity;
pub mod image;
pub mod keys; // key rotation (#13)
pub mod new;
pub mod quota; // quotas (#12)
pub mod secret; // secrets (#13)
pub mod shim; // shim install (#16, E)
pub mod token;
pub mod untar;
pub mod up;
pub mod usage; // usage (#14, part E)
pub mod vm;
pub mod volume; // volumes (#13)

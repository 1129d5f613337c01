//! Domain rules of user-service, with no I/O: what a valid account looks like, roles and
//! the scopes they grant, devices, and the login-throttle policy.

pub mod device;
pub mod roles;
pub mod throttle;
pub mod validation;

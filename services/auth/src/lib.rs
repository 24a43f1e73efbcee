//! The login service's building blocks. Today: password hashing (argon2id with OWASP
//! parameters) with an admission bound. The HTTP service, sessions and tokens arrive with the
//! rest of the auth issue.

pub mod password;

pub use password::{PasswordError, Passwords};

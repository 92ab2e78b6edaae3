//! The token-protected local HTTP API over the operations (see the README for the routes).

mod handler;
mod listen;
mod routes;

pub use handler::{AdminApi, ChangeHook, MAX_BODY};
pub use listen::{SOCKET_FILE_NAME, bind_tcp, bind_unix};
pub use routes::{NoRoute, Route, route};

//! The coordinator's admin operations, shared by the CLI and the token-protected local HTTP
//! API: list/delete/expire nodes, list/approve routes, create/list/revoke pre-auth keys. See
//! this crate's README.

mod error;
pub mod http;
pub mod ops;
mod token;
mod views;

pub use error::{AdminError, Result};
pub use http::{AdminApi, ChangeHook, bind_tcp, bind_unix};
pub use token::{TOKEN_FILE_NAME, Token, load_or_create_token};
pub use views::{
    ApproveRoutes, AuthKeyView, CreateAuthKey, CreatedAuthKeyView, NodeView, RoutesView,
};

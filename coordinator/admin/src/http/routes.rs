//! The admin API's routes: method and path to an operation, with no I/O.

use http::Method;
use meshgate_coordinator_store::AuthKeyId;

/// What a request asks for. Node references are kept as text: a numeric id, or a given name
/// or hostname (resolved like the CLI does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    ListNodes,
    GetNode(String),
    DeleteNode(String),
    ExpireNode(String),
    ApproveRoutes(String),
    ListRoutes,
    ListAuthKeys,
    CreateAuthKey,
    RevokeAuthKey(AuthKeyId),
}

impl Route {
    /// Whether the operation changes the store (so the server must be told).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Route::ListNodes | Route::GetNode(_) | Route::ListRoutes | Route::ListAuthKeys
        )
    }
}

/// Why no route matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    /// The path exists; these are its methods (for the `Allow` header).
    MethodNotAllowed(&'static str),
}

/// The route for `method` on `path` (the path without its query).
pub fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let rest = path.strip_prefix("/api/v1/").ok_or(NoRoute::NotFound)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let m = method;
    let allow =
        |allowed: &'static str, ok: Option<Route>| ok.ok_or(NoRoute::MethodNotAllowed(allowed));
    match parts.as_slice() {
        ["nodes"] => allow("GET", (m == Method::GET).then_some(Route::ListNodes)),
        ["nodes", id] if !id.is_empty() => {
            let id = (*id).to_owned();
            match *m {
                Method::GET => Ok(Route::GetNode(id)),
                Method::DELETE => Ok(Route::DeleteNode(id)),
                _ => Err(NoRoute::MethodNotAllowed("GET, DELETE")),
            }
        }
        ["nodes", id, "expire"] if !id.is_empty() => allow(
            "POST",
            (m == Method::POST).then(|| Route::ExpireNode((*id).to_owned())),
        ),
        ["nodes", id, "routes"] if !id.is_empty() => allow(
            "POST",
            (m == Method::POST).then(|| Route::ApproveRoutes((*id).to_owned())),
        ),
        ["routes"] => allow("GET", (m == Method::GET).then_some(Route::ListRoutes)),
        ["authkeys"] => match *m {
            Method::GET => Ok(Route::ListAuthKeys),
            Method::POST => Ok(Route::CreateAuthKey),
            _ => Err(NoRoute::MethodNotAllowed("GET, POST")),
        },
        ["authkeys", id] => {
            let id: AuthKeyId = id.parse().map_err(|_| NoRoute::NotFound)?;
            allow(
                "DELETE",
                (m == Method::DELETE).then_some(Route::RevokeAuthKey(id)),
            )
        }
        _ => Err(NoRoute::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods() {
        assert_eq!(route(&Method::GET, "/api/v1/nodes"), Ok(Route::ListNodes));
        assert_eq!(
            route(&Method::DELETE, "/api/v1/nodes/7"),
            Ok(Route::DeleteNode("7".into()))
        );
        assert_eq!(
            route(&Method::POST, "/api/v1/nodes/router/routes"),
            Ok(Route::ApproveRoutes("router".into()))
        );
        assert_eq!(
            route(&Method::POST, "/api/v1/nodes/3/expire"),
            Ok(Route::ExpireNode("3".into()))
        );
        assert_eq!(route(&Method::GET, "/api/v1/routes"), Ok(Route::ListRoutes));
        assert_eq!(
            route(&Method::POST, "/api/v1/authkeys"),
            Ok(Route::CreateAuthKey)
        );
        assert_eq!(
            route(&Method::DELETE, "/api/v1/authkeys/12"),
            Ok(Route::RevokeAuthKey(12))
        );
        assert_eq!(
            route(&Method::POST, "/api/v1/nodes"),
            Err(NoRoute::MethodNotAllowed("GET"))
        );
        assert_eq!(
            route(&Method::PUT, "/api/v1/authkeys"),
            Err(NoRoute::MethodNotAllowed("GET, POST"))
        );
        for path in [
            "/",
            "/api/v1/",
            "/api/v1/nodes/",
            "/api/v2/nodes",
            "/api/v1/authkeys/x",
            "/api/v1/nodes/1/other",
            "/api/v1/nodes//routes",
        ] {
            assert_eq!(route(&Method::GET, path), Err(NoRoute::NotFound), "{path}");
        }
        assert!(Route::CreateAuthKey.mutates() && !Route::ListRoutes.mutates());
    }
}

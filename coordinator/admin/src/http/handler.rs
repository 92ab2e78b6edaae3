//! One admin API request: token check, route, capped body, the operation on a blocking
//! thread, the change hook, a JSON answer.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use meshgate_coordinator_store::{Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::routes::{NoRoute, Route, route};
use crate::error::AdminError;
use crate::ops;
use crate::token::Token;
use crate::views::{ApproveRoutes, CreateAuthKey};

/// Largest request body accepted (larger: 413).
pub const MAX_BODY: usize = 64 * 1024;

/// Called after every successful change, so the server updates its map streams at once.
pub type ChangeHook = Arc<dyn Fn() + Send + Sync>;

/// The admin API: the store, the token and the change hook. Cheap to clone.
#[derive(Clone)]
pub struct AdminApi {
    store: Arc<dyn Store>,
    token: Token,
    on_change: ChangeHook,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// An answer before it is turned into a response.
struct Answer {
    status: StatusCode,
    body: Option<Vec<u8>>,
    allow: Option<&'static str>,
}

impl Answer {
    fn json(status: StatusCode, value: &impl Serialize) -> Answer {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Answer {
                    status,
                    body: Some(body),
                    allow: None,
                }
            }
            Err(e) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding: {e}")),
        }
    }

    fn error(status: StatusCode, message: &str) -> Answer {
        let mut body = serde_json::json!({ "error": message })
            .to_string()
            .into_bytes();
        body.push(b'\n');
        Answer {
            status,
            body: Some(body),
            allow: None,
        }
    }

    fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            body: None,
            allow: None,
        }
    }
}

/// The HTTP status for an operation's error.
fn status_of(error: &AdminError) -> StatusCode {
    match error {
        AdminError::NoSuchNode(_)
        | AdminError::Store(
            StoreError::NodeNotFound(_)
            | StoreError::AuthKeyNotFound(_)
            | StoreError::UserNotFound(_),
        ) => StatusCode::NOT_FOUND,
        AdminError::AmbiguousNode { .. }
        | AdminError::InvalidPrefix(_)
        | AdminError::ZeroExpiry
        | AdminError::ExpiryTooLong
        | AdminError::Store(
            StoreError::InvalidUserName(_)
            | StoreError::InvalidTag(_)
            | StoreError::InvalidRoute(_)
            | StoreError::RouteNotAdvertised { .. },
        ) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl AdminApi {
    /// `on_change` runs after each request that changed the store (typically
    /// `meshgate_coordinator::Server::notify`).
    pub fn new(store: Arc<dyn Store>, token: Token, on_change: ChangeHook) -> AdminApi {
        AdminApi {
            store,
            token,
            on_change,
        }
    }

    /// Answers one request. Never fails: every problem is an HTTP status with
    /// `{"error": "..."}`.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let answer = self.answer(request).await;
        // Method, path and status only: never headers (the token) or bodies (secrets).
        tracing::debug!(%method, %path, status = answer.status.as_u16(), "admin API");
        let mut response = Response::new(Full::new(Bytes::from(answer.body.unwrap_or_default())));
        let status = answer.status;
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if status != StatusCode::NO_CONTENT {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(allow) = answer.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }

    async fn answer<B>(&self, request: Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let presented = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if !self.token.authorizes(presented) {
            return Answer::error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send `Authorization: Bearer <the admin token file's contents>`",
            );
        }
        let route = match route(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(NoRoute::NotFound) => {
                return Answer::error(StatusCode::NOT_FOUND, "no such API path");
            }
            Err(NoRoute::MethodNotAllowed(allow)) => {
                let mut answer = Answer::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("method not allowed here; allowed: {allow}"),
                );
                answer.allow = Some(allow);
                return answer;
            }
        };
        let body = match read_body(request).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let mutates = route.mutates();
        let store = self.store.clone();
        let outcome =
            tokio::task::spawn_blocking(move || run(&*store, route, &body, SystemTime::now()))
                .await;
        let answer = match outcome {
            Ok(answer) => answer,
            Err(e) => Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the operation failed: {e}"),
            ),
        };
        if mutates && answer.status.is_success() {
            (self.on_change)();
        }
        answer
    }
}

/// The body, at most [`MAX_BODY`] bytes (else 413; a broken body is 400).
async fn read_body<B>(request: Request<B>) -> Result<Bytes, Answer>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {MAX_BODY} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            &format!("reading the request body: {e}"),
        )),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body)
        .map_err(|e| Answer::error(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")))
}

/// Runs the operation (blocking: store calls).
fn run(store: &dyn Store, route: Route, body: &[u8], now: SystemTime) -> Answer {
    let result = match route {
        Route::ListNodes => ops::list_nodes(store, now).map(|v| Answer::json(StatusCode::OK, &v)),
        Route::GetNode(node) => ops::find_node(store, &node)
            .and_then(|id| ops::get_node(store, id, now))
            .map(|v| Answer::json(StatusCode::OK, &v)),
        Route::DeleteNode(node) => ops::find_node(store, &node)
            .and_then(|id| ops::delete_node(store, id))
            .map(|()| Answer::empty(StatusCode::NO_CONTENT)),
        Route::ExpireNode(node) => ops::find_node(store, &node)
            .and_then(|id| ops::expire_node(store, id, now))
            .map(|v| Answer::json(StatusCode::OK, &v)),
        Route::ApproveRoutes(node) => {
            let request: ApproveRoutes = match parse(body) {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            ops::find_node(store, &node)
                .and_then(|id| ops::approve_routes(store, id, &request.approve))
                .map(|v| Answer::json(StatusCode::OK, &v))
        }
        Route::ListRoutes => ops::list_routes(store).map(|v| Answer::json(StatusCode::OK, &v)),
        Route::ListAuthKeys => {
            ops::list_auth_keys(store, now).map(|v| Answer::json(StatusCode::OK, &v))
        }
        Route::CreateAuthKey => {
            let request: CreateAuthKey = match parse(body) {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            ops::create_auth_key(store, &request, now)
                .map(|v| Answer::json(StatusCode::CREATED, &v))
        }
        Route::RevokeAuthKey(id) => {
            ops::revoke_auth_key(store, id, now).map(|v| Answer::json(StatusCode::OK, &v))
        }
    };
    result.unwrap_or_else(|e| {
        let status = status_of(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("admin API: {e}");
        }
        Answer::error(status, &e.to_string())
    })
}

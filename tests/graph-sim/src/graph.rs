//! Microsoft Graph v1.0: the endpoints relay365 calls, with Graph's
//! throttling (429 with `Retry-After`) and error shapes.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::identity::bearer;
use crate::state::{State, Subject};

type Shared = Arc<Mutex<State>>;

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/v1.0/me", get(me))
}

pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let body = serde_json::json!({"error": {"code": code, "message": message, "innerError": {"request-id": id, "date": "2026-11-22T00:00:00"}}});
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("request-id"), id.as_str()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Counts Graph requests and answers 429 while a throttle is set.
pub(crate) async fn count_and_throttle(
    AxState(state): AxState<Shared>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/v1.0/") {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.stats.graph_requests += 1;
        if let Some((left, retry_after)) = st.throttle.take() {
            if left > 1 {
                st.throttle = Some((left - 1, retry_after.clone()));
            }
            st.stats.throttled += 1;
            drop(st);
            let mut resp = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Please retry again later.",
            );
            if let Some(ra) = retry_after
                && let Ok(v) = header::HeaderValue::from_str(&ra)
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    next.run(req).await
}

pub(crate) fn with_middleware(router: Router<Shared>, state: Shared) -> Router<Shared> {
    router.layer(middleware::from_fn_with_state(state, count_and_throttle))
}

async fn me(AxState(state): AxState<Shared>, headers: axum::http::HeaderMap) -> Response {
    let st = state.lock().unwrap_or_else(|p| p.into_inner());
    let access = match bearer(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match access.subject {
        Subject::App(_) => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ),
        Subject::User(upn) => match st.user(&upn) {
            Some(u) => {
                let body = serde_json::json!({"id": u.id, "userPrincipalName": u.upn, "mail": u.upn, "displayName": u.display_name});
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
            None => graph_error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                "The user no longer exists.",
            ),
        },
    }
}

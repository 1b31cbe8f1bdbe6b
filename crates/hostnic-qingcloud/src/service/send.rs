//! The innermost service: one signed attempt over the transport, its answer's
//! `ret_code` turned into a [`CloudError`] when it is not 0.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use hostnic_core::ports::{CloudError, CloudErrorKind};
use serde_json::Value;
use tower::{BoxError, Service};

use super::{ApiRequest, BoxFuture};
use crate::client::SharedSigner;
use crate::errors;
use crate::signer::format_time_stamp;
use crate::transport::{HttpMethod, Transport, WireRequest};

/// Signs (with a fresh time stamp) and sends one attempt.
#[derive(Clone)]
pub(crate) struct SendService {
    pub transport: Arc<dyn Transport>,
    pub signer: SharedSigner,
    pub zone: Arc<str>,
    pub url: Arc<str>,
    pub path: Arc<str>,
    pub method: HttpMethod,
}

impl Service<ApiRequest> for SendService {
    type Response = Value;
    type Error = BoxError;
    type Future = BoxFuture<Result<Value, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ApiRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            request.count_attempt();
            let action = &*request.action;
            let mut params = request.params.clone();
            params.set("action", action);
            if params.get("zone").is_none() {
                params.set("zone", &*this.zone);
            }
            let signer = this
                .signer
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let signed = signer.sign(
                this.method.as_str(),
                &this.path,
                &mut params,
                &format_time_stamp(SystemTime::now()),
            );
            let wire = WireRequest {
                method: this.method,
                url: this.url.to_string(),
                query: signed.to_query(),
                action: action.to_string(),
            };
            let body = this.transport.send(&wire).await.map_err(|e| {
                let kind = if e.retryable {
                    CloudErrorKind::Retryable
                } else {
                    CloudErrorKind::Permanent
                };
                Box::new(CloudError::new(kind, action, e.to_string())) as BoxError
            })?;
            parse_answer(action, &body).map_err(|e| Box::new(e) as BoxError)
        })
    }
}

/// Checks `ret_code` of an answer.
pub(crate) fn parse_answer(action: &str, body: &str) -> Result<Value, CloudError> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        // A proxy's HTML error page or a truncated body: worth another try.
        CloudError::new(
            CloudErrorKind::Retryable,
            action,
            format!("answer is not JSON: {e}"),
        )
    })?;
    let code = value
        .get("ret_code")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            CloudError::new(CloudErrorKind::Retryable, action, "answer has no ret_code")
        })?;
    if code == 0 {
        return Ok(value);
    }
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Err(errors::api_error(action, code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_json_or_ret_code_are_retryable() {
        assert!(parse_answer("X", "<html>").unwrap_err().is_retryable());
        assert!(parse_answer("X", "{}").unwrap_err().is_retryable());
        assert_eq!(
            parse_answer("X", r#"{"ret_code":0,"a":1}"#).unwrap()["a"],
            1
        );
    }
}

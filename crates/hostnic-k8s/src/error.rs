//! The adapter's error type.

/// A failure talking to the Kubernetes API server or reading its configuration.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// No usable client configuration (no in-cluster service account, bad kubeconfig).
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    /// The API server answered with an error or could not be reached.
    #[error("kubernetes API {action}: {source}")]
    Api {
        /// What was being done, e.g. `get node node-1`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("kubernetes API {action}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        action: String,
        /// How long the caller waited.
        after: std::time::Duration,
    },
    /// The API server answered, but with something that cannot be used.
    #[error("kubernetes API {action}: {message}")]
    Invalid {
        /// What was being done.
        action: String,
        /// What was wrong with the answer.
        message: String,
    },
}

impl K8sError {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }

    /// True when trying again later may succeed: the server was unreachable, timed out,
    /// throttled (429) or failed internally (5xx). Configuration errors, 4xx answers
    /// (forbidden, not found) and invalid data are not retryable; a timeout is.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Config(_) | Self::Invalid { .. } => false,
            Self::Api { source, .. } => match source {
                kube::Error::Api(status) => status.code == 429 || status.code >= 500,
                _ => true,
            },
        }
    }

    /// True when the API server said the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { source: kube::Error::Api(s), .. } if s.code == 404)
    }
}

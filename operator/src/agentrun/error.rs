//! The AgentRun controller's error: one variant per failing step, a stable metric label, and
//! which errors only a change of the object can fix (those wait instead of retrying).

use crane_engine::EngineError;

use super::build::BuildError;
use crane_api::ApiError;

/// Everything a reconcile can fail on, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the AgentRun could not be read: {0}")]
    InvalidObject(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("kubernetes API error while {what}: {source}")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("engine error while {what}: {source}")]
    Engine {
        what: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("building status: {0}")]
    Status(#[from] ApiError),
    #[error("setting up the namespace's Redis login: {0}")]
    Tenancy(#[source] crate::tenancy::Error),
    #[error("archiving the run: {0}")]
    Archive(#[from] crate::archive::ArchiveRunError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidObject(_) => "invalid_object",
            Self::Build(_) => "build",
            Self::Kube { .. } => "kube",
            Self::Engine { .. } => "engine",
            Self::Status(_) => "status",
            Self::Tenancy(_) => "tenancy",
            Self::Archive(_) => "archive",
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }

    /// Errors only a change of the object can fix.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidObject(_) | Self::Build(_) | Self::Status(_) => true,
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_permanent(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Adapter for `map_err` that names what was being done.
pub fn kube_err(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

/// Adapter for `map_err` that names what was being done.
pub fn engine_err(what: &'static str) -> impl Fn(EngineError) -> Error {
    move |source| Error::Engine { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_objects_wait_for_a_change_and_transient_errors_do_not() {
        let invalid = Error::InvalidObject("spec.plan: invalid type".into());
        assert!(invalid.is_permanent());
        assert_eq!(invalid.metric_label(), "invalid_object");
        let redis = Error::Engine {
            what: "reading the run report",
            source: EngineError::RunNotFound("x".into()),
        };
        assert!(!redis.is_permanent());
        assert_eq!(redis.metric_label(), "engine");
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            Error::Build(BuildError::MissingMetadata("metadata.uid")),
        )));
        assert!(wrapped.is_permanent());
        assert_eq!(wrapped.metric_label(), "build");
    }
}

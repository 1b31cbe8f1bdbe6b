//! Errors of the datapath and their mapping onto the port's [`HostError`].

use hostnic_core::ports::{HostError, HostErrorKind};

use crate::netns::NetnsError;

/// A failure of the Linux datapath.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// A netlink request failed; `what` says which one.
    #[error("netlink {what}: {source}")]
    Netlink {
        /// The operation, e.g. `add veth nic0123 (peer eth0)`.
        what: String,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A link that must exist is absent (the NIC has not appeared yet).
    #[error("no link {0}")]
    LinkNotFound(String),
    /// A sysctl could not be written.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The sysctl path under `/proc/sys`.
        key: String,
        /// The write error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` rejected the ruleset or could not run.
    #[error("nftables: {0}")]
    Nftables(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl LinuxError {
    /// Wraps a netlink error with what was being done.
    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |source| LinuxError::Netlink { what, source }
    }

    /// The negated errno of a netlink error answer, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinuxError::Netlink { source, .. } => errno_of(source),
            _ => None,
        }
    }

    /// How the core should treat this failure.
    pub fn kind(&self) -> HostErrorKind {
        match self {
            LinuxError::LinkNotFound(_) => HostErrorKind::Retryable,
            LinuxError::Netns(e) if e.is_not_found() => HostErrorKind::NotFound,
            LinuxError::Netns(_) | LinuxError::Config(_) => HostErrorKind::Permanent,
            LinuxError::Sysctl { .. } | LinuxError::Nftables(_) => HostErrorKind::Permanent,
            LinuxError::Netlink { source, .. } => match errno_of(source) {
                Some(libc_errno::ENODEV) | Some(libc_errno::ENOENT) | Some(libc_errno::ESRCH) => {
                    HostErrorKind::NotFound
                }
                Some(libc_errno::EBUSY)
                | Some(libc_errno::EAGAIN)
                | Some(libc_errno::ENOBUFS)
                | Some(libc_errno::EINTR)
                | None => HostErrorKind::Retryable,
                Some(_) => HostErrorKind::Permanent,
            },
        }
    }
}

impl From<LinuxError> for HostError {
    fn from(e: LinuxError) -> Self {
        HostError::new(e.kind(), e.to_string())
    }
}

/// The positive errno of a netlink error answer.
pub(crate) fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The errno values this crate reacts to (from `nix`, so they match the platform).
pub(crate) mod libc_errno {
    /// No such device.
    pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
    /// No such file or directory (no such route/rule/address).
    pub const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    /// No such process (no such route on delete).
    pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
    /// Already exists.
    pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
    /// Busy.
    pub const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
    /// Try again.
    pub const EAGAIN: i32 = nix::errno::Errno::EAGAIN as i32;
    /// Out of socket buffer.
    pub const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;
    /// Interrupted.
    pub const EINTR: i32 = nix::errno::Errno::EINTR as i32;
    /// Cannot assign requested address (address already gone on delete).
    pub const EADDRNOTAVAIL: i32 = nix::errno::Errno::EADDRNOTAVAIL as i32;
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn netlink(errno: nix::errno::Errno) -> LinuxError {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-(errno as i32));
        LinuxError::Netlink {
            what: "test".into(),
            source: rtnetlink::Error::NetlinkError(msg),
        }
    }

    #[test]
    fn errno_decides_whether_retrying_helps() {
        use nix::errno::Errno;
        assert_eq!(netlink(Errno::ENODEV).kind(), HostErrorKind::NotFound);
        assert_eq!(netlink(Errno::EBUSY).kind(), HostErrorKind::Retryable);
        assert_eq!(netlink(Errno::EPERM).kind(), HostErrorKind::Permanent);
        assert_eq!(netlink(Errno::EINVAL).errno(), Some(Errno::EINVAL as i32));
    }

    #[test]
    fn a_missing_nic_link_is_retryable_and_a_bad_config_is_not() {
        assert_eq!(
            LinuxError::LinkNotFound("x".into()).kind(),
            HostErrorKind::Retryable
        );
        let e: HostError = LinuxError::Config("x".into()).into();
        assert_eq!(e.kind, HostErrorKind::Permanent);
    }
}

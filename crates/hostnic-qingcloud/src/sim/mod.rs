//! The QingCloud API simulator (work in progress).

//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! Pure helpers: the caller reads [`HEADER_LEN`] bytes, asks [`frame_len`] how
//! long the body is (rejecting absurd lengths before allocating), reads the
//! body and decodes it with [`decode_frame`], or hands a whole buffer to
//! [`decode_frame`] directly.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// The largest body a frame may carry (1 MiB). Requests and answers are a few
/// hundred bytes; the limit keeps a confused peer from making the other side
/// allocate gigabytes.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The buffer ends before the header or the body does.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// How many more bytes must be read.
        needed: usize,
    },
    /// The header announces a body longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge {
        /// The announced or encoded length.
        len: usize,
    },
    /// The header announces an empty body.
    #[error("empty frame")]
    Empty,
    /// The body is not the expected JSON message.
    #[error("undecodable frame body: {0}")]
    Json(#[source] serde_json::Error),
}

/// Encodes `message` as one frame: header followed by its JSON.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut buf, message).map_err(FrameError::Json)?;
    let len = buf.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    // `len` fits in u32 because MAX_FRAME_LEN does.
    buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// The body length a header announces, validated against [`MAX_FRAME_LEN`].
pub fn frame_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        Err(FrameError::Empty)
    } else if len > MAX_FRAME_LEN {
        Err(FrameError::TooLarge { len })
    } else {
        Ok(len)
    }
}

/// Decodes the frame at the start of `buf`, returning the message and how many
/// bytes it occupied (header included). Bytes after the frame are left alone.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let len = frame_len(*header)?;
    let body = &buf[HEADER_LEN..];
    if body.len() < len {
        return Err(FrameError::Incomplete {
            needed: len - body.len(),
        });
    }
    let message = serde_json::from_slice(&body[..len]).map_err(FrameError::Json)?;
    Ok((message, HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::messages::{Request, RequestBody, Response, StatusRequest};
    use proptest::prelude::*;

    fn status() -> Request {
        Request::new(RequestBody::Status(StatusRequest {
            network: "n".into(),
            cni_version: "1.1.0".into(),
            timeout_ms: 1,
        }))
    }

    #[test]
    fn frame_round_trips_and_reports_its_length() {
        let mut buf = encode_frame(&status()).unwrap();
        let body_len = buf.len() - HEADER_LEN;
        assert_eq!(frame_len(buf[..4].try_into().unwrap()).unwrap(), body_len);
        buf.extend_from_slice(b"trailing");
        let (back, used): (Request, usize) = decode_frame(&buf).unwrap();
        assert_eq!(back, status());
        assert_eq!(used, HEADER_LEN + body_len);
    }

    #[test]
    fn short_buffers_say_how_much_is_missing() {
        let buf = encode_frame(&status()).unwrap();
        let err = decode_frame::<Request>(&buf[..2]).unwrap_err();
        assert!(matches!(err, FrameError::Incomplete { needed: 2 }));
        let err = decode_frame::<Request>(&buf[..buf.len() - 3]).unwrap_err();
        assert!(matches!(err, FrameError::Incomplete { needed: 3 }));
    }

    #[test]
    fn oversized_and_empty_headers_are_rejected_before_reading_the_body() {
        let too_big = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            frame_len(too_big),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(frame_len([0; 4]), Err(FrameError::Empty)));
    }

    #[test]
    fn a_request_is_not_a_response() {
        let buf = encode_frame(&status()).unwrap();
        assert!(matches!(
            decode_frame::<Response>(&buf),
            Err(FrameError::Json(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Invariant: decoding arbitrary bytes never panics, and whatever it
        /// accepts lies within the buffer.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok((_, used)) = decode_frame::<Request>(&bytes) {
                prop_assert!(used <= bytes.len());
            }
            let _ = decode_frame::<Response>(&bytes);
        }

        /// Invariant: a valid header followed by arbitrary JSON-ish text never panics.
        #[test]
        fn decoding_framed_garbage_never_panics(body in "\\PC{1,300}") {
            let mut buf = (body.len() as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(body.as_bytes());
            let _ = decode_frame::<Request>(&buf);
            let _ = decode_frame::<Response>(&buf);
        }
    }
}

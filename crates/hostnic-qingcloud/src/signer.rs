//! Signature version 1 (HmacSHA256), exactly as the official SDKs compute it.
//!
//! Parameters are sorted by key (byte order), keys and values RFC 3986
//! percent-encoded (`%20` for space), joined with `&` into the canonical query;
//! the string to sign is `METHOD\nPATH\nCANONICAL_QUERY`; the signature is the
//! standard base64 of the HMAC-SHA256 over it, sent percent-encoded.

use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

use crate::config::Secret;

/// The only signature method hostnic uses.
pub const SIGNATURE_METHOD: &str = "HmacSHA256";
/// The signature version.
pub const SIGNATURE_VERSION: &str = "1";

/// Everything but RFC 3986 unreserved characters is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Request parameters in insertion order; lists are flattened 1-based.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value`.
    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Self {
        let key = key.into();
        let value = value.to_string();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
        self
    }

    /// Adds `key=value` when `value` is `Some`.
    pub fn set_opt(&mut self, key: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }

    /// Adds `key.1=a&key.2=b…`.
    pub fn list<I, T>(&mut self, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = T>,
        T: ToString,
    {
        for (i, v) in values.into_iter().enumerate() {
            self.set(format!("{key}.{}", i + 1), v);
        }
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs in insertion order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// RFC 3986 percent-encoding: only `A-Z a-z 0-9 - _ . ~` stay as they are.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The canonical query: every pair except `signature`, sorted by key, encoded, joined by `&`.
pub fn canonical_query<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut pairs: Vec<(&str, &str)> = pairs
        .into_iter()
        .filter(|(k, _)| *k != "signature")
        .collect();
    // Stable: equal keys (which a client never sends) keep their order.
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD\nPATH\nCANONICAL_QUERY`.
pub fn string_to_sign(method: &str, path: &str, canonical_query: &str) -> String {
    format!("{method}\n{path}\n{canonical_query}")
}

/// base64(HMAC-SHA256(secret, string_to_sign)), standard alphabet with padding.
pub fn signature(secret: &Secret, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The `time_stamp` format: UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time_stamp(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses a `time_stamp` (also accepting fractional seconds, as the API does).
pub fn parse_time_stamp(s: &str) -> Option<SystemTime> {
    let whole = s.strip_suffix('Z')?;
    let whole = whole.split('.').next()?;
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let dt = time::PrimitiveDateTime::parse(whole, &format).ok()?;
    Some(dt.assume_utc().into())
}

/// A request signed and ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    /// The canonical query (what was signed).
    pub canonical: String,
    /// The base64 signature (not yet percent-encoded).
    pub signature: String,
}

impl SignedQuery {
    /// The full query string to send: canonical query + `&signature=<encoded>`.
    pub fn to_query(&self) -> String {
        format!(
            "{}&signature={}",
            self.canonical,
            percent_encode(&self.signature)
        )
    }
}

/// Signs requests with one access key.
#[derive(Debug, Clone)]
pub struct Signer {
    access_key_id: String,
    secret: Secret,
}

impl Signer {
    /// A signer for the key pair.
    pub fn new(access_key_id: impl Into<String>, secret: Secret) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret,
        }
    }

    /// The access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Adds the common auth parameters (`access_key_id`, `signature_method`,
    /// `signature_version`, `version`, `time_stamp`) to `params` and signs them.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        params: &mut Params,
        time_stamp: &str,
    ) -> SignedQuery {
        params
            .set("access_key_id", &self.access_key_id)
            .set("signature_method", SIGNATURE_METHOD)
            .set("signature_version", SIGNATURE_VERSION)
            .set("version", "1")
            .set("time_stamp", time_stamp);
        self.sign_exact(method, path, params)
    }

    /// Signs exactly the given parameters (no parameter added).
    pub fn sign_exact(&self, method: &str, path: &str, params: &Params) -> SignedQuery {
        let canonical =
            canonical_query(params.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let signature = signature(&self.secret, &string_to_sign(method, path, &canonical));
        SignedQuery {
            canonical,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_a_params() -> Params {
        // Deliberately unsorted, as a caller would build them.
        [
            ("action", "RunInstances"),
            ("zone", "pek1"),
            ("image_id", "centos64x86a"),
            ("instance_type", "small_b"),
            ("vxnets.1", "vxnet-0"),
            ("instance_name", "demo"),
            ("login_mode", "passwd"),
            ("login_passwd", "QingCloud20130712"),
            ("count", "1"),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn reference_vector_a_byte_for_byte() {
        let signer = Signer::new("QYACCESSKEYIDEXAMPLE", Secret::new("SECRETACCESSKEY"));
        let mut params = vector_a_params();
        let signed = signer.sign("GET", "/iaas/", &mut params, "2013-08-27T14:30:10Z");
        assert_eq!(
            signed.canonical,
            "access_key_id=QYACCESSKEYIDEXAMPLE&action=RunInstances&count=1&image_id=centos64x86a&instance_name=demo&instance_type=small_b&login_mode=passwd&login_passwd=QingCloud20130712&signature_method=HmacSHA256&signature_version=1&time_stamp=2013-08-27T14%3A30%3A10Z&version=1&vxnets.1=vxnet-0&zone=pek1"
        );
        assert_eq!(
            signed.signature,
            "32bseYy39DOlatuewpeuW5vpmW51sD1A/JdGynqSpP8="
        );
        assert!(
            signed
                .to_query()
                .ends_with("&signature=32bseYy39DOlatuewpeuW5vpmW51sD1A%2FJdGynqSpP8%3D")
        );
    }

    #[test]
    fn reference_vector_b_byte_for_byte() {
        let signer = Signer::new("ACCESSKEYID", Secret::new("SECRETKEY"));
        let mut params: Params = [
            ("action", "DescribeNics"),
            ("zone", "pek3b"),
            ("status", "available"),
            ("vxnets.1", "vxnet-abc"),
            ("limit", "100"),
            ("req_id", "af0961b2046e4bd79dbafd014f8bd811"),
        ]
        .into_iter()
        .collect();
        let signed = signer.sign("GET", "/iaas/", &mut params, "2026-11-27T17:26:58Z");
        assert_eq!(
            signed.canonical,
            "access_key_id=ACCESSKEYID&action=DescribeNics&limit=100&req_id=af0961b2046e4bd79dbafd014f8bd811&signature_method=HmacSHA256&signature_version=1&status=available&time_stamp=2026-11-27T17%3A26%3A58Z&version=1&vxnets.1=vxnet-abc&zone=pek3b"
        );
        assert_eq!(
            signed.signature,
            "3CbA/yw2aqFv4nbWBQGCxLONGRBcKY2iy7b/BEWt5DY="
        );
    }

    #[test]
    fn encoding_follows_rfc3986() {
        assert_eq!(
            percent_encode("a b+c/d:e~f_g.h-i"),
            "a%20b%2Bc%2Fd%3Ae~f_g.h-i"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
        // Empty values are kept.
        assert_eq!(
            canonical_query([("nic_name", ""), ("a", "1")]),
            "a=1&nic_name="
        );
    }

    #[test]
    fn signature_parameter_is_never_signed() {
        let q = canonical_query([("b", "2"), ("signature", "x"), ("a", "1")]);
        assert_eq!(q, "a=1&b=2");
    }

    #[test]
    fn time_stamps_round_trip() {
        let t = parse_time_stamp("2013-08-27T14:30:10Z").unwrap();
        assert_eq!(format_time_stamp(t), "2013-08-27T14:30:10Z");
        assert_eq!(parse_time_stamp("2013-08-27T14:30:10.123Z").unwrap(), t);
        assert!(parse_time_stamp("2013-08-27 14:30:10").is_none());
    }
}

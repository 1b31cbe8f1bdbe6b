//! Reading request parameters as the API does, and answering lists a page at a time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::state::ApiError;

/// Request parameters, decoded.
pub type Params = BTreeMap<String, String>;

/// The API answers at most this many items per list call, whatever `limit` says.
pub const MAX_PAGE: usize = 100;
/// The page size when `limit` is absent.
pub const DEFAULT_PAGE: usize = 20;

/// `key.1`, `key.2`, … in index order, empty values skipped.
pub fn list(params: &Params, key: &str) -> Vec<String> {
    let prefix = format!("{key}.");
    let mut items: Vec<(u32, String)> = params
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter_map(|(k, v)| {
            let n = k.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((n, v.clone()))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    items.sort();
    items.into_iter().map(|(_, v)| v).collect()
}

/// A non-empty parameter.
pub fn opt<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// A parameter that must be there (1100 otherwise).
pub fn required<'a>(params: &'a Params, key: &str) -> Result<&'a str, ApiError> {
    opt(params, key).ok_or_else(|| ApiError::missing(key))
}

/// An integer parameter within `min..=max` (1100 otherwise).
pub fn int_in(
    params: &Params,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let n = match opt(params, key) {
        None => return Ok(default),
        Some(s) => s.trim().parse::<i64>().map_err(|_| {
            ApiError::invalid(
                key,
                &format!("should be an integer between {min} and {max}"),
            )
        })?,
    };
    if n < min as i64 || n > max as i64 {
        return Err(ApiError::invalid(
            key,
            &format!("should be an integer between {min} and {max}, got [{n}]"),
        ));
    }
    Ok(n as u64)
}

/// A `0`/`1` flag.
pub fn flag(params: &Params, key: &str) -> Result<bool, ApiError> {
    match opt(params, key) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(ApiError::invalid(key, "should be 0 or 1")),
    }
}

/// An IPv4 address parameter.
pub fn addr(key: &str, value: &str) -> Result<Ipv4Addr, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid(key, &format!("[{value}] is not an IPv4 address")))
}

/// `offset` and `limit` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Items skipped.
    pub offset: usize,
    /// Items answered at most (1 to 100).
    pub limit: usize,
}

impl Paging {
    /// Reads `offset` (≥ 0) and `limit` (≥ 1; more than 100 is answered as 100).
    pub fn of(params: &Params) -> Result<Self, ApiError> {
        let offset = match opt(params, "offset") {
            None => 0,
            Some(s) => s
                .trim()
                .parse::<usize>()
                .map_err(|_| ApiError::invalid("offset", "should be a non-negative integer"))?,
        };
        let limit = match opt(params, "limit") {
            None => DEFAULT_PAGE,
            Some(s) => match s.trim().parse::<i64>() {
                Ok(n) if n >= 1 => (n as u64).min(MAX_PAGE as u64) as usize,
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        "should be a positive integer (at most 100 items are answered)",
                    ));
                }
            },
        };
        Ok(Self { offset, limit })
    }

    /// The answer for `items` (all matches, in order): the page under `set_key`,
    /// `total_count`, `offset` and `limit`. Only the page's items are rendered.
    pub fn answer<T>(self, set_key: &str, items: &[T], render: impl Fn(&T) -> Value) -> Value {
        let set: Vec<Value> = items
            .iter()
            .skip(self.offset)
            .take(self.limit)
            .map(render)
            .collect();
        json!({ set_key: set, "total_count": items.len(), "offset": self.offset, "limit": self.limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lists_are_read_in_index_order_not_key_order() {
        let p = params(&[
            ("nics.10", "j"),
            ("nics.2", "b"),
            ("nics.1", "a"),
            ("nicsx.1", "no"),
            ("nics.3", ""),
        ]);
        assert_eq!(list(&p, "nics"), ["a", "b", "j"]);
    }

    #[test]
    fn paging_caps_at_100_and_refuses_what_the_api_refuses() {
        assert_eq!(
            Paging::of(&params(&[])).unwrap(),
            Paging {
                offset: 0,
                limit: 20
            }
        );
        assert_eq!(
            Paging::of(&params(&[("limit", "1000"), ("offset", "5")])).unwrap(),
            Paging {
                offset: 5,
                limit: 100
            }
        );
        for bad in [
            ("limit", "0"),
            ("limit", "-3"),
            ("limit", "x"),
            ("offset", "-1"),
            ("offset", "1.5"),
        ] {
            let err = Paging::of(&params(&[bad])).unwrap_err();
            assert_eq!(err.code, 1100, "{bad:?}");
            assert!(err.message.contains(bad.0), "{}", err.message);
        }
    }

    #[test]
    fn only_the_page_is_rendered() {
        let items: Vec<u32> = (0..250).collect();
        let page = Paging {
            offset: 200,
            limit: 100,
        }
        .answer("set", &items, |i| json!(i));
        assert_eq!(page["total_count"], 250);
        assert_eq!(page["set"].as_array().unwrap().len(), 50);
        assert_eq!(page["set"][0], 200);
    }

    #[test]
    fn bounded_integers_answer_1100_outside_their_range() {
        assert_eq!(int_in(&params(&[]), "count", 1, 1, 252).unwrap(), 1);
        assert_eq!(
            int_in(&params(&[("count", "252")]), "count", 1, 1, 252).unwrap(),
            252
        );
        for bad in ["0", "253", "-1", "x"] {
            assert_eq!(
                int_in(&params(&[("count", bad)]), "count", 1, 1, 252)
                    .unwrap_err()
                    .code,
                1100
            );
        }
    }
}
